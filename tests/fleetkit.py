"""Fleet tests: a standalone Data Services and headless consoles as real processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLEET = ROOT / "tests" / "helpers" / "fleet"
TEMPLATES = FLEET / "templates"



async def until(check, timeout: float, what: str, *, every: float = 0.05):  # noqa: ANN001, ANN201
    """Await ``check()`` every ``every`` seconds until it gives something true (returned), or
    fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("LABCONSOLE_DATA_SERVICES_URL", None)
    return env


def _wait_line(proc: subprocess.Popen[str], marker: str, timeout: float, log: Path, seen: int = 0) -> None:
    """Until ``log`` holds ``marker`` more than ``seen`` times (a restart appends to the same log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode} before {marker!r}: "
                                 f"{log.read_text(errors='replace')[-3000:]}")
        if log.read_text(errors="replace").count(marker) > seen:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {marker!r} within {timeout} s: {log.read_text(errors='replace')[-3000:]}")


class Proc:
    """A labconsole process; its output goes to ``log``."""

    def __init__(self, args: list[str], log: Path, marker: str, timeout: float = 60.0) -> None:
        self.log = log
        seen = log.read_text(errors="replace").count(marker) if log.exists() else 0
        self.handle = log.open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "console", *args], cwd=log.parent,
                                     stdout=self.handle, stderr=subprocess.STDOUT, text=True, env=_env())
        _wait_line(self.proc, marker, timeout, log, seen)  # type: ignore[arg-type]

    def kill(self) -> None:
        """SIGKILL: no goodbye, no last heartbeat."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.handle.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.handle.close()
        return int(self.proc.returncode)


def data_services(tmp: Path) -> tuple[Proc, str]:
    port = free_port()
    d = tmp / "ds"
    d.mkdir(parents=True, exist_ok=True)
    proc = Proc(["--data-dir", str(d), "--port", str(port), "data-services"], d / "out.log",
                "Data Services listening")
    return proc, f"http://127.0.0.1:{port}"


def console(tmp: Path, name: str, url: str, workcell: str, *, lease: float = 3.0, speed: float = 50.0,
            poll: float = 0.2, backlog: int | None = None) -> Proc:
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    args = ["--data-dir", str(d), "--data-services-url", url, "--workcell", str(FLEET / f"{workcell}.yaml"),
            "headless", "--module-id", name, "--templates", str(TEMPLATES), "--speed", str(speed),
            "--lease", str(lease), "--poll", str(poll)]
    if backlog is not None:
        args += ["--backlog", str(backlog)]
    return Proc(args, d / "out.log", f"module {name} working")
