from __future__ import annotations

from datetime import timedelta

import pydantic
import pytest

from core.durations import Duration, DurationError, format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    (90, 90.0), (1.5, 1.5), ("90", 90.0), ("1.5", 1.5), ("30s", 30.0), ("5m", 300.0),
    ("5min", 300.0), ("1h", 3600.0), ("250ms", 0.25), ("1h30m", 5400.0), ("1h 30m", 5400.0),
    ("2m30s", 150.0), (".5s", 0.5), ("2 days", 172800.0), ("00:05:00", 300.0),
    ("1.02:00:00", 93600.0), ("00:00:01.5", 1.5), (timedelta(minutes=2), 120.0), (0, 0.0),
    (" 10S ", 10.0),
])
def test_parses_numbers_units_and_timespans(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "fragment"), [
    ("5 parsecs", "unknown unit 'parsecs'"), ("abc", "bad duration 'abc'"), ("", "empty"),
    ("-1", "negative"), (-2, "negative"), ("inf", "finite"), (float("nan"), "finite"),
    (True, "got True"), (None, "NoneType"), ("5m garbage", "bad duration"),
    ("00:75:00", "below 60"), ([5], "list"),
])
def test_rejects_with_a_message_that_quotes_the_value(value, fragment):
    with pytest.raises(DurationError) as info:
        parse_duration(value)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("seconds", [0.25, 1.5, 30, 90, 5400, 93784])
def test_format_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_is_short():
    assert format_duration(0.25) == "250ms"
    assert format_duration(90) == "1m30s"
    assert format_duration(5400) == "1h30m"


def test_duration_field_type_reports_the_field():
    class Step(pydantic.BaseModel):
        timeout: Duration = 30.0

    assert Step(timeout="5m").timeout == 300.0
    assert Step().timeout == 30.0
    with pytest.raises(pydantic.ValidationError) as info:
        Step(timeout="soon")
    error = info.value.errors()[0]
    assert error["loc"] == ("timeout",)
    assert "bad duration 'soon'" in error["msg"]


def test_an_integer_beyond_any_float_is_a_duration_error():
    with pytest.raises(DurationError, match="must be finite"):
        parse_duration(10**400)
