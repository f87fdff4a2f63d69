"""The handlers of the workflow-engine documentation's "schedule_generation" example.

``validate_input`` checks a date range; ``generate_schedule`` plans one plate-reading slot per
day of it (what a lab would schedule over such a range)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any


def _day(input_data: dict[str, Any], key: str) -> date:
    value = input_data.get(key)
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{key} must be a date YYYY-MM-DD, got {value!r}") from None


async def validate_input(input_data: dict[str, Any]) -> dict[str, Any]:
    start = _day(input_data, "start_date")
    end = _day(input_data, "end_date") if input_data.get("end_date") else start
    if end < start:
        raise ValueError(f"end_date {end} is before start_date {start}")
    days = (end - start).days + 1
    return {"success": True, "result": {"start_date": start.isoformat(), "end_date": end.isoformat(),
                                        "days": days}, "message": "Input validated"}


def generate_schedule(input_data: dict[str, Any]) -> dict[str, Any]:
    checked = input_data.get("result") or {}
    start = date.fromisoformat(checked.get("start_date") or str(input_data["start_date"]))
    days = int(checked.get("days", 1))
    slots = [(start + timedelta(days=i)).isoformat() for i in range(days)]
    return {"success": True, "result": {"slots": len(slots), "first": slots[0], "last": slots[-1]},
            "message": f"Scheduled {len(slots)} daily slots"}
