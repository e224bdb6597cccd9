"""Start codeindex services as child processes and wait until they serve:
the one launcher behind the embedded default (:class:`LocalServices`), the
tests' services and the benchmarks'.

A service is started with ``--listen`` (an address, port 0 or a unix
socket), ``--metrics-port 0`` and ``--ready-file``; once the ready file
appears (written by :func:`codeindex_common.server.main` when it serves) the
address it names is asked for SERVING over grpc.health.v1. Settings go in as
extra arguments or as an environment overlay, never by patching this
process's environment."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence

from .channels import wait_for_serving
from .errors import Unavailable
from .server import PARENT_PID_ENV
from .tls import ClientTLS

log = logging.getLogger("codeindex")

STAGES = ("parser", "embed", "store")


def stage_command(stage: str) -> list[str]:
    """``python -m <stage>_svc``."""
    return [sys.executable, "-m", f"{stage}_svc"]


def orchestrator_command(*args: str) -> list[str]:
    """``python -m orchestrator ARGS`` (``serve``, say)."""
    return [sys.executable, "-m", "orchestrator", *args]


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:]).strip()
    except OSError:
        return ""


class ServiceProcess:
    """One service started as a child process (``command`` with ``--listen``, ``--metrics-port 0``,
    ``--ready-file`` and then ``args``, which may override them); ``wait`` until it serves, ``stop`` it.
    Its output goes to ``log_path``; ``address`` and ``metrics_port`` come from its ready file.
    ``child``: it stops when this process is gone."""

    def __init__(self, name: str, command: Sequence[str], args: Sequence[str] = (), *, listen: str,
                 ready_file: str, log_path: str, env: Mapping[str, str] | None = None, cwd: str | None = None,
                 child: bool = False):
        self.name, self.ready_file, self.log_path = name, ready_file, log_path
        self.address, self.metrics_port = "", 0
        args = [*command, "--listen", listen, "--metrics-port", "0", "--ready-file", ready_file, *args]
        environ = {**os.environ, **(env or {})}
        if child:  # even after a SIGKILL of this one
            environ[PARENT_PID_ENV] = str(os.getpid())
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=environ, cwd=cwd)

    def wait(self, timeout: float, tls: ClientTLS | None = None, serving: bool = True) -> ServiceProcess:
        """Until the ready file is written and (``serving``) the server answers SERVING; Unavailable, with the
        tail of its log, if it exits or takes longer than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.ready_file):
            if self.proc.poll() is not None:
                raise Unavailable(f"the {self.name} service exited with code {self.proc.returncode}: "
                                  f"{tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise Unavailable(f"the {self.name} service did not start in {timeout:.0f}s: {tail(self.log_path)}")
            time.sleep(0.05)
        with open(self.ready_file) as fh:
            info = json.load(fh)
        self.address, self.metrics_port = info["address"], info["metrics_port"]
        if serving:
            wait_for_serving(self.address, max(1.0, deadline - time.monotonic()), tls=tls)
        return self

    def stop(self, grace: float = 30.0) -> int:
        """SIGTERM (a graceful shutdown), SIGKILL after ``grace`` seconds; the exit code."""
        return stop_process(self.proc, grace)


def stop_process(proc: subprocess.Popen, grace: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class LocalServices:
    """The embedded default: the given stages as child processes on unix sockets in a temporary directory,
    the store over ``index_dir/lancedb``, logs in ``index_dir/logs`` (or ``log_dir``). A context manager:
    ``with LocalServices(["parser", "embed", "store"], index_dir) as svc: svc.address("parser")``.
    ``env``: variables for the children (their settings, say), over this process's environment.

    ``start(wait=False)`` only spawns them, and :meth:`ready` waits for one when it is first needed, so that
    the caller's own work overlaps their start. A stage in ``lazy`` is not spawned until :meth:`ready` asks
    for it; :meth:`release` stops one that is no longer needed. :meth:`address` is known before a stage
    serves (its socket's path).

    The services are supervised: one that dies (a crash, ``kill -9``) is started again at the same address
    (``restarts`` counts them), and the clients' retries carry the run on through the gap; one that exited 0
    (a signal asked it to stop, most often one sent to the whole process group) only after
    ``CLEAN_EXIT_WAIT_S``, so that this process, stopping too, does not start it again meanwhile."""

    POLL_SECONDS = 0.5
    CLEAN_EXIT_WAIT_S = 5.0  # a service that exited 0 is started again only after this

    def __init__(self, stages: Sequence[str], index_dir: str, timeout: float = 120.0, log_dir: str = "",
                 env: Mapping[str, str] | None = None, supervise: bool = True, lazy: Sequence[str] = ()):
        self.stages = list(stages)
        self.lazy = [s for s in lazy if s in self.stages]
        self.index_dir = index_dir
        self.timeout = timeout
        self.log_dir = log_dir or os.path.join(index_dir, "logs")
        self.env = dict(env or {})
        self.children: dict[str, ServiceProcess] = {}
        self.serving: set[str] = set()  # stages waited for (answering SERVING once)
        self.tmp = ""
        self.supervise = supervise
        self.restarts: dict[str, int] = {}
        self._lock = threading.RLock()  # children and serving: the caller's threads and the supervisor
        self._deadline = 0.0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

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
        """Where ``stage`` listens (also before it was spawned, for a lazy one)."""
        if stage not in self.stages:
            raise KeyError(stage)
        return f"unix:{self.tmp}/{stage}.sock"

    def _spawn(self, stage: str) -> ServiceProcess:
        extra = ["--uri", os.path.join(self.index_dir, "lancedb")] if stage == "store" else []
        ready = f"{self.tmp}/{stage}.ready.json"
        if os.path.exists(ready):
            os.unlink(ready)
        return ServiceProcess(f"local {stage}", stage_command(stage), extra, listen=self.address(stage),
                              ready_file=ready, log_path=os.path.join(self.log_dir, f"{stage}.log"), env=self.env,
                              child=True)

    def start(self, wait: bool = True) -> None:
        """Spawn every stage but the lazy ones at once (they load in parallel); ``wait``: until each serves."""
        self.tmp = tempfile.mkdtemp(prefix="codeindex-")
        os.makedirs(self.log_dir, exist_ok=True)
        self._deadline = time.monotonic() + self.timeout
        with self._lock:
            for stage in self.stages:
                if stage not in self.lazy:
                    self.children[stage] = self._spawn(stage)
        if wait:
            for stage in self.stages:
                if stage not in self.lazy:
                    self.ready(stage)

    def ready(self, stage: str) -> None:
        """Return once ``stage`` serves: spawned now if it is lazy and not yet running (or was released),
        waited for if it was spawned and has not answered yet. Unavailable if it does not start."""
        with self._lock:
            if stage in self.serving and stage in self.children:
                return
            self.spawn(stage)
            if stage not in self.children:
                raise Unavailable(f"the local {stage} service was not started: the services are stopping")
            child = self.children[stage]
            child.wait(max(1.0, self._deadline - time.monotonic()))
            self.serving.add(stage)
            if self.supervise and self._supervisor is None:
                self._supervisor = threading.Thread(target=self._watch, name="codeindex-supervisor", daemon=True)
                self._supervisor.start()

    def spawn(self, stage: str) -> None:
        """Start ``stage`` now unless it runs, without waiting for it (:meth:`ready` does); from any thread."""
        with self._lock:
            if stage not in self.children and not self._stopping.is_set():
                self.children[stage] = self._spawn(stage)
                self._deadline = max(self._deadline, time.monotonic() + self.timeout)

    def release(self, stage: str, grace: float = 15.0) -> None:
        """Stop ``stage`` now (gracefully): the caller needs it no more; :meth:`ready` would start it again."""
        with self._lock:
            child = self.children.pop(stage, None)
            self.serving.discard(stage)
        if child is not None:
            stop_process(child.proc, grace)

    def _watch(self) -> None:
        """Start again, at the same address, any service that died while it should be running."""
        clean_exit: dict[tuple[str, int], float] = {}  # (stage, pid) -> when first seen to have exited with 0
        while not self._stopping.wait(self.POLL_SECONDS):
            with self._lock:
                for stage, child in list(self.children.items()):
                    if child.proc.poll() is None or self._stopping.is_set() or stage not in self.serving:
                        continue
                    # a service exits 0 only when a signal asked it to stop: most often the whole process group
                    # got it (Ctrl-C, an agent's client ending the server), and this process is stopping too.
                    # Give that stop time to begin rather than start the service again meanwhile.
                    if child.proc.returncode == 0:
                        first = clean_exit.setdefault((stage, child.proc.pid), time.monotonic())
                        if time.monotonic() - first < self.CLEAN_EXIT_WAIT_S:
                            continue
                    clean_exit.pop((stage, child.proc.pid), None)
                    log.warning("the local %s service exited with code %s; starting it again", stage,
                                child.proc.returncode)
                    self.restarts[stage] = self.restarts.get(stage, 0) + 1
                    try:
                        self.children[stage] = self._spawn(stage).wait(self.timeout)
                    except Unavailable as exc:
                        log.error("the local %s service did not start again: %s", stage, exc)

    def stop(self, grace: float = 15.0) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(self.timeout + 5)
            self._supervisor = None
        with self._lock:
            children = list(self.children.values())
            self.children.clear()
            self.serving.clear()
        for child in children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in children:
            stop_process(child.proc, grace)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = ""
