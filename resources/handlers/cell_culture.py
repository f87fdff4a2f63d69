"""Handlers of the cell-culture templates (Cell Prep, Cell Culture Workflow)."""

from __future__ import annotations

from typing import Any


def prepared_plates(input_data: dict[str, Any]) -> dict[str, Any]:
    """The plates seeded: one per requested plate, as "Prepared Plates" (the name Biosero's
    OrderScheduler example reads back), with the cell type and density used."""
    count = int(input_data.get("Plate Count", 1))
    if count < 1:
        raise ValueError(f"Plate Count must be at least 1, got {count}")
    return {"Prepared Plates": count, "Cell Type": str(input_data.get("Cell Type", "")),
            "Cell Density": float(input_data.get("Cell Density", 0.0))}
