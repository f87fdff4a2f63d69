"""Where Data Services is: --data-services-url > LABCONSOLE_DATA_SERVICES_URL > config.ini."""

from __future__ import annotations

import pytest

from core.dataservices import resolve_url, url_from_ini
from core.errors import ConfigError

INI = """# site settings
[GENERAL]
site = Lab 3

[DATA SERVICES]
url = http://10.0.0.234:8105/
"""


def test_config_ini_as_biosero_sites_write_it(tmp_path):
    ini = tmp_path / "config.ini"
    ini.write_text(INI)
    settings = url_from_ini(ini)
    assert settings is not None
    assert settings.url == "http://10.0.0.234:8105"  # trailing slash dropped
    assert settings.source == f"{ini}:6"


def test_flag_beats_environment_beats_file(tmp_path):
    ini = tmp_path / "config.ini"
    ini.write_text(INI)
    env = {"LABCONSOLE_DATA_SERVICES_URL": "http://ds-env:30081"}
    assert resolve_url(None, config_file=ini, environ={}).url == "http://10.0.0.234:8105"
    chosen = resolve_url(None, config_file=ini, environ=env)
    assert (chosen.url, chosen.source) == ("http://ds-env:30081", "LABCONSOLE_DATA_SERVICES_URL")
    chosen = resolve_url("https://ds-flag:8105", config_file=ini, environ=env)
    assert (chosen.url, chosen.source) == ("https://ds-flag:8105", "--data-services-url")
    assert resolve_url(None, config_file=tmp_path / "absent.ini", environ={}) is None
    assert resolve_url(None, environ={}) is None
    assert resolve_url(None, config_file=ini, environ={"LABCONSOLE_DATA_SERVICES_URL": " "}).url \
        == "http://10.0.0.234:8105"


def test_a_bad_url_in_config_ini_names_file_field_and_line(tmp_path):
    ini = tmp_path / "config.ini"
    ini.write_text("[GENERAL]\nsite = 3\n\n[Data Services]\n; where DS lives\nURL = 10.0.0.234:8105\n")
    with pytest.raises(ConfigError) as err:
        url_from_ini(ini)
    problem = err.value.problems[0]
    assert (problem.where.file, problem.where.field, problem.where.line) == (
        str(ini), "DATA SERVICES.url", 6)
    assert "not an http:// or https:// URL" in str(err.value)
    assert f"{ini}:6" in str(err.value)


@pytest.mark.parametrize(("value", "says"), [
    ("http://host:8105/api/v2.0", "has a path"),
    ("http://host:70000", "invalid port"),
    ("http://user:pw@host:8105", "user info"),
    ("", "is empty"),
    ("http:///nohost", "no host"),
])
def test_each_kind_of_bad_url_says_what_is_wrong(tmp_path, value, says):
    ini = tmp_path / "config.ini"
    ini.write_text(f"[DATA SERVICES]\nurl = {value}\n")
    with pytest.raises(ConfigError, match=says) as err:
        url_from_ini(ini)
    assert err.value.problems[0].where.line == 2


def test_bad_flag_and_environment_values_name_their_source():
    with pytest.raises(ConfigError) as err:
        resolve_url("localhost:8105", environ={})
    assert err.value.problems[0].where.field == "--data-services-url"
    with pytest.raises(ConfigError) as err:
        resolve_url(None, environ={"LABCONSOLE_DATA_SERVICES_URL": "ftp://x"})
    assert err.value.problems[0].where.field == "LABCONSOLE_DATA_SERVICES_URL"


def test_a_malformed_config_ini_names_the_line(tmp_path):
    ini = tmp_path / "config.ini"
    ini.write_text("[DATA SERVICES]\nurl = http://h:8105\nthis line has no equals sign\n")
    with pytest.raises(ConfigError) as err:
        url_from_ini(ini)
    assert err.value.problems[0].where.line == 3 and str(ini) in str(err.value)
    ini.write_text("url = http://h:8105\n")
    with pytest.raises(ConfigError, match=r"\[SECTION\] header") as err:
        url_from_ini(ini)
    assert err.value.problems[0].where.line == 1
    ini.write_text("[DATA SERVICES]\nurl = http://a:1\nurl = http://b:2\n")
    with pytest.raises(ConfigError, match="given twice") as err:
        url_from_ini(ini)
    assert err.value.problems[0].where.line == 3


def test_no_data_services_section_means_not_configured(tmp_path):
    ini = tmp_path / "config.ini"
    ini.write_text("[GENERAL]\nsite = 3\n")
    assert url_from_ini(ini) is None
