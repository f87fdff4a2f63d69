"""Driver benchmark: what SiLA 2 instruments and remote robot agents cost the console.

1. Per-command overhead: N sequential zero-duration commands through the agent driver to a real
   ``labconsole agent`` process (WebSocket on 127.0.0.1), against the same commands through the
   in-process simulated driver, in the same run.
2. Event-loop lag of the console's loop while A agents (one child process running A agent
   clients) heartbeat every second and the console heartbeats each of them every second (the
   dispatcher's round): p50/p99/max of a 10 ms sampler's overshoot, against the idle loop.
3. RSS of the console process per connected agent (current RSS before and after A agents
   registered, divided by A).
4. SiLA 2 per-command overhead: N sequential zero-duration commands through the SiLA driver to
   a real SiLA 2 server (``labconsole sila-sim`` in its own process, gRPC on 127.0.0.1), an
   unobservable one and an observable one, against the in-process simulated driver, same run.
5. Event-loop lag of the console's loop while S SiLA 2 instruments (S servers in one
   ``labconsole sila-sim`` process) each run an observable command that streams progress and an
   intermediate response at 10 Hz: p50/p99/max of a 10 ms sampler's overshoot, against the idle
   loop (targets: p99 <= 16 ms, max <= 50 ms); then the same while the A agents of part 2
   heartbeat as well (without ``--only``, or alone with ``--only mixed``).
6. MADSci per-command overhead (``--only madsci``): sequential short actions through the MADSci
   driver to a real MADSci REST node (``.madsci-venv``, tests/helpers/madsci_node.py) on
   127.0.0.1, against the in-process simulated driver, same run.
7. PyLabRobot per-command overhead (``--only plr``, needs the [plr] extra): sequential transfers
   through the PyLabRobot driver on PLR's chatterbox backend (in process, no machine), against
   the in-process simulated driver, same run.

Each lag part also reports the garbage collector's passes over 5 ms while it sampled. As in the
console, what instruments build to connect is moved out of full collections once they are
connected (``core/gcpolicy.py``: the dispatcher settles after each connect); ``--no-settle``
measures without that (a full collection then stalls the loop for about 100-200 ms).

usage: python bench/drivers.py [--commands 300] [--agents 50] [--seconds 10] [--sila 8]
                               [--only agents|sila|mixed|madsci|plr] [--no-settle]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # before sila2 imports

from core import gcpolicy  # noqa: E402
from core.clock import SystemClock  # noqa: E402
from core.drivers.agent import AgentDriver  # noqa: E402
from core.drivers.simulated import SimulatedDriver  # noqa: E402
from core.orders import Order  # noqa: E402
from core.workcell import build_drivers, parse_workcell  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
THIS = str(Path(__file__).resolve())
CAP = "RobotArm.MovePlate"


def workcell(names: list[str], beat: float) -> str:
    items = "".join(
        f"  - {{id: {n}, kind: RobotArm, driver: agent, options: {{url: 'ws://127.0.0.1:0'}},\n"
        f"     capabilities: {{{CAP}: {{duration: 0, jitter: 0s, progress_steps: 1}}}}}}\n"
        for n in names)
    return f"heartbeat_interval: {beat}\nstale_timeout: {beat * 10}\ninstruments:\n{items}"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def order(i: int) -> Order:
    return Order(identifier=f"bench-{i}", templateName=CAP,
                 inputParameters=[{"name": "plate", "value": f"P{i}"}, {"name": "source", "value": "A"}])


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def time_commands(driver: object, n: int) -> list[float]:
    sink = lambda f, v: None  # noqa: E731
    for i in range(20):  # warm-up
        await driver.execute(order(-i - 1), sink)  # type: ignore[attr-defined]
    times = []
    for i in range(n):
        t = time.perf_counter()
        await driver.execute(order(i), sink)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t)
    return times


async def overhead(n: int) -> None:
    drivers = build_drivers(parse_workcell(workcell(["Arm1"], 5.0)), SystemClock())
    agent = drivers["Arm1"]
    assert isinstance(agent, AgentDriver)
    await agent.hub.start()
    proc = await spawn("-m", "console", "agent", "--console", agent.hub.url, "--name", "Arm1",
                       "--capabilities", CAP)
    try:
        await agent.connect()
        sim_config = agent.config.model_copy(update={"driver": "simulated", "options": {}})
        sim = SimulatedDriver(sim_config, SystemClock(), seed=1)
        await sim.connect()
        s = await time_commands(sim, n)
        a = await time_commands(agent, n)
        beats = [await agent.heartbeat() for _ in range(200)]
    finally:
        proc.kill()
        await proc.wait()
        await agent.hub.close()
    print(f"per-command, {n} sequential zero-duration commands:")
    print(f"  simulated driver (in process)  p50 {statistics.median(s) * 1e6:8.0f} us   "
          f"p99 {pct(s, 0.99) * 1e6:8.0f} us   mean {statistics.fmean(s) * 1e6:8.0f} us")
    print(f"  agent driver (agent process)   p50 {statistics.median(a) * 1e6:8.0f} us   "
          f"p99 {pct(a, 0.99) * 1e6:8.0f} us   mean {statistics.fmean(a) * 1e6:8.0f} us")
    print(f"  ratio agent / simulated        p50 {statistics.median(a) / statistics.median(s):8.1f} x   "
          f"overhead per command {(statistics.median(a) - statistics.median(s)) * 1e3:.2f} ms")
    print(f"  heartbeat round trip           p50 {statistics.median(beats) * 1e6:8.0f} us   "
          f"p99 {pct(beats, 0.99) * 1e6:8.0f} us")


GC_PAUSES: list[tuple[int, float]] = []
"""(generation, seconds) of each garbage collection over 5 ms while :func:`sample_lag` ran."""


def _gc_watch(phase: str, info: dict[str, Any], started: list[float] = [0.0]) -> None:  # noqa: B006
    if phase == "start":
        started[0] = time.perf_counter()
    elif (took := time.perf_counter() - started[0]) > 0.005:
        GC_PAUSES.append((info["generation"], took))


async def sample_lag(seconds: float, period: float = 0.01) -> list[float]:
    lags = []
    GC_PAUSES.clear()
    gc.callbacks.append(_gc_watch)
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            await asyncio.sleep(period)
            lags.append(time.perf_counter() - t - period)
    finally:
        gc.callbacks.remove(_gc_watch)
    return lags


def gc_text() -> str:
    """The collections over 5 ms during the last :func:`sample_lag`."""
    if not GC_PAUSES:
        return "no GC pass over 5 ms"
    worst = max(GC_PAUSES, key=lambda p: p[1])
    return (f"{len(GC_PAUSES)} GC pass(es) over 5 ms, longest {worst[1] * 1e3:.0f} ms "
            f"(generation {worst[0]})")


@contextlib.asynccontextmanager
async def agent_fleet(count: int, stats: dict[str, float] | None = None
                      ) -> AsyncIterator[dict[str, Any]]:
    """``count`` agents (one child process) registered and connected, and the dispatcher's
    heartbeat round to each of them every second; yields the drivers. ``stats`` gets the RSS
    once the hub listens (``rss_hub``)."""
    names = [f"Agent{i:03d}" for i in range(count)]
    drivers = build_drivers(parse_workcell(workcell(names, 1.0)), SystemClock())
    hub = next(iter(drivers.values())).hub  # type: ignore[attr-defined]
    await hub.start()
    if stats is not None:
        stats["rss_hub"] = rss_mb()
    proc = await spawn(THIS, "--child", hub.url, "--agents", str(count))
    rounds: asyncio.Task[None] | None = None
    try:
        deadline = time.monotonic() + 60
        while any(d.agent_address is None for d in drivers.values()):  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "agents did not all register within 60 s"
            await asyncio.sleep(0.05)
        await asyncio.gather(*(d.connect() for d in drivers.values()))
        gcpolicy.settle()  # as the dispatcher does after connecting an instrument
        await asyncio.sleep(1.0)

        async def dispatcher_round() -> None:  # the dispatcher heartbeats each instrument
            while True:
                await asyncio.gather(*(d.heartbeat() for d in drivers.values()), return_exceptions=True)
                await asyncio.sleep(1.0)

        rounds = asyncio.create_task(dispatcher_round())
        yield drivers
    finally:
        if rounds is not None:
            rounds.cancel()
            await asyncio.gather(rounds, return_exceptions=True)
        proc.kill()
        await proc.wait()
        await hub.close()


async def fleet(count: int, seconds: float) -> None:
    idle = await sample_lag(min(seconds, 3.0))
    base_rss = rss_mb()
    stats: dict[str, float] = {}
    async with agent_fleet(count, stats) as drivers:
        rss_connected = rss_mb()
        beats_before = sum(d.heartbeats for d in drivers.values())
        lags = await sample_lag(seconds)
        beats = sum(d.heartbeats for d in drivers.values()) - beats_before
        latencies = [d.latency for d in drivers.values() if d.latency is not None]
    ms = 1e3
    print(f"event-loop lag, {count} agents heartbeating every 1 s + console heartbeat round every 1 s, "
          f"{seconds:g} s ({beats} agent heartbeats received, {beats / seconds:.0f}/s):")
    print(f"  idle loop                      p50 {pct(idle, .5) * ms:6.2f} ms  p99 {pct(idle, .99) * ms:6.2f} ms  "
          f"max {max(idle) * ms:6.2f} ms")
    print(f"  with {count} agents              p50 {pct(lags, .5) * ms:6.2f} ms  p99 {pct(lags, .99) * ms:6.2f} ms  "
          f"max {max(lags) * ms:6.2f} ms   ({gc_text()})")
    print(f"  console heartbeat round trip   p50 {statistics.median(latencies) * ms:6.2f} ms  "
          f"max {max(latencies) * ms:6.2f} ms")
    rss_hub = stats["rss_hub"]
    print(f"RSS: before hub {base_rss:.1f} MB, hub listening {rss_hub:.1f} MB, {count} agents connected "
          f"{rss_connected:.1f} MB -> {(rss_connected - rss_hub) * 1024 / count:.0f} KB per connected agent")


async def child(url: str, count: int) -> None:
    """``count`` agent clients in one process (the fleet of part 2)."""
    from core.agent_client import AgentClient

    clients = [AgentClient(url, f"Agent{i:03d}", [CAP]) for i in range(count)]
    await asyncio.gather(*(c.run() for c in clients))


# --------------------------------------------------------------------------- SiLA 2


def sila_workcell(ports: list[int], seconds: float) -> str:
    steps = max(1, round(seconds * 10))  # progress and an intermediate response at 10 Hz
    seconds = round(seconds, 3)
    items = "".join(f"""\
  - id: Reader{i}
    kind: PlateReader
    driver: sila
    options:
      host: 127.0.0.1
      port: {port}
      insecure: true
      commands:
        PlateReader.ReadPlate:
          command: PlateReader/ReadPlate
          parameters: {{plate: PlateId, wavelength: Wavelength}}
        PlateReader.Shake: {{command: PlateReader/Shake, parameters: {{plate: PlateId}}}}
    capabilities:
      PlateReader.ReadPlate: {{duration: {seconds}s, jitter: 0s, progress_steps: {steps}}}
      PlateReader.Shake: {{duration: 0s, jitter: 0s}}
