"""Realistic demo orders, so the console can be seen at scale (``--demo-orders N``).

Orders are workflow runs (parent orders) with their step orders as children, spread over the last
days, in the statuses a busy workcell shows: mostly Complete, some Error and Canceled, the newest
Running, Scheduled or Created. Generation is deterministic for a given seed.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import timedelta
from typing import Any

from core import audit_chain
from core.orders import Order, OrderPriority, OrderStatus, Parameter
from core.store import Store, _next_seq, _order_row, _ts
from core.wire import now_utc

WORKFLOWS: dict[str, list[tuple[str, str]]] = {
    "Cell Culture Passage": [("Decap", "Capper"), ("Aspirate Media", "LiquidHandler"),
                             ("Dispense Media", "LiquidHandler"), ("Incubate", "Incubator")],
    "ELISA Readout": [("Move To Reader", "RobotArm"), ("Read Absorbance", "PlateReader"),
                      ("Seal", "Sealer")],
    "Plate Replication": [("Dispense", "LiquidHandler"), ("Seal", "Sealer"),
                          ("Spin Down", "Centrifuge"), ("Store", "Incubator")],
    "Compound Screen": [("Transfer Compounds", "LiquidHandler"), ("Incubate 30 min", "Incubator"),
                        ("Read Fluorescence", "PlateReader")],
}
INSTRUMENTS = {"LiquidHandler": ["Hamilton STAR 1", "Hamilton STAR 2"], "PlateReader": ["Reader 1"],
               "Incubator": ["Cytomat 1"], "RobotArm": ["PF400"], "Sealer": ["PlateLoc"],
               "Centrifuge": ["HiG4"], "Capper": ["Decapper 1"]}


def generate(store: Store, n: int, *, seed: int = 7, who: str = "demo") -> int:
    """Insert about ``n`` orders (runs and their steps) in one transaction; return how many."""
    rng = random.Random(seed)
    now = now_utc()

    def op(conn: sqlite3.Connection) -> int:
        made = 0
        rows: list[tuple[Any, ...]] = []
        transitions: list[tuple[Any, ...]] = []
        while made < n:
            name = rng.choice(list(WORKFLOWS))
            steps = WORKFLOWS[name]
            age = timedelta(minutes=rng.expovariate(1 / 600)) if made < n - 40 else timedelta(
                seconds=rng.uniform(0, 300))
            created = now - age
            fresh = age < timedelta(minutes=10)
            roll = rng.random()
            if fresh:
                run_status = rng.choice([OrderStatus.Running, OrderStatus.Scheduled, OrderStatus.Created])
            elif roll < 0.86:
                run_status = OrderStatus.Complete
            elif roll < 0.95:
                run_status = OrderStatus.Error
            else:
                run_status = OrderStatus.Canceled
            priority = OrderPriority.Elevated if rng.random() < 0.1 else OrderPriority.Standard
            run_seq = _next_seq(conn, "order")
            run = Order(identifier=f"Order_{run_seq:05d}", templateName=name, templateVersion="1",
                        status=run_status, priority=priority, creationTime=created, createdBy=who,
                        restrictToModuleIds="labconsole",
                        inputParameters=[Parameter("Plate Count", str(rng.randint(1, 8))),
                                         Parameter("Barcode", f"PL{rng.randint(10000, 99999)}")])
            run.sourceIdentifier = run.identifier
            t = created + timedelta(seconds=rng.uniform(1, 20))
            if run_status is not OrderStatus.Created:
                run.actualStartTime = t
            previous = None
            failed_at = rng.randrange(len(steps)) if run_status is OrderStatus.Error else None
            child_rows = []
            for index, (step, capability) in enumerate(steps):
                seq = _next_seq(conn, "order")
                child = Order(identifier=f"Order_{seq:05d}", parentIdentifier=run.identifier,
                              sourceIdentifier=run.identifier, runAfterIdentifier=previous,
                              templateName=f"{capability}.{step.replace(' ', '')}",
                              templateVersion="1", priority=priority, creationTime=created,
                              createdBy=run.identifier, restrictToModuleIds=capability)
                if run_status in (OrderStatus.Complete,) or (failed_at is not None and index < failed_at):
                    status = OrderStatus.Complete
                elif failed_at == index:
                    status = OrderStatus.Error
                    child.statusDetails = rng.choice(["Tip pickup failed", "Plate not detected",
                                                      "Heartbeat lost", "Door open"])
                elif run_status is OrderStatus.Running and index == 0:
                    status = OrderStatus.Running
                elif run_status is OrderStatus.Canceled:
                    status = OrderStatus.Canceled
                else:
                    status = OrderStatus.Created
                child.status = status
                if status in (OrderStatus.Complete, OrderStatus.Error, OrderStatus.Running):
                    child.assignedTo = rng.choice(INSTRUMENTS[capability])
                    child.actualStartTime = t
                    if status is not OrderStatus.Running:
                        t = t + timedelta(seconds=rng.uniform(20, 400))
                        child.actualEndTime = t
                        if status is OrderStatus.Complete:
                            child.outputParameters = [Parameter("Success", "True", "Boolean")]
                child_rows.append(child)
                previous = child.identifier
            if run_status in (OrderStatus.Complete, OrderStatus.Error, OrderStatus.Canceled):
                run.actualEndTime = t
                if run_status is OrderStatus.Error and failed_at is not None:
                    run.statusDetails = "step failed: " + (child_rows[failed_at].statusDetails or "")
            for o in [run, *child_rows]:
                npri = rng.choice([50, 50, 50, 70, 90]) if o is run else 50
                row = _order_row(o, npri)
                rows.append((o.identifier, int((o.identifier or "_0").split("_")[1]), o.parentIdentifier,
                             o.sourceIdentifier, o.runAfterIdentifier, o.templateName,
                             o.templateVersion, int(o.status), int(o.priority), npri, o.assignedTo,
                             row[8], _ts(o.scheduledStartTime), row[9], row[10],
                             now.timestamp(), o.statusDetails, o.to_json()))
                transitions.append((o.identifier, None, int(OrderStatus.Created), row[8], who, "demo"))
                if o.status is not OrderStatus.Created:
                    transitions.append((o.identifier, int(OrderStatus.Created), int(o.status),
                                        row[10] or row[9] or row[8], who, "demo"))
                made += 1
        conn.executemany(
            "INSERT INTO orders (id, seq, parent_id, source_id, run_after_id, template_name, "
            "template_version, status, priority, numeric_priority, assigned_to, created, scheduled, "
            "started, ended, updated, status_details, data) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows)
        audit_chain.insert_many(conn, "transitions", transitions)  # part of the hash chain
        return made

    return store.write_sync(op)
