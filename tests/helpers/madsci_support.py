"""Start real MADSci REST nodes (tests/helpers/madsci_node.py) from .madsci-venv on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
MADSCI_PYTHON = ROOT / ".madsci-venv" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MadsciNode:
    """One node process; :meth:`restart` starts a fresh one (new node id, empty history)."""

    def __init__(self, port: int | None = None, name: str = "lh_node") -> None:
        self.port = port or free_port()
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = tempfile.TemporaryDirectory(prefix="madsci-node-")
        self.log = Path(self.workdir.name) / "node.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        if not MADSCI_PYTHON.exists():
            pytest.fail(f"MADSci's node framework is not installed in {MADSCI_PYTHON.parent.parent}. "
                        "Run 'make madsci-venv' (or 'make test', which builds it).")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NODE_", "MADSCI_"))}
        env["PYTHONPATH"] = str(ROOT)
        env["HOME"] = self.workdir.name  # MADSci writes its logs under ~/.madsci
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(MADSCI_PYTHON), "-m", "tests.helpers.madsci_node", str(self.port), self.name],
                cwd=self.workdir.name, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.log.read_text(errors="replace")
                pytest.fail(f"the MADSci node exited with {self.proc.returncode}:\n{err[-3000:]}")
            try:
                if httpx.get(f"{self.url}/status", timeout=1.0, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"the MADSci node did not answer on {self.url} within {timeout:g} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.workdir.cleanup()

    def restart(self) -> None:
        self.stop()
        self.start()
