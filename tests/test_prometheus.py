"""Prometheus metrics of a console: enabled in config.ini, scraped over 127.0.0.1 from a running
headless console while it works orders of a standalone Data Services (real processes)."""

from __future__ import annotations

import asyncio
import time

import fleetkit
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.dataservices.client import DataServicesClient
from core.errors import ConfigError
from core.orders import Order, OrderStatus, Parameter
from core.prometheus import settings_from_ini


def test_a_console_serves_its_metrics_when_config_ini_says_so(tmp_path):
    port = fleetkit.free_port()
    (tmp_path / "cell-1").mkdir()
    (tmp_path / "cell-1" / "config.ini").write_text(f"[METRICS]\nprometheus_port = {port}\n")
    ds, url = fleetkit.data_services(tmp_path)
    procs = [ds]
    try:
        procs.append(fleetkit.console(tmp_path, "cell-1", url, "reader", speed=400, lease=5))

        async def work() -> None:
            async with DataServicesClient(url) as c:
                ids = [await c.create_order(Order(templateName="Fleet Read", inputParameters=[
                    Parameter(name="plate", value=f"P{i}")])) for i in range(4)]
                deadline = time.monotonic() + 60
                while not all([(await c.get_order(i)).status is OrderStatus.Complete for i in ids]):
                    assert time.monotonic() < deadline, "orders not complete within 60 s"
                    await asyncio.sleep(0.2)

        asyncio.run(work())
        time.sleep(1.5)  # one more snapshot
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        for p in reversed(procs):
            p.stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("labconsole_orders_finished_total", (("status", "Complete"),))] >= 4
    assert samples[("labconsole_step_duration_seconds_count", (("capability", "PlateReader.ReadPlate"),))] >= 4
    # a read takes 20 s of simulated time
    assert samples[("labconsole_step_duration_seconds_sum", (("capability", "PlateReader.ReadPlate"),))] >= 4 * 15
    assert samples[("labconsole_instrument_state", (("instrument", "Reader1"), ("state", "Ready")))] == 1
    assert samples[("labconsole_queue_depth", ())] == 0
    assert ("labconsole_outbox_depth", ()) in samples and ("labconsole_claimed_unstarted", ()) in samples
    assert samples[("labconsole_loop_lag_seconds", ())] >= 0


def test_a_bad_metrics_port_is_refused_with_its_line(tmp_path):
    bad = tmp_path / "config.ini"
    bad.write_text("[STORE]\nbackup_keep = 3\n\n[METRICS]\nprometheus_port = 99999\n")
    with pytest.raises(ConfigError, match=r"config.ini:5: METRICS.prometheus_port"):
        settings_from_ini(bad)
    assert settings_from_ini(tmp_path / "none.ini") is None
