"""The real console on a real X display (Xvfb) with Qt's xcb platform plugin, as `make run`
starts it on a desktop: the window comes up, SIGTERM closes it cleanly.

Every library the xcb plugin links against must be installed by .ci/system-deps; one missing
library and Qt aborts with "Could not load the Qt platform plugin xcb", which fails this test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPS = ".ci/system-deps"
WINDOW_WAIT_S = 60.0
EXIT_WAIT_S = 30.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `bash {DEPS}` installs it (xvfb, x11-utils)")
    return path


@pytest.fixture
def display(tmp_path):
    """A fresh Xvfb display (``:N``), 1280x720, no TCP; stopped after the test."""
    xvfb = _tool("Xvfb")
    read, write = os.pipe()
    proc = subprocess.Popen([xvfb, "-displayfd", str(write), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write)
    try:
        with os.fdopen(read) as f:
            number = f.readline().strip()
        if not number:
            pytest.fail(f"Xvfb did not start: {proc.stderr.read().decode(errors='replace')[-800:]}")
        yield f":{number}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _windows(display: str) -> str:
    out = subprocess.run([_tool("xwininfo"), "-root", "-tree", "-display", display],
                         capture_output=True, text=True, timeout=20)
    return out.stdout


def test_console_opens_on_xcb_and_exits_cleanly_on_sigterm(display, tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "PYTHONPATH": str(ROOT),
           "LABCONSOLE_DATA_DIR": str(data), "QT_DEBUG_PLUGINS": "0"}
    env.pop("WAYLAND_DISPLAY", None)
    log = tmp_path / "console.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "console", "--data-dir", str(data)],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WINDOW_WAIT_S
        seen = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the console exited ({proc.returncode}) before its window was up; missing "
                            f"libraries belong in {DEPS}:\n{log.read_text(errors='replace')[-2000:]}")
            seen = _windows(display)
            if '"labconsole"' in seen:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"no labconsole window on {display} after {WINDOW_WAIT_S:.0f} s:\n{seen[-1500:]}\n"
                        f"{log.read_text(errors='replace')[-2000:]}")
        time.sleep(1.0)  # let it start its runtime and Data Services too
        assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"the console did not exit within {EXIT_WAIT_S:.0f} s of SIGTERM")
    text = log.read_text(errors="replace")
    assert code == 0, f"exit {code}:\n{text[-2000:]}"
    assert "Traceback" not in text, text[-2000:]
    assert (data / "console.ini").is_file(), "the window saved its layout on the way out"


def test_every_library_of_the_xcb_plugin_is_installed():
    import PySide6

    qt = Path(PySide6.__file__).parent / "Qt"
    ldd = _tool("ldd")
    missing = []
    for lib in (qt / "plugins" / "platforms" / "libqxcb.so", qt / "lib" / "libQt6XcbQpa.so.6"):
        out = subprocess.run([ldd, str(lib)], capture_output=True, text=True, timeout=20).stdout
        missing += [f"{lib.name}: {line.split()[0]}" for line in out.splitlines() if "not found" in line]
    assert not missing, f"install the packages of these libraries in {DEPS}: {missing}"
