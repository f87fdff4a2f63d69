"""The SiLA 2 driver against real sila2 servers on 127.0.0.1 (the simulated SiLA servers)."""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # before any protobuf

import asyncio  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("sila2")

from core.drivers import (  # noqa: E402
    DriverError,
    DriverState,
    InstrumentUnavailable,
    OrderCancelled,
    OutcomeUnknown,
)
from core.drivers.faults import Faults  # noqa: E402
from core.drivers.sila import SilaDriver  # noqa: E402
from core.drivers.sila_sim import SimulatedSilaServer  # noqa: E402
from core.errors import WorkcellError  # noqa: E402
from core.events import EventBus, InstrumentStatusChanged  # noqa: E402
from core.orders import ModuleStatus, Order  # noqa: E402
from core.workcell import Workcell, build_drivers, load_workcell, parse_workcell  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workcell_text(port: int, *, command: str = "PlateReader/ReadPlate", extra: str = "",
                  security: str = "insecure: true", host: str = "127.0.0.1") -> str:
    return f"""\
name: SiLA test cell
instruments:
  - id: PlateReader1
    kind: PlateReader
    driver: sila
    options:
      host: {host}
      port: {port}
      {security}
      heartbeat_timeout: 1s
      commands:
        PlateReader.ReadPlate:
          command: {command}
          parameters: {{plate: PlateId, wavelength: Wavelength}}
          responses: {{MeanAbsorbance: absorbance, WellValues: well_values, WellsRead: wells_read}}
          errors: {{LampNotReady: true, PlateNotPresent: false}}
{extra}
        PlateReader.Shake: {{command: PlateReader/Shake, parameters: {{plate: PlateId}}}}
    capabilities:
      PlateReader.ReadPlate:
        duration: 0.4s
        progress_steps: 4
        outputs:
          well_values: {{type: list, count: 96, min: 0.05, max: 3.0, decimals: 3}}
          absorbance: {{of: well_values, reduce: mean, decimals: 3}}
      PlateReader.Shake: 0.05s
"""


def cell(tmp_path: Path, port: int, **kwargs: Any) -> Workcell:
    path = tmp_path / "sila.yaml"
    path.write_text(workcell_text(port, **kwargs))
    return load_workcell(path)


def read(order_id: str, plate: str = "P-1", wavelength: Any = 450) -> Order:
    return Order(identifier=order_id, templateName="ReadPlate",
                 inputParameters=[{"name": "plate", "value": plate},
                                  {"name": "wavelength", "value": wavelength}])


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def server(tmp_path: Path, port: int) -> Iterator[SimulatedSilaServer]:
    sim = SimulatedSilaServer(cell(tmp_path, port).instruments[0])
    sim.start()
    yield sim
    sim.stop()


def driver_for(tmp_path: Path, port: int, bus: EventBus | None = None, **kwargs: Any) -> SilaDriver:
    workcell = cell(tmp_path, port, **kwargs)
    return build_drivers(workcell, clock=None, bus=bus)["PlateReader1"]  # type: ignore[arg-type,return-value]


def arun(scenario: Any) -> Any:
    return asyncio.run(scenario())


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- happy paths


def test_connect_execute_observable_with_outputs_and_progress(tmp_path, port, server):
    async def scenario():
        driver = driver_for(tmp_path, port)
        assert isinstance(driver, SilaDriver)
        await driver.connect()
        assert driver.server_uuid == server.server_uuid and driver.has_cancel
        assert driver.info.capabilities == {"PlateReader.ReadPlate", "PlateReader.Shake"}
        events: list[tuple[Any, Any]] = []
        out = await driver.execute(read("o1"), lambda f, v: events.append((f, v)))
        assert len(out["well_values"]) == 96
        assert out["absorbance"] == pytest.approx(sum(out["well_values"]) / 96, abs=0.001)
        assert set(out) == {"absorbance", "well_values", "Temperature"}
        fractions = [f for f, _ in events if f is not None]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 0.25 in fractions
        wells = [v["wells_read"] for _, v in events if v]
        assert wells and wells[-1] == 96 and wells == sorted(wells)
        # unobservable command
        shaken = await driver.execute(Order(identifier="o2", templateName="PlateReader.Shake",
                                            inputParameters=[{"name": "plate", "value": "P-1"}]),
                                      lambda f, v: None)
        assert shaken == {"Shaken": True}
        assert (await driver.status()).state is DriverState.IDLE
        assert await driver.heartbeat() < 1.0
        await driver.disconnect()
        assert (await driver.status()).state is DriverState.DISCONNECTED

    arun(scenario)


