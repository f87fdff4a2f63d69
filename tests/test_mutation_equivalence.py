"""The mutation run sets aside mutants that only change the case of an SQL statement (SQLite reads
keywords and names in any case), and only those: a case change in a quoted SQL value or in any other
string is a mutant a test must kill."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutation():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("mutation_run", ROOT / "bench" / "reliability" / "mutation.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ORIGINAL = '''
class Store:
    def xǁStoreǁcount__mutmut_orig(self, conn, status):
        return conn.execute("SELECT count(*) FROM orders WHERE status = ?", (status,)).fetchone()

    def xǁStoreǁcount__mutmut_{n}(self, conn, status):
        return conn.execute({mutated}, (status,)).fetchone()


def x_canceled__mutmut_orig(conn):
    return conn.execute("UPDATE runs SET status = 'Canceled' WHERE status = 'Running'")


def x_canceled__mutmut_{m}(conn):
    return conn.execute({value})


def x_label__mutmut_orig(status):
    return "Running" if status else "Idle"


def x_label__mutmut_1(status):
    return "RUNNING" if status else "Idle"
'''


def mutants_of(tmp_path: Path, source: str) -> Path:
    (tmp_path / "mutants" / "core").mkdir(parents=True)
    (tmp_path / "mutants" / "core" / "fake.py").write_text(source)
    return tmp_path


@pytest.mark.parametrize(("mutated", "equivalent"), [
    ('"select count(*) from orders where status = ?"', True),
    ('"SELECT COUNT(*) FROM ORDERS WHERE STATUS = ?"', True),
    ('"XXSELECT count(*) FROM orders WHERE status = ?XX"', False),
    ('"SELECT count(*) FROM orders WHERE status != ?"', False),
])
def test_keyword_and_name_case_is_equivalent_anything_else_is_not(tmp_path: Path, mutation, mutated: str,
                                                                  equivalent: bool) -> None:
    work = mutants_of(tmp_path, ORIGINAL.format(n=3, mutated=mutated, m=2,
                                                value='"update runs set status = \'Canceled\' where status = \'Running\'"'))
    found = mutation.equivalent_mutants(work, ["core.fake.xǁStoreǁcount__mutmut_3", "core.fake.x_canceled__mutmut_2",
                                               "core.fake.x_label__mutmut_1"])
    assert ("core.fake.xǁStoreǁcount__mutmut_3" in found) is equivalent
    assert "core.fake.x_canceled__mutmut_2" in found  # keywords only: the quoted values kept their case
    assert "core.fake.x_label__mutmut_1" not in found  # not SQL: "Running" and "RUNNING" differ


def test_a_quoted_value_in_another_case_is_a_real_mutant(tmp_path: Path, mutation) -> None:
    work = mutants_of(tmp_path, ORIGINAL.format(n=3, mutated='"SELECT count(*) FROM orders WHERE status = ?"', m=2,
                                                value='"UPDATE RUNS SET STATUS = \'CANCELED\' WHERE STATUS = \'RUNNING\'"'))
    assert mutation.equivalent_mutants(work, ["core.fake.x_canceled__mutmut_2"]) == set()


def test_an_unknown_module_or_function_is_never_set_aside(tmp_path: Path, mutation) -> None:
    work = mutants_of(tmp_path, ORIGINAL.format(n=3, mutated='"select count(*) from orders where status = ?"', m=2,
                                                value='"x"'))
    assert mutation.equivalent_mutants(work, ["core.other.x_f__mutmut_1", "core.fake.x_gone__mutmut_1"]) == set()
