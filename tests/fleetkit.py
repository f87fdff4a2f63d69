"""Fleet tests: a standalone Data Services and headless consoles as real processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.dataservices.client import DataServicesClient
from core.dataservices.leases import CLAIM_TOPIC, ClaimMark, Holding, walk
from core.orders import Order, OrderStatus
from core.store import DB_FILENAME

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CAN_RUN = {"Fleet Read": {"cell-read", "cell-both"}, "Fleet Seal": {"cell-seal", "cell-both"},
           "Fleet Read Seal": {"cell-both"}}
CELLS = {"cell-read": "reader", "cell-seal": "sealer", "cell-both": "both"}


@dataclass
class FleetRun:
    """What :func:`three_workcells` saw."""

    created: list[str]
    """The LIMS's orders, in the order it created them."""
    create_seconds: float
    """How long the LIMS took to create them."""
    seconds: float
    """From the LIMS's first create until every order was Complete (read every ``probe`` s)."""
    final: dict[str, Order]
    """Each LIMS order as the Data Services has it at the end."""
    completed_runs: Counter[str]
    """LIMS order id -> how many runs of it some console completed (its copy under the order)."""
    holders: dict[str, Holding]
    """LIMS order id -> its claim marks read in the server's order."""
    templates: dict[str, str]
    killed_at: float
    """Epoch seconds of the SIGKILL."""
    restarted_at: float
    reclaims: list[float] = field(default_factory=list)
    """Seconds from the SIGKILL to each takeover of an order the killed console held."""
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds per process while the orders ran (the killed console: both its lives)."""
    lease: float = 0.0
    log_problems: list[str] = field(default_factory=list)
    """Consoles whose output holds a traceback."""
    first_claim: dict[str, float] = field(default_factory=dict)
    """LIMS order id -> when its first claim mark was stored (epoch seconds)."""
    waited: dict[str, float] = field(default_factory=dict)
    """Seconds per process ready to run but waiting for a core (:func:`runqueue_seconds`)."""
    requests: dict[str, int] = field(default_factory=dict)
    """Requests each console sent the Data Services (the killed one: since its restart)."""
    outbox: dict[str, float] = field(default_factory=dict)
    """Seconds each console's outbox spent delivering (the killed one: since its restart)."""

    @property
    def lost(self) -> list[str]:
        return [i for i in self.created if i not in self.final or self.final[i].status is not OrderStatus.Complete]

    @property
    def doubled(self) -> list[str]:
        return [i for i in self.created if self.completed_runs[i] > 1]

    @property
    def exactly_once(self) -> int:
        return sum(1 for i in self.created if self.completed_runs[i] == 1
                   and self.final.get(i) is not None and self.final[i].status is OrderStatus.Complete)

    @property
    def wrong_cell(self) -> list[str]:
        return [i for i in self.created
                if not self.holders.get(i, Holding()).started
                or self.holders[i].module_id not in CAN_RUN[self.templates[i]]]