def test_event_loop_stays_responsive_during_commands(tmp_path, port, server):
    async def scenario():
        driver = driver_for(tmp_path, port)
        await driver.connect()
        lateness: list[float] = []

        async def ticker():
            while True:
                t = time.monotonic()
                await asyncio.sleep(0.01)
                lateness.append(time.monotonic() - t - 0.01)

        tick = asyncio.ensure_future(ticker())
        await asyncio.gather(*(driver.execute(read(f"o{i}"), lambda f, v: None) for i in range(3)))
        tick.cancel()
        await driver.disconnect()
        assert len(lateness) > 10
        assert sorted(lateness)[len(lateness) // 2] < 0.05  # median: the loop never waits on gRPC

    arun(scenario)


# --------------------------------------------------------------------------- errors


def test_defined_errors_fatal_and_retryable_and_validation(tmp_path, port):
    instrument = cell(tmp_path, port).instruments[0]
    with SimulatedSilaServer(instrument, faults=Faults(fail_next=1, retryable=True)):
        async def scenario():
            driver = driver_for(tmp_path, port)
            await driver.connect()
            with pytest.raises(DriverError) as retry:
                await driver.execute(read("o1"), lambda f, v: None)  # injected: LampNotReady
            assert (retry.value.code, retry.value.retryable) == ("LampNotReady", True)
            with pytest.raises(DriverError) as fatal:
                await driver.execute(read("o2", plate=""), lambda f, v: None)
            assert (fatal.value.code, fatal.value.retryable) == ("PlateNotPresent", False)
            assert "PlateId is empty" in fatal.value.message
            with pytest.raises(DriverError) as invalid:
                await driver.execute(read("o3", wavelength=100), lambda f, v: None)
            assert invalid.value.code == "ValidationError"
            assert "'Wavelength'" in invalid.value.message and "'wavelength'" in invalid.value.message
            with pytest.raises(DriverError) as typed:
                await driver.execute(read("o4", wavelength="blue"), lambda f, v: None)
            assert typed.value.code == "ValidationError" and "'Wavelength'" in typed.value.message
            with pytest.raises(DriverError) as missing:
                await driver.execute(Order(identifier="o5", templateName="ReadPlate",
                                           inputParameters=[{"name": "plate", "value": "P"}]),
                                     lambda f, v: None)
            assert missing.value.code == "InvalidParameter" and "'Wavelength'" in missing.value.message
            assert (await driver.execute(read("o6"), lambda f, v: None))["well_values"]
            await driver.disconnect()

        arun(scenario)


def test_unreachable_server_names_instrument_and_file_line(tmp_path, port):
    async def scenario():
        driver = driver_for(tmp_path, port)  # nothing listens on the port
        started = time.monotonic()
        with pytest.raises(InstrumentUnavailable) as exc:
            await driver.connect()
        assert time.monotonic() - started < 5
        text = str(exc.value)
        assert f"{tmp_path / 'sila.yaml'}:7" in text  # options.host
        assert "PlateReader1" in text and f"127.0.0.1:{port}" in text
        assert (await driver.status()).state is DriverState.DISCONNECTED
        await driver.disconnect()

    arun(scenario)


def test_wrong_feature_command_parameter_refused_at_connect_with_location(tmp_path, port, server):
    async def scenario():
        for command, line, words in (("PlateReader/ReadPlates", 13, "no command 'ReadPlates'"),
                                     ("Spectrometer/ReadPlate", 13, "no feature 'Spectrometer'")):
            driver = driver_for(tmp_path, port, command=command)
            with pytest.raises(WorkcellError) as exc:
                await driver.connect()
            text = str(exc.value)
            assert f"sila.yaml:{line}" in text and words in text, text
            assert (await driver.status()).state is DriverState.DISCONNECTED
            await driver.disconnect()

    arun(scenario)


def test_wrong_parameter_name_refused_at_connect(tmp_path, port, server):
    text = workcell_text(port).replace("{plate: PlateId, wavelength: Wavelength}",
                                       "{plate: PlateID, wavelength: Wavelength}")
    path = tmp_path / "param.yaml"
    path.write_text(text)
    driver = build_drivers(load_workcell(path), clock=None)["PlateReader1"]  # type: ignore[arg-type]

    async def scenario():
        with pytest.raises(WorkcellError) as exc:
            await driver.connect()
        message = str(exc.value)
        assert "param.yaml:14" in message and "no parameter 'PlateID'" in message
        await driver.disconnect()

    arun(scenario)


# --------------------------------------------------------------------------- cancel


def test_cancel_through_cancel_controller(tmp_path, port):
    instrument = cell(tmp_path, port).instruments[0]
    with SimulatedSilaServer(instrument, faults=Faults(hang=True)) as sim:
        async def scenario():
            driver = driver_for(tmp_path, port)
            await driver.connect()
            task = asyncio.ensure_future(driver.execute(read("o1"), lambda f, v: None))
            await until(lambda: driver._runs.get("o1") and driver._runs["o1"].execution_uuid)
            assert await driver.cancel("o1") is True
            with pytest.raises(OrderCancelled):
                await task
            await until(lambda: not sim._executions)  # the server stopped it too
            assert await driver.cancel("o1") is False  # no longer running
            await driver.disconnect()

        arun(scenario)


def test_cancel_without_cancel_controller_is_outcome_unknown(tmp_path, port):
    instrument = cell(tmp_path, port).instruments[0]
    with SimulatedSilaServer(instrument, faults=Faults(hang=True), cancel_controller=False):
        async def scenario():
            driver = driver_for(tmp_path, port)
            await driver.connect()
            assert not driver.has_cancel
            task = asyncio.ensure_future(driver.execute(read("o1"), lambda f, v: None))
            await until(lambda: "o1" in driver._runs and driver._runs["o1"].execution_uuid)
            assert await driver.cancel("o1") is False
            with pytest.raises(OutcomeUnknown) as exc:
                await task
            assert "no CancelController" in str(exc.value)
            await driver.disconnect()

        arun(scenario)


# --------------------------------------------------------------------------- link loss


def test_server_restart_mid_command_is_outcome_unknown_then_reconnects(tmp_path, port, server):
    async def scenario():
        bus = EventBus()
        seen: list[InstrumentStatusChanged] = []
        bus.subscribe(seen.append, InstrumentStatusChanged)
        driver = driver_for(tmp_path, port, bus=bus)
        await driver.connect()
        first = driver.server_uuid
        task = asyncio.ensure_future(driver.execute(read("o1"), lambda f, v: None))
        await until(lambda: "o1" in driver._runs and driver._runs["o1"].execution_uuid)
        await asyncio.to_thread(server.restart)
        with pytest.raises(OutcomeUnknown) as exc:
            await task
        assert "server restarted" in str(exc.value) or "connection lost" in str(exc.value)
        await until(lambda: driver.server_uuid is not None)  # reconnected by itself
        assert driver.server_uuid == server.server_uuid != first
        assert (await driver.execute(read("o2"), lambda f, v: None))["well_values"]
        assert ModuleStatus.Offline in [e.status for e in seen]
        await driver.disconnect()

    arun(scenario)


def test_heartbeat_loss_goes_offline_and_reconnects_with_backoff(tmp_path, port, server):
    async def scenario():
        bus = EventBus()
        seen: list[InstrumentStatusChanged] = []
        bus.subscribe(seen.append, InstrumentStatusChanged)
        driver = driver_for(tmp_path, port, bus=bus)
        await driver.connect()
        await driver.heartbeat()
        task = asyncio.ensure_future(driver.execute(read("o1"), lambda f, v: None))
        await until(lambda: "o1" in driver._runs and driver._runs["o1"].execution_uuid)
        await asyncio.to_thread(server.stop)
        started = time.monotonic()
        with pytest.raises(InstrumentUnavailable) as beat:
            await driver.heartbeat()
        assert time.monotonic() - started < driver.options.heartbeat_timeout + 1.5
        assert "PlateReader1" in str(beat.value)
        with pytest.raises(OutcomeUnknown):
            await task
        status = await driver.status()
        assert status.state is DriverState.DISCONNECTED and status.module_status is ModuleStatus.Offline
        assert seen[-1].status is ModuleStatus.Offline
        with pytest.raises(InstrumentUnavailable):
            await driver.execute(read("o2"), lambda f, v: None)
        await asyncio.to_thread(server.start)  # back, with a new UUID
        await until(lambda: driver.state is DriverState.IDLE)
        assert driver.server_uuid == server.server_uuid
        assert seen[-1].status is ModuleStatus.Ready
        await driver.disconnect()

    arun(scenario)


# --------------------------------------------------------------------------- security & files


def test_tls_with_pinned_server_certificate(tmp_path, port):
    from sila2.server.encryption import generate_self_signed_certificate

    instrument = cell(tmp_path, port).instruments[0]
    server_uuid = uuid.uuid4()
    key, cert = generate_self_signed_certificate(server_uuid, "127.0.0.1")
    (tmp_path / "reader.pem").write_bytes(cert)
    with SimulatedSilaServer(instrument, private_key=key, cert_chain=cert,
                             server_uuid=str(server_uuid)):
        async def scenario():
            driver = driver_for(tmp_path, port, security="server_cert: reader.pem")
            await driver.connect()
            assert (await driver.execute(read("o1"), lambda f, v: None))["well_values"]
            await driver.disconnect()
            # a plain-text client is refused by the TLS server: the message says so, at the
            # workcell line that chose plain text
            plain = driver_for(tmp_path, port)
            with pytest.raises(InstrumentUnavailable) as exc:
                await plain.connect()
            message = str(exc.value)
            assert "sila.yaml:9: instruments[0].options.insecure: instrument PlateReader1" in message
            assert f"SiLA server 127.0.0.1:{port}" in message and "it may require TLS" in message
            assert "it may require TLS" in (await plain.status()).detail
            await plain.disconnect()

        arun(scenario)
    # the other way round: a TLS client against a plain-text server
    with SimulatedSilaServer(instrument):
        async def reverse():
            tls = driver_for(tmp_path, port, security="server_cert: reader.pem")
            with pytest.raises(InstrumentUnavailable) as exc:
                await tls.connect()
            message = str(exc.value)
            assert "sila.yaml:9: instruments[0].options.server_cert: instrument PlateReader1" in message
            assert "the server speaks plain text, not TLS" in message
            assert "TLS handshake failed" in (await tls.status()).detail
            await tls.disconnect()

        arun(reverse)


def _ca_and_server_cert(server_uuid: uuid.UUID) -> tuple[bytes, bytes, bytes]:
    """A certificate authority, and a server key and certificate for 127.0.0.1 that it signed
    (carrying the SiLA server UUID extension): (CA certificate, server key, server certificate)."""
    import datetime
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lab test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.58583"),
                                                      str(server_uuid).encode("ascii")), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return ca.public_bytes(pem), key_pem, cert.public_bytes(pem)


