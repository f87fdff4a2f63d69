"""The whole console as `make run` starts it: window, embedded Data Services, workcell, templates;
an order submitted over HTTP runs; SIGTERM closes it cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_console_starts_serves_data_services_and_stops_cleanly(tmp_path):
    port = free_port()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "console", "--data-dir", str(tmp_path), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        templates = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                r = httpx.get(f"{base}/api/v2.0/OrderService/OrderTemplates", params={"limit": 100}, timeout=2)
                names = {t["name"] for t in r.json()}
                if {"Cell Prep", "Plate Replication", "Cell Culture Passage", "ELISA Readout"} <= names:
                    templates = names
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.3)
        assert templates and {"Cell Prep", "Plate Replication", "Cell Culture Passage"} <= templates
        # another program on the PC submits an order for one of the console's templates
        created = httpx.post(f"{base}/api/v2.0/OrderService/CreateOrder",
                             json={"TemplateName": "Cell Prep", "InputParameters": [{"name": "Plate Count", "value": "2"}]},
                             timeout=5)
        assert created.status_code == 200, created.text
        order_id = created.json()
        status = None
        while time.monotonic() < deadline:
            status = httpx.get(f"{base}/api/v3.0/orders/{order_id}", timeout=2).json()["status"]
            if status not in ("Created", "Validated"):  # Validated: claimed, its run being made
                break
            time.sleep(0.3)
        assert status in ("Running", "Complete"), status  # claimed by the console and started
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"the console did not stop on SIGTERM\n{err[-3000:]}") from None
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
