"""The embedded default: start the stage services as local child processes
on unix sockets, wait until they are SERVING, stop them at the end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from codeindex_common.errors import Unavailable
from codeindex_common.server import PARENT_PID_ENV, wait_for_serving


@dataclass
class Child:
    stage: str
    proc: subprocess.Popen
    ready_file: str
    log_path: str
    address: str = ""
    metrics_port: int = 0


class LocalServices:
    """Context manager: ``with LocalServices(...) as svc: svc.address("parser")``."""

    def __init__(self, stages: list[str], index_dir: str, timeout: float = 120.0, log_dir: str = ""):
        self.stages = stages
        self.index_dir = index_dir
        self.timeout = timeout
        self.log_dir = log_dir or os.path.join(index_dir, "logs")
        self.children: dict[str, Child] = {}
        self.tmp = ""

    def __enter__(self) -> LocalServices:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def address(self, stage: str) -> str:
        return self.children[stage].address

    def start(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="codeindex-")
        os.makedirs(self.log_dir, exist_ok=True)
        for stage in self.stages:
            sock = os.path.join(self.tmp, f"{stage}.sock")
            ready = os.path.join(self.tmp, f"{stage}.ready.json")
            args = [sys.executable, "-m", f"{stage}_svc", "--listen", f"unix:{sock}", "--metrics-port", "0",
                    "--ready-file", ready]
            if stage == "store":
                args += ["--uri", os.path.join(self.index_dir, "lancedb")]
            log_path = os.path.join(self.log_dir, f"{stage}.log")
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env={**os.environ, PARENT_PID_ENV: str(os.getpid())})
            self.children[stage] = Child(stage, proc, ready, log_path)
        deadline = time.monotonic() + self.timeout
        for child in self.children.values():
            while not os.path.exists(child.ready_file):
                if child.proc.poll() is not None:
                    raise Unavailable(f"the local {child.stage} service exited with code {child.proc.returncode}: "
                                      f"{_tail(child.log_path)}")
                if time.monotonic() > deadline:
                    raise Unavailable(f"the local {child.stage} service did not start in {self.timeout:.0f}s: "
                                      f"{_tail(child.log_path)}")
                time.sleep(0.05)
            with open(child.ready_file) as fh:
                info = json.load(fh)
            child.address, child.metrics_port = info["address"], info["metrics_port"]
            wait_for_serving(child.address, max(1.0, deadline - time.monotonic()))

    def stop(self, grace: float = 15.0) -> None:
        for child in self.children.values():
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in self.children.values():
            try:
                child.proc.wait(grace)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        self.children.clear()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = ""


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:]).strip()
    except OSError:
        return ""
