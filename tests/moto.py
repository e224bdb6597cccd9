"""A real ``moto_server`` (a local S3) for the tests and the benchmark: bound to
127.0.0.1 on a port the OS picks, with one bucket."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

MOTO = Path(sys.executable).with_name("moto_server")
BUCKET = "codeindex-test"
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


class MotoServer:
    """``moto_server`` bound to 127.0.0.1 on a port the OS picks (``-p 0``; the
    port is read from its startup line), with one bucket."""

    def __init__(self, log: Path, env: dict[str, str] | None = None):
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", "0"], stdout=out,
                                         stderr=subprocess.STDOUT, env={**os.environ, **CREDENTIALS, **(env or {})})
        try:
            self.endpoint = self._wait_until_it_answers(time.monotonic() + 30)
            self.client("s3").create_bucket(Bucket=BUCKET)
        except BaseException:
            self.stop()
            raise

    def _wait_until_it_answers(self, deadline: float) -> str:
        endpoint = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if not endpoint:
                m = re.search(r"Running on (http://127\.0\.0\.1:\d+)", self.log.read_text(errors="replace"))
                endpoint = m.group(1) if m else ""
            if endpoint:
                try:
                    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2) as resp:
                        if resp.status == 200:
                            return endpoint
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"moto_server did not answer: {self.log.read_text()[-2000:]}")

    def client(self, service: str, **credentials: str):
        import boto3

        credentials = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, **credentials)

    def storage_options(self) -> dict[str, str]:
        return {"endpoint": self.endpoint, "allow_http": "true", "region": REGION}

    def flag(self) -> str:
        """The same options as --storage-options (no secrets in it)."""
        return ",".join(f"{k}={v}" for k, v in self.storage_options().items())

    def keys(self, prefix: str, **credentials: str) -> list[str]:
        pages = self.client("s3", **credentials).get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def enable_auth(self) -> None:
        """From now on every request must be signed with a known IAM access key."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
