"""Compatible template versions in config.ini (``[DATA SERVICES] compatible``): parsed with their
line, refused with a located error when bad, and honoured when orders are routed."""

from __future__ import annotations

import asyncio

import fleetkit
import pytest

from core.dataservices.config import DataServicesSettings, compatible_from_ini
from core.dataservices.link import DataServicesLink
from core.errors import ConfigError
from core.orders import Order
from core.runtime import Runtime
from core.store import DB_FILENAME, Store


def test_ranges_are_read_per_template_case_blind(tmp_path):
    ini = tmp_path / "config.ini"
    ini.write_text("[DATA SERVICES]\nurl = http://10.0.0.5:8105\n"
                   "compatible = Cell Prep>=2,<4; Plate Read == 3\n    Fleet Seal>1,!=3\n")
    ranges = compatible_from_ini(ini)
    assert set(ranges) == {"cell prep", "plate read", "fleet seal"}
    assert [v for v in range(1, 7) if ranges["cell prep"].contains(str(v))] == [2, 3]
    assert [v for v in range(1, 7) if ranges["plate read"].contains(str(v))] == [3]
    assert [v for v in range(1, 7) if ranges["fleet seal"].contains(str(v))] == [2, 4, 5, 6]
    assert compatible_from_ini(tmp_path / "none.ini") == {}
    (tmp_path / "empty.ini").write_text("[DATA SERVICES]\nurl = http://10.0.0.5:8105\n")
    assert compatible_from_ini(tmp_path / "empty.ini") == {}


@pytest.mark.parametrize(("value", "says"), [
    ("Cell Prep", "'Cell Prep' has no version range"),
    (">=2", "names no template"),
    ("Cell Prep>=two", "Cell Prep: '>=two' is not a version range"),
    ("Cell Prep>=2.5", "template versions are whole numbers"),
    ("Cell Prep~=2", "is not a version range"),
    ("Cell Prep>=4,<2", "Cell Prep: '>=4,<2' matches no version"),
    ("Cell Prep<1", "matches no version"),
    ("Cell Prep>=2; cell prep==5", "cell prep is given twice"),
])
def test_a_bad_range_is_refused_naming_the_file_line_and_entry(tmp_path, value, says):
    ini = tmp_path / "config.ini"
    ini.write_text(f"[DATA SERVICES]\nmodule_id = cell-1\n\ncompatible = {value}\n")
    with pytest.raises(ConfigError) as refused:
        compatible_from_ini(ini)
    message = str(refused.value)
    assert f"{ini}:4" in message and "DATA SERVICES.compatible" in message
    assert says in message


def test_a_console_runs_orders_for_the_versions_its_config_declares_compatible(tmp_path):
    ini = tmp_path / "config.ini"
    ini.write_text("[DATA SERVICES]\ncompatible = Fleet Seal>=2,<4\n")

    async def scenario():  # noqa: ANN202
        rt = Runtime.build(tmp_path, store=Store(tmp_path / DB_FILENAME).open(),
                           workcell=fleetkit.FLEET / "sealer.yaml", metrics=False)
        await rt.start(templates_dir=fleetkit.TEMPLATES, execute=False)
        try:
            link = DataServicesLink(rt, DataServicesSettings("http://127.0.0.1:9", "test"),
                                    module_id="cell-1", compatible=compatible_from_ini(ini))
            return {v: link.route(Order(templateName="Fleet Seal", templateVersion=v))
                    for v in ("1", "v2", "3", "4", "x")}
        finally:
            await rt.close()

    routes = asyncio.run(scenario())
    assert routes["1"] == ("workflow", None), "its own published version"
    assert routes["v2"] == ("workflow", None) and routes["3"] == ("workflow", None), "declared compatible"
    assert routes["4"] == (None, "asks for Fleet Seal v4")
    assert routes["x"] == (None, "asks for Fleet Seal version 'x', not a number")
