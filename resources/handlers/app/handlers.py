"""``app.handlers.conditional_handler`` of the workflow-engine documentation's conditional step."""

from __future__ import annotations

from typing import Any


def conditional_handler(input_data: dict[str, Any]) -> dict[str, Any]:
    """Runs only when the previous step succeeded (the template's condition says so)."""
    return {"success": True, "message": "ran after a successful step"}
