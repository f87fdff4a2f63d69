"""`labconsole data-services`: the embedded Data Services alone, headless, as a real process."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.store import DB_FILENAME, Store

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "console", "--data-dir", str(data_dir),
                             "--port", str(free_port()), *extra, "data-services"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("Data Services listening: "):
            return proc, line.split(": ", 1)[1].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"the server did not start: {proc.stderr.read() if proc.stderr else ''}")


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_serves_orders_headless_and_stops_cleanly(tmp_path):
    proc, url = start(tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/api/v2.0/version", timeout=5).status_code == 200
        created = httpx.post(f"{url}/api/v2.0/OrderService/CreateOrder", timeout=5,
                             json={"TemplateName": "Plate Prep", "CreatedBy": "LIMS"})
        assert created.status_code == 200, created.text
        order_id = created.json()
        got = httpx.get(f"{url}/api/v2.0/OrderService/Order", params={"orderId": order_id}, timeout=5)
        assert got.status_code == 200 and got.json()["templateName"] == "Plate Prep"
    finally:
        rc = stop(proc)
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    with Store(tmp_path / DB_FILENAME).open() as store:  # committed, and still there
        assert store.get_order(order_id).createdBy == "LIMS"


def test_a_network_bind_without_a_token_is_refused_before_the_store_is_touched(tmp_path):
    result = subprocess.run([sys.executable, "-m", "console", "--data-dir", str(tmp_path), "--bind",
                             "0.0.0.0", "data-services"], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 2
    assert "--bind" in result.stderr and "token" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / DB_FILENAME).exists()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_serves_https_with_the_given_certificate(tmp_path):
    cert, key = _self_signed(tmp_path)
    proc, url = start_tls(tmp_path / "data", cert, key)
    try:
        assert url.startswith("https://127.0.0.1:")
        ok = httpx.get(f"{url}/api/v2.0/version", verify=ssl.create_default_context(cafile=str(cert)),
                       timeout=5)
        assert ok.status_code == 200
        with pytest.raises(httpx.ConnectError):  # a client that does not trust it is refused
            httpx.get(f"{url}/api/v2.0/version", timeout=5)
    finally:
        assert stop(proc) == 0


def start_tls(data_dir: Path, cert: Path, key: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "console", "--data-dir", str(data_dir), "--port",
                             str(free_port()), "data-services", "--certfile", str(cert), "--keyfile", str(key)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("Data Services listening: "):
        proc.kill()
        pytest.fail(f"the server did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    return proc, line.split(": ", 1)[1].strip()


def test_a_missing_certificate_file_is_named(tmp_path):
    result = subprocess.run([sys.executable, "-m", "console", "--data-dir", str(tmp_path), "data-services",
                             "--certfile", str(tmp_path / "nope.pem"), "--keyfile", str(tmp_path / "k.pem")],
                            capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 2 and "nope.pem" in result.stderr and "--certfile" in result.stderr
