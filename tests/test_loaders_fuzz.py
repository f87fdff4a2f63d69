"""Property tests: whatever a file or a cron string holds, loading ends in a value or a located
error (core.errors), never another exception."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import ConfigError, InputError, TemplateError, WorkcellError
from core.schedules import CRON_HORIZON_YEARS, Frequency, Schedule, check_schedule, cron_problem
from core.templates import (
    RetryPolicy,
    WorkflowTemplate,
    dump_template,
    load_template,
    parse_template,
)
from core.workcell import Workcell, parse_workcell

SCALE = max(1, int(os.environ.get("LABCONSOLE_FUZZ_SCALE", "1")))
"""Examples multiplier: ``make reliability`` runs these properties with 10 times the examples."""
FAST = settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 200), st.integers(), st.floats(allow_nan=True),
                    st.just(10**400),
                    st.sampled_from(["", "noop", "delay", "a", "b", "Kind.Cmd", "5m", "three", "1h30m",
                                     "input_data.x", "step_outputs.a.y", "context.run_id",
                                     "input_data['x'] > 1", "0 0 30 2 *", "0 9 * * 1-5", "simulated",
                                     "10%", "abort", "pause", "parallel", "PlateReader.ReadPlate"]),
                    st.text(max_size=8))


def values(keys: list[str]) -> st.SearchStrategy:
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=5), st.integers(0, 3)),
                        inner, max_size=5)), max_leaves=12)


STEP_KEYS = ["id", "name", "kind", "handler", "run", "task_type", "depends_on", "dependencies",
             "on_complete", "retries", "max_retries", "retry_policy", "timeout", "timeout_seconds",
             "condition", "input_mapping", "parameters", "reserve", "restrict_to", "execution_mode",
             "estimated_duration", "position", "idempotent", "module_restriction", "max_attempts",
             "non_retryable", "initial_interval"]
TOP_KEYS = ["name", "version", "description", "tags", "inputs", "definition", "steps", "tasks", "config",
            "error_handlers", "default_timeout_seconds", "failure_policy", "max_recovery_attempts",
            "default_retry_policy", "schedule", "starting_task", "retries", "type", "default"]


def step_like() -> st.SearchStrategy:
    return st.dictionaries(st.sampled_from(STEP_KEYS), values(STEP_KEYS), max_size=6)


def template_like() -> st.SearchStrategy:
    steps = st.one_of(st.lists(st.one_of(step_like(), scalars), max_size=4), values(STEP_KEYS))
    return st.fixed_dictionaries(
        {"name": st.one_of(st.just("T"), scalars)},
        optional={"steps": steps, "tasks": steps, "definition": st.one_of(
                      st.fixed_dictionaries({"steps": steps}, optional={
                          k: values(TOP_KEYS) for k in ("error_handlers", "default_retry_policy",
                                                        "default_timeout_seconds", "failure_policy")}),
                      scalars),
                  "config": st.one_of(st.dictionaries(st.sampled_from(
                      ["starting_task", "timeout", "retries", "schedule"]), values(STEP_KEYS), max_size=4),
                      scalars),
                  "inputs": values(TOP_KEYS), "tags": values(TOP_KEYS), "schedule": values(TOP_KEYS),
                  "version": values(TOP_KEYS), "max_recovery_attempts": values(TOP_KEYS)})


def _located(error: InputError) -> None:
    assert error.problems, str(error)
    for p in error.problems:
        assert p.where.file and p.message, str(error)


def _dump(data: object, as_json: bool) -> str:
    if as_json:
        return json.dumps(data, allow_nan=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@FAST
@given(template_like(), st.booleans())
def test_any_template_shape_loads_or_is_refused_with_located_problems(data, as_json):
    try:
        result = parse_template(_dump(data, as_json), "fuzz.json" if as_json else "fuzz.yaml")
    except TemplateError as exc:
        _located(exc)
    else:
        assert isinstance(result, WorkflowTemplate)


@FAST
@given(st.text(max_size=200))
def test_any_text_as_a_template_loads_or_is_refused(text):
    for file in ("fuzz.yaml", "fuzz.json"):
        try:
            parse_template(text, file)
        except TemplateError as exc:
            _located(exc)


INSTRUMENT_KEYS = ["id", "name", "kind", "driver", "capabilities", "options", "max_concurrent", "tags",
                   "enabled", "vendor", "duration", "jitter", "outputs", "of", "reduce", "type", "count",
                   "min", "max", "faults", "connect_time", "host", "port", "url", "from_input"]


def workcell_like() -> st.SearchStrategy:
    instrument = st.fixed_dictionaries(
        {"id": st.one_of(st.just("PR1"), scalars), "kind": st.one_of(st.just("PlateReader"), scalars),
         "driver": st.one_of(st.just("simulated"), values(INSTRUMENT_KEYS)),
         "capabilities": st.one_of(st.dictionaries(st.one_of(st.just("PlateReader.ReadPlate"), scalars),
                                                   values(INSTRUMENT_KEYS), max_size=3),
                                   values(INSTRUMENT_KEYS))},
        optional={k: values(INSTRUMENT_KEYS) for k in ("options", "max_concurrent", "name", "tags")})
    return st.fixed_dictionaries(
        {"instruments": st.one_of(st.lists(st.one_of(instrument, scalars), max_size=3), scalars)},
        optional={"name": scalars, "seed": scalars, "heartbeat_interval": scalars, "stale_timeout": scalars,
                  "step_types": values(["capability", "parameters", "description"])})


@FAST
@given(workcell_like(), st.booleans())
def test_any_workcell_shape_loads_or_is_refused_with_located_problems(data, as_json):
    try:
        result = parse_workcell(_dump(data, as_json), "fuzz.json" if as_json else "fuzz.yaml")
    except WorkcellError as exc:
        _located(exc)
    else:
        assert isinstance(result, Workcell)


CRON_FIELD = st.one_of(
    st.sampled_from(["*", "0", "1", "15", "29", "30", "31", "L", "1-5", "*/15", "2,4,6", "mon", "jan",
                     "5#5", "15W", "?", "H", "60", "-1", "32", "0-0", "*/0", "7", "13", "feb", "1-31/99"]),
    st.text(alphabet="0123456789*/,-LW#?", min_size=1, max_size=5))


@settings(max_examples=400 * SCALE, deadline=None)
@given(st.lists(CRON_FIELD, min_size=4, max_size=7).map(" ".join))
def test_a_cron_is_refused_with_its_field_or_fires_within_the_horizon(cron):
    try:
        s = check_schedule(Schedule("T", Frequency.CRON, cron=cron))
    except ConfigError as exc:
        assert [p.where.field for p in exc.problems] == ["cron"], str(exc)
        assert cron_problem(cron) is not None
        return
    now = time.time()
    nxt = s.next_after(now)  # accepted means it fires, and soon enough
    assert nxt is not None and now < nxt <= now + 366 * 86400 * CRON_HORIZON_YEARS
    assert datetime.fromtimestamp(nxt, UTC)


SAMPLES = sorted((Path(__file__).resolve().parent.parent / "resources" / "templates").iterdir())


@st.composite
def sample_variants(draw: st.DrawFn) -> WorkflowTemplate:
    """A sample template with some of each step's optional fields set at random."""
    template = load_template(draw(st.sampled_from(SAMPLES)))
    steps = []
    for step in template.steps:
        changes = draw(st.fixed_dictionaries({}, optional={
            "execution_mode": st.sampled_from(["sequential", "parallel", "exclusive"]),
            "idempotent": st.booleans(),
            "timeout": st.floats(0.5, 1e6),
            "estimated_duration": st.floats(0, 1e6),
            "module_restriction": st.sampled_from(["NoRestriction", "UnlessBusy", "FullRestriction"]),
            "position": st.tuples(st.floats(-1e4, 1e4), st.floats(-1e4, 1e4)),
            "retry_policy": st.builds(RetryPolicy, max_attempts=st.integers(1, 100),
                                      initial_interval=st.floats(0, 600), jitter=st.floats(0, 1)),
            "name": st.text(max_size=12),
        }))
        steps.append(step.model_copy(update=changes))
    return template.model_copy(update={"steps": tuple(steps)})


@settings(max_examples=100 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sample_variants(), st.sampled_from([".yaml", ".json"]))
def test_load_dump_load_is_identity(tmp_path, template, suffix):
    out = tmp_path / f"copy{suffix}"
    dump_template(template, out)
    once = load_template(out)
    assert once == template
    dump_template(once, out)
    assert load_template(out) == once


def test_names_with_yaml_line_break_characters_survive_export(tmp_path):
    """U+0085 (NEL), U+2028 and U+2029 are line breaks to YAML: export quotes and escapes them."""
    from core.templates import template_from_dict

    for odd in ("\x85", "a\u2028b", "tab\there", "x\u2029"):
        t = template_from_dict({"name": "Odd", "definition": {"steps": [
            {"id": "s", "name": odd, "kind": "noop"}]}})
        out = tmp_path / "odd.yaml"
        dump_template(t, out)
        assert load_template(out) == t, repr(odd)