def test_tls_with_a_ca_file(tmp_path, port):
    """``root_certs``: the server's certificate is trusted because the lab's CA signed it."""
    instrument = cell(tmp_path, port).instruments[0]
    server_uuid = uuid.uuid4()
    ca, key, cert = _ca_and_server_cert(server_uuid)
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "lab-ca.pem").write_bytes(ca)
    with SimulatedSilaServer(instrument, private_key=key, cert_chain=cert, server_uuid=str(server_uuid)):
        async def scenario():
            driver = driver_for(tmp_path, port, security="root_certs: certs/lab-ca.pem")
            await driver.connect()
            assert driver.server_uuid == str(server_uuid)
            assert "TLS, CA file certs/lab-ca.pem" in driver.info.endpoint
            assert (await driver.execute(read("o1"), lambda f, v: None))["well_values"]
            await driver.disconnect()

        arun(scenario)


def test_workcell_refuses_insecure_off_loopback_and_missing_cert_with_location():
    text = workcell_text(50000, host="10.0.0.7")
    with pytest.raises(WorkcellError) as exc:
        parse_workcell(text, "remote.yaml")
    assert "remote.yaml:9: instruments[0].options.insecure" in str(exc.value) and "insecure is allowed only" in str(exc.value)
    text = workcell_text(50000, security="root_certs: nowhere/ca.pem")
    with pytest.raises(WorkcellError) as exc:
        parse_workcell(text, "certs.yaml")
    assert "certs.yaml:9: instruments[0].options.root_certs" in str(exc.value) and "no such file" in str(exc.value)
    text = workcell_text(50000).replace("        PlateReader.Shake: {command: PlateReader/Shake, "
                                        "parameters: {plate: PlateId}}\n", "")
    with pytest.raises(WorkcellError) as exc:
        parse_workcell(text, "unmapped.yaml")
    assert "PlateReader.Shake" in str(exc.value) and "has no SiLA command" in str(exc.value)


def test_demo_sila_workcell_loads_and_maps_every_capability():
    workcell = load_workcell(ROOT / "resources" / "workcells" / "demo-sila.yaml")
    sila = [i for i in workcell.instruments if i.driver == "sila"]
    assert len(sila) >= 3
    for inst in sila:
        assert set(inst.options["commands"]) == set(inst.capabilities)
        SimulatedSilaServer(inst)  # every feature definition exists and has the command


def test_sila_sim_command_serves_the_workcell_in_a_subprocess(tmp_path, port):
    import subprocess
    import sys

    path = tmp_path / "sila.yaml"
    path.write_text(workcell_text(port))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "console.cli", "sila-sim", "--workcell", str(path),
                             "--for", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert f"PlateReader1: SiLA 2 server on 127.0.0.1:{port}" in line, proc.stderr.read()

        async def scenario():
            driver = driver_for(tmp_path, port)
            await driver.connect()
            assert driver.server_uuid in line
            out = await driver.execute(read("o1"), lambda f, v: None)
            assert len(out["well_values"]) == 96
            await driver.disconnect()

        arun(scenario)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