def _complete_lims_orders(db: Path) -> int:
    """LIMS orders Complete, read straight from the Data Services' SQLite file (read-only), so
    watching the run costs the server nothing."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM orders WHERE parent_id IS NULL AND status = ? AND "
                                "json_extract(data, '$.createdBy') = 'lims'",
                                (int(OrderStatus.Complete.value),)).fetchone()[0])
    finally:
        conn.close()


async def _evidence(url: str) -> tuple[list[Order], list[ClaimMark]]:
    async with DataServicesClient(url, timeout=60) as c:
        orders: list[Order] = []
        while True:
            page = await c.orders(limit=1000, offset=len(orders))
            orders += page
            if len(page) < 1000:
                break
        marks: list[ClaimMark] = []
        offset = 0
        while True:
            events = await c.query_events(topic=CLAIM_TOPIC, limit=5000, offset=offset)
            marks += [m for m in (ClaimMark.from_event(e) for e in events) if m is not None]
            if len(events) < 5000:
                return orders, marks
            offset += len(events)


def three_workcells(tmp: Path, orders: int, over: float, *, lease: float = 3.0, speed: float = 200.0,
                    restart_after: float | None = None, timeout: float = 180.0, probe: float = 0.5,
                    progress: Callable[[str], None] | None = None,
                    on_url: Callable[[str], None] | None = None) -> FleetRun:
    """One ``labconsole data-services``, three headless consoles (a reader cell, a sealer cell, a
    cell with both) and a LIMS (Biosero's OrderClient, in .bdm-venv) creating ``orders`` orders
    evenly over ``over`` seconds, cycling through a read, a seal and a read then seal. Once a
    quarter of them are Complete, the cell with both is SIGKILLed and restarted on its data
    directory ``restart_after`` seconds later (default: two leases and a second, so the others
    take over what it held unstarted). Returns what happened; raises AssertionError if the orders are
    not all Complete within ``timeout`` seconds of the LIMS's start. ``on_url`` is told the Data
    Services' address once it listens."""
    from helpers.bdm_support import BDM_PYTHON

    say = progress or (lambda _text: None)
    restart_after = 2 * lease + 1.0 if restart_after is None else restart_after
    ds, url = data_services(tmp)
    if on_url is not None:
        on_url(url)
    db = tmp / "ds" / DB_FILENAME
    procs: dict[str, Proc] = {}
    lims = None
    cpu: Counter[str] = Counter()
    waited: Counter[str] = Counter()
    try:
        for name, cell in CELLS.items():
            procs[name] = console(tmp, name, url, cell, speed=speed, lease=lease)
        start = {name: cpu_seconds(p.proc.pid) for name, p in procs.items()}
        start["data-services"] = cpu_seconds(ds.proc.pid)
        queued = {name: runqueue_seconds(p.proc.pid) for name, p in procs.items()}
        queued["data-services"] = runqueue_seconds(ds.proc.pid)
        t0 = time.monotonic()
        lims = subprocess.Popen([str(BDM_PYTHON), str(ROOT / "tests" / "helpers" / "fleet_lims.py"),
                                 url, str(orders), str(over)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

        def until_complete(count: int) -> None:
            last = -1
            while True:
                done = _complete_lims_orders(db)
                if done != last:
                    say(f"{time.monotonic() - t0:7.1f} s: {done} of {orders} complete")
                    last = done
                if done >= count:
                    return
                if time.monotonic() - t0 > timeout:
                    raise AssertionError(f"{done} of {count} orders complete after {timeout} s")
                time.sleep(probe)

        until_complete(orders // 4)
        cpu["cell-both"] += cpu_seconds(procs["cell-both"].proc.pid) - start.pop("cell-both")
        waited["cell-both"] += runqueue_seconds(procs["cell-both"].proc.pid) - queued.pop("cell-both")
        killed_at = time.time()
        procs["cell-both"].kill()  # mid-way, with orders claimed, running and queued
        say(f"{time.monotonic() - t0:7.1f} s: cell-both SIGKILLed; restarted in {restart_after:g} s")
        time.sleep(restart_after)
        procs["cell-both"] = console(tmp, "cell-both", url, "both", speed=speed, lease=lease)
        restarted_at = time.time()
        start["cell-both"] = cpu_seconds(procs["cell-both"].proc.pid)
        queued["cell-both"] = runqueue_seconds(procs["cell-both"].proc.pid)
        out, err = lims.communicate(timeout=max(60.0, 2 * over))
        if lims.returncode != 0:
            raise AssertionError(f"the LIMS failed: {err[-3000:]}")
        created = json.loads(out.strip().splitlines()[-1])
        until_complete(orders)
        seconds = time.monotonic() - t0
        for name, p in procs.items():
            cpu[name] += cpu_seconds(p.proc.pid) - start[name]
            waited[name] += runqueue_seconds(p.proc.pid) - queued[name]
        cpu["data-services"] += cpu_seconds(ds.proc.pid) - start["data-services"]
        waited["data-services"] += runqueue_seconds(ds.proc.pid) - queued["data-services"]
        # a console answers the LIMS's order, then its outbox delivers its own run's last
        # transitions: the run's order on Data Services may trail the answer by a round
        wanted = set(created["ids"])
        deadline = time.monotonic() + 30.0
        while True:
            everything, marks = asyncio.run(_evidence(url))
            ran = {o.parentIdentifier for o in everything if o.status is OrderStatus.Complete}
            if wanted <= ran or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        if lims is not None and lims.poll() is None:
            lims.kill()
        for p in procs.values():
            p.stop()
        ds.stop()
    by_order: dict[str, list[ClaimMark]] = {}
    for m in marks:
        by_order.setdefault(m.order_id, []).append(m)
    ids = set(created["ids"])
    runs: Counter[str] = Counter()
    for o in everything:  # each console's own run of an order is created under it, by that console
        if o.parentIdentifier in ids and o.status is OrderStatus.Complete:
            runs[o.parentIdentifier] += 1
    both = {m.instance for m in marks if m.module_id == "cell-both"}
    reclaims = [m.at - killed_at for m in marks if m.kind == "takeover" and m.previous in both]
    first_claim: dict[str, float] = {}
    for m in marks:
        if m.kind == "claim" and m.order_id in ids:
            first_claim[m.order_id] = min(first_claim.get(m.order_id, m.at), m.at)
    sent = {name: requests_sent(tmp / name / "out.log") for name in CELLS}
    busy = {name: outbox_busy(tmp / name / "out.log") for name in CELLS}
    problems = [name for name in CELLS if "Traceback" in (tmp / name / "out.log").read_text(errors="replace")]
    return FleetRun(created=list(created["ids"]), create_seconds=float(created["seconds"]), seconds=seconds,
                    final={o.identifier or "": o for o in everything if o.identifier in ids},
                    completed_runs=runs, holders={i: walk(by_order.get(i, [])) for i in ids},
                    templates=dict(created["templates"]), killed_at=killed_at, restarted_at=restarted_at,
                    reclaims=sorted(reclaims), cpu=dict(cpu), lease=lease, log_problems=problems,
                    first_claim=first_claim, waited=dict(waited),
                    requests={k: v for k, v in sent.items() if v is not None},
                    outbox={k: v for k, v in busy.items() if v is not None})


def runqueue_seconds(pid: int) -> float:
    """Seconds the threads of a process spent ready to run but waiting for a CPU (Linux
    ``/proc/PID/task/*/schedstat``; threads that ended are not counted)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def requests_sent(log: Path) -> int | None:
    """Requests a headless console sent its Data Services, from the line it prints when it stops."""
    found = re.findall(r"stopped: (\d+) requests to the Data Services", log.read_text(errors="replace"))
    return int(found[-1]) if found else None


def outbox_busy(log: Path) -> float | None:
    """Seconds a headless console's outbox spent delivering, from the line it prints when it stops."""
    found = re.findall(r"outbox delivering ([\d.]+) s of", log.read_text(errors="replace"))
    return float(found[-1]) if found else None
