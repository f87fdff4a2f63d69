"""Three workcells, one Data Services: a LIMS (Biosero's own client) creates 90 orders; every one
completes exactly once on a workcell that can run it, through a SIGKILL of one console and its
restart a lease later (the others take over what it held unstarted meanwhile).

All real processes on 127.0.0.1: ``labconsole data-services``, three ``labconsole headless``
consoles with simulated instruments on an accelerated clock (a 20 s step takes 0.1 s), and
``tests/helpers/fleet_lims.py`` in .bdm-venv (biosero-data-models' OrderClient). The same
scenario with 3,000 orders over 60 s: ``python bench/fleet.py --scenario`` (its figures are in
BENCHMARKS.md), or this test with ``LABCONSOLE_FLEET_ORDERS=3000 LABCONSOLE_FLEET_OVER=60``.
"""

from __future__ import annotations

import os

import fleetkit
from helpers.bdm_support import check_bdm_venv

ORDERS = int(os.environ.get("LABCONSOLE_FLEET_ORDERS", "90"))
OVER = float(os.environ.get("LABCONSOLE_FLEET_OVER", "5"))


def test_three_workcells_run_every_order_exactly_once_through_a_kill_and_restart(tmp_path):
    check_bdm_venv()
    run = fleetkit.three_workcells(tmp_path, ORDERS, OVER, lease=3, speed=200, timeout=180 + ORDERS)
    assert len(run.created) == ORDERS and set(run.final) == set(run.created)
    assert run.lost == [], [(i, run.final[i].status, run.final[i].statusDetails)
                            for i in run.lost if i in run.final]
    assert run.doubled == [], f"run to completion more than once: {run.doubled}"
    assert run.wrong_cell == [], [(i, run.templates[i], run.holders[i]) for i in run.wrong_cell]
    assert run.exactly_once == ORDERS
    assert run.log_problems == [], "a console's output holds a traceback"
    assert set(run.requests) == set(run.outbox) == set(fleetkit.CELLS), "each console says what it sent"
    assert all(run.requests[name] > 0 and run.outbox[name] > 0 for name in ("cell-read", "cell-seal"))
