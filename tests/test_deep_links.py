"""Deep links: `labconsole open ORDER_ID` (or labconsole://order/ID) focuses the order in the
console running on the same data dir — a real console process (offscreen) and real CLI processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_console_e2e import free_port

from console.app import LinkListener, link_server_name
from console.cli import parse_link
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def lc(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "console", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)


def test_links_parse_and_name_one_socket_per_data_dir(tmp_path):
    assert parse_link("Order_00012") == "Order_00012"
    assert parse_link("labconsole://order/Order_00012") == "Order_00012"
    assert parse_link("LabConsole://Order/Order%2000012/") == "Order 00012"
    for bad in ("http://order/Order_1", "labconsole://run/Order_1", "labconsole://order/", "  "):
        with pytest.raises(ConfigError):
            parse_link(bad)
    a, b = tmp_path / "a", tmp_path / "b"
    assert link_server_name(a) != link_server_name(b)
    assert link_server_name(a) == link_server_name(tmp_path / "x" / ".." / "a")


def test_a_second_console_on_the_same_data_dir_leaves_the_links_to_the_first(tmp_path, qtbot, qrun):
    seen: list[tuple[str, str]] = []

    def focus(name):
        async def show(order_id):
            seen.append((name, order_id))
            return {"ok": True, "order": order_id, "selected": True}
        return show

    first, second = LinkListener(tmp_path, focus("first")), LinkListener(tmp_path, focus("second"))
    try:
        assert first.start()
        assert not second.start()
        # the command line, as a process on a thread: this process's loop answers meanwhile
        done = qrun(asyncio.to_thread(lc, "open", "labconsole://order/Order_7", data_dir=tmp_path),
                    timeout_ms=60_000)
        assert done.returncode == 0, done.stderr
        assert seen == [("first", "Order_7")]
        assert done.stdout.strip() == f"Order_7: selected in Jobs in the console on {tmp_path}"
    finally:
        first.close()
        second.close()


def test_open_focuses_the_order_in_the_running_console(tmp_path):
    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir()
    other.mkdir()
    assert lc("demo-orders", "60", data_dir=data).returncode == 0
    refused = lc("open", "Order_00012", data_dir=data)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"labconsole: no console is running on {data}"
    bad = lc("open", "https://example.org/order/1", data_dir=data)
    assert bad.returncode == 2 and "is not a labconsole link: expected labconsole://order/ID" in bad.stderr
    # a socket file left behind by a console that was killed: nobody answers, the next console
    # replaces it
    stale = Path(tempfile.gettempdir()) / link_server_name(data)
    with socket.socket(socket.AF_UNIX) as left:
        left.bind(str(stale))
    assert stale.exists()
    assert lc("open", "Order_00012", data_dir=data).returncode == 1

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "console", "--data-dir", str(data), "--port", str(free_port()),
                             "--log-level", "INFO"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        opened = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            opened = lc("open", "Order_00012", data_dir=data)
            if opened.returncode == 0:
                break
            assert "no console is running" in opened.stderr, opened.stderr
            time.sleep(0.5)
        assert opened is not None and opened.returncode == 0, opened.stderr if opened else ""
        assert opened.stdout.strip() == f"Order_00012: selected in Jobs in the console on {data}"
        link = lc("open", "labconsole://order/Order_00020", data_dir=data)
        assert link.returncode == 0, link.stderr
        assert link.stdout.startswith("Order_00020: selected in Jobs")
        missing = lc("open", "Order_99999", data_dir=data)
        assert missing.returncode == 1 and "no order 'Order_99999'" in missing.stderr
        # a console on another data dir never answers
        elsewhere = lc("open", "Order_00012", data_dir=other)
        assert elsewhere.returncode == 1 and f"no console is running on {other}" in elsewhere.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
            raise AssertionError(f"the console did not stop on SIGTERM\n{err[-3000:]}") from None
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    # the console's own log says what it selected, in order
    lines = [line for line in err.splitlines() if "deep link:" in line]
    assert [line.split("deep link: ")[1] for line in lines] == ["Order_00012 selected in Jobs",
                                                               "Order_00020 selected in Jobs"]
    # closed: the socket is gone, the CLI says so again
    assert lc("open", "Order_00012", data_dir=data).returncode == 1