""" for i, port in enumerate(ports))
    return f"name: SiLA bench\ninstruments:\n{items}"


def free_ports(count: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


async def sila_servers(count: int, seconds: float, tmp: Path) -> tuple[Any, Any]:
    """``count`` SiLA 2 servers in one ``labconsole sila-sim`` process, and their workcell."""
    from core.workcell import load_workcell

    path = tmp / "sila-bench.yaml"
    path.write_text(sila_workcell(free_ports(count), seconds))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console", "sila-sim", "--workcell", str(path), cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    for _ in range(count):
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert b"SiLA 2 server on" in line, line
    return proc, load_workcell(path)


def sila_order(i: int, capability: str) -> Order:
    return Order(identifier=f"sila-{capability}-{i}", templateName=capability,
                 inputParameters=[{"name": "plate", "value": f"P{i}"},
                                  {"name": "wavelength", "value": 450}])


async def time_sila(driver: Any, n: int, capability: str) -> list[float]:
    sink = lambda f, v: None  # noqa: E731
    for i in range(10):
        await driver.execute(sila_order(-i - 1, capability), sink)
    times = []
    for i in range(n):
        t = time.perf_counter()
        await driver.execute(sila_order(i, capability), sink)
        times.append(time.perf_counter() - t)
    return times


async def sila_overhead(n: int, tmp: Path) -> None:
    proc, cell = await sila_servers(1, 0.0, tmp)
    try:
        drivers = build_drivers(cell, SystemClock())
        sila = drivers["Reader0"]
        await sila.connect()
        sim = SimulatedDriver(cell.instruments[0].model_copy(update={"driver": "simulated",
                                                                      "options": {}}),
                              SystemClock(), seed=1)
        await sim.connect()
        s = await time_sila(sim, n, "PlateReader.Shake")
        u = await time_sila(sila, n, "PlateReader.Shake")
        o = await time_sila(sila, max(20, n // 5), "PlateReader.ReadPlate")
        beats = [await sila.heartbeat() for _ in range(100)]
        await sila.disconnect()
    finally:
        proc.kill()
        await proc.wait()
    us = 1e6
    print(f"SiLA 2 per-command, sequential zero-duration commands ({n} unobservable, "
          f"{max(20, n // 5)} observable):")
    print(f"  simulated driver (in process)  p50 {statistics.median(s) * us:8.0f} us   "
          f"p99 {pct(s, 0.99) * us:8.0f} us   mean {statistics.fmean(s) * us:8.0f} us")
    print(f"  SiLA unobservable (Shake)      p50 {statistics.median(u) * us:8.0f} us   "
          f"p99 {pct(u, 0.99) * us:8.0f} us   mean {statistics.fmean(u) * us:8.0f} us")
    print(f"  SiLA observable (ReadPlate)    p50 {statistics.median(o) * us:8.0f} us   "
          f"p99 {pct(o, 0.99) * us:8.0f} us   mean {statistics.fmean(o) * us:8.0f} us")
    print(f"  overhead per command           unobservable "
          f"{(statistics.median(u) - statistics.median(s)) * 1e3:.2f} ms, observable "
          f"{(statistics.median(o) - statistics.median(s)) * 1e3:.2f} ms (its status is polled "
          f"every 50 ms)")
    print(f"  heartbeat round trip           p50 {statistics.median(beats) * us:8.0f} us   "
          f"p99 {pct(beats, 0.99) * us:8.0f} us")


async def sila_stream(count: int, seconds: float, tmp: Path, agents: int = 0) -> None:
    idle = await sample_lag(min(seconds, 3.0))
    proc, cell = await sila_servers(count, seconds + 2.0, tmp)
    fleet_cm = agent_fleet(agents) if agents else contextlib.nullcontext({})
    try:
        await fleet_cm.__aenter__()
        drivers = build_drivers(cell, SystemClock())
        await asyncio.gather(*(d.connect() for d in drivers.values()))
        gcpolicy.settle()  # as the dispatcher does after connecting an instrument
        reports = [0]

        def sink(fraction: Any, values: Any) -> None:
            reports[0] += 1

        runs = [asyncio.create_task(d.execute(sila_order(i, "PlateReader.ReadPlate"), sink))
                for i, d in enumerate(drivers.values())]
        await asyncio.sleep(0.5)  # every command running
        before = reports[0]
        lags = await sample_lag(seconds)
        during = reports[0] - before
        await asyncio.gather(*runs)
        await asyncio.gather(*(d.disconnect() for d in drivers.values()))
    finally:
        await fleet_cm.__aexit__(None, None, None)
        proc.kill()
        await proc.wait()
    ms = 1e3
    p99, worst = pct(lags, .99) * ms, max(lags) * ms
    also = (f" and {agents} agents heartbeating every 1 s (+ a console heartbeat round to each "
            f"every 1 s)" if agents else "")
    print(f"event-loop lag, {count} SiLA 2 instruments streaming progress at 10 Hz{also}, "
          f"{seconds:g} s ({during} progress reports reached the console, {during / seconds:.0f}/s):")
    print(f"  idle loop                      p50 {pct(idle, .5) * ms:6.2f} ms  p99 {pct(idle, .99) * ms:6.2f} ms  "
          f"max {max(idle) * ms:6.2f} ms")
    print(f"  with {count} streaming            p50 {pct(lags, .5) * ms:6.2f} ms  p99 {p99:6.2f} ms  "
          f"max {worst:6.2f} ms   (targets p99 <= 16 ms: {'met' if p99 <= 16 else 'MISSED'}, "
          f"max <= 50 ms: {'met' if worst <= 50 else 'MISSED'})")
    print(f"  garbage collector while sampling: {gc_text()}")


def _report(label: str, n: int, rows: list[tuple[str, list[float]]]) -> None:
    """p50/p99/mean of each row, then each row's overhead over the first (the simulated driver)."""
    us = 1e6
    print(f"{label} per-command, {n} sequential commands:")
    for name, times in rows:
        print(f"  {name:<30} p50 {statistics.median(times) * us:8.0f} us   "
              f"p99 {pct(times, 0.99) * us:8.0f} us   mean {statistics.fmean(times) * us:8.0f} us")
    base = rows[0][1]
    for name, times in rows[1:]:
        print(f"  overhead of {name:<18} p50 {(statistics.median(times) - statistics.median(base)) * 1e3:.2f} ms"
              f"   p99 {(pct(times, 0.99) - pct(base, 0.99)) * 1e3:.2f} ms   "
              f"({statistics.median(times) / statistics.median(base):.0f}x at p50)")


async def time_orders(driver: Any, make: Any, n: int, warm: int = 5) -> list[float]:
    sink = lambda f, v: None  # noqa: E731
    for i in range(warm):
        await driver.execute(make(-i - 1), sink)
    times = []
    for i in range(n):
        t = time.perf_counter()
        await driver.execute(make(i), sink)
        times.append(time.perf_counter() - t)
    return times


async def zero_duration_simulated(capability: str) -> Any:
    """The in-process simulated driver offering ``capability`` with no duration, connected."""
    cell = parse_workcell(f"instruments:\n  - id: Sim\n    kind: LiquidHandler\n    driver: simulated\n"
                          f"    capabilities: {{{capability}: {{duration: 0s, jitter: 0s}}}}\n", "sim.yaml")
    sim = build_drivers(cell, SystemClock(), seed=1)["Sim"]
    await sim.connect()
    return sim


async def madsci_overhead(n: int) -> None:
    """Zero-duration ``transfer`` actions on a real MADSci node (its status polled every 10 ms)."""
    from tests.helpers.madsci_support import MadsciNode
    from tests.test_drivers_madsci import cell_text

    node = MadsciNode()
    await asyncio.to_thread(node.start)
    try:
        cell = parse_workcell(cell_text(node.url).replace("poll_interval: 0.05s", "poll_interval: 0.01s"),
                              "madsci-bench.yaml")
        madsci = build_drivers(cell, SystemClock())["LH2"]
        await madsci.connect()
        sim = await zero_duration_simulated("LiquidHandler.Transfer")

        def make(i: int) -> Order:
            return Order(identifier=f"madsci-{i}", templateName="Transfer",
                         inputParameters=[{"name": "from", "value": "A1"}, {"name": "to", "value": "B1"},
                                          {"name": "volume", "value": 1}, {"name": "duration", "value": 0}])

        s = await time_orders(sim, make, n)
        m = await time_orders(madsci, make, n)
        await madsci.disconnect()
    finally:
        await asyncio.to_thread(node.close)
    _report("MADSci", n, [("simulated driver (in process)", s), ("MADSci node (REST, 10 ms poll)", m)])


async def plr_overhead(n: int) -> None:
    """Single-well transfers through PyLabRobot's chatterbox backend (tip pick-up, aspirate,
    dispense, tip drop: what PLR itself does per transfer, with no machine behind it)."""
    import io
    from contextlib import redirect_stdout

    from tests.test_drivers_plr import lh_text

    with tempfile_dir() as tmp:
        path = Path(tmp) / "plr.yaml"
        path.write_text(lh_text())
        from core.workcell import load_workcell

        cell = load_workcell(path)
        plr = build_drivers(cell, SystemClock())["LH1"]
        with redirect_stdout(io.StringIO()):
            await plr.connect()
        sim = await zero_duration_simulated("LiquidHandler.Transfer")
        wells = [f"{r}{c}" for c in range(1, 13) for r in "ABCDEFGH"]

        def make(i: int) -> Order:
            well = wells[i % len(wells)]
            return Order(identifier=f"plr-{i}", templateName="LiquidHandler.Transfer",
                         inputParameters=[{"name": "from", "value": "source"}, {"name": "well", "value": "A1"},
                                          {"name": "to", "value": "dest"}, {"name": "wells", "value": well},
                                          {"name": "volume", "value": 1}])

        s = await time_orders(sim, make, n)
        with redirect_stdout(io.StringIO()):
            p = await time_orders(plr, make, n)
            await plr.disconnect()
    _report("PyLabRobot", n, [("simulated driver (in process)", s), ("PyLabRobot (chatterbox)", p)])


@contextlib.contextmanager
def tempfile_dir() -> Any:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="drivers-bench-") as tmp:
        yield tmp


async def sila_part(args: argparse.Namespace) -> None:
    import tempfile

    logging.getLogger("core.drivers.sila").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="sila-bench-") as tmp:
        if args.only != "mixed":
            await sila_overhead(args.commands, Path(tmp))
            await sila_stream(args.sila, args.seconds, Path(tmp))
        if args.only in (None, "mixed"):  # both kinds at once, as a mixed workcell runs them
            await sila_stream(args.sila, args.seconds, Path(tmp), agents=args.agents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sila", type=int, default=8, help="SiLA instruments streaming progress")
    parser.add_argument("--only", choices=["agents", "sila", "mixed", "madsci", "plr"], default=None,
                        help="agents: parts 1-3; sila: parts 4-5 without agents; mixed: part 5 with "
                             "agents; madsci: part 6; plr: part 7")
    parser.add_argument("--no-settle", action="store_true",
                        help="keep connected instruments' objects in full GC passes (core/gcpolicy.py off)")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger("core.drivers.agent").setLevel(logging.ERROR)  # agents leaving at the end
    logging.getLogger("labconsole.agent").setLevel(logging.ERROR)
    if args.child:
        asyncio.run(child(args.child, args.agents))
        return
    gcpolicy.enable(not args.no_settle)  # the console's policy (console/app.py)
    if args.only == "madsci":
        asyncio.run(madsci_overhead(max(20, args.commands // 3)))
        return
    if args.only == "plr":
        asyncio.run(plr_overhead(min(args.commands, 90)))  # one tip rack: 96 transfers
        return
    if args.only not in ("sila", "mixed"):
        asyncio.run(overhead(args.commands))
        asyncio.run(fleet(args.agents, args.seconds))
    if args.only != "agents":
        asyncio.run(sila_part(args))


if __name__ == "__main__":
    main()
