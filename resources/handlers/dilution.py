"""Dilution volumes from a plate read: how much sample and diluent each well needs so that every
well ends at the target optical density (OD) in the same final volume."""

from __future__ import annotations

from typing import Any


def compute_volumes(input_data: dict[str, Any]) -> dict[str, Any]:
    """From ``well_values`` (ODs, e.g. a plate reader's output), ``target_od`` (default 0.5) and
    ``final_volume_ul`` (default 200): per-well sample and diluent volumes in µL.

    A well at or below the target keeps its full volume of sample (no diluent)."""
    values = input_data.get("well_values")
    if not isinstance(values, list) or not values:
        raise ValueError("well_values must be a non-empty list of optical densities")
    target = float(input_data.get("target_od", 0.5))
    final = float(input_data.get("final_volume_ul", 200.0))
    if target <= 0 or final <= 0:
        raise ValueError("target_od and final_volume_ul must be positive")
    sample, diluent = [], []
    for i, od in enumerate(values):
        if not isinstance(od, int | float) or isinstance(od, bool) or od < 0:
            raise ValueError(f"well_values[{i}] = {od!r} is not an optical density")
        part = final if od <= target else round(final * target / od, 1)
        sample.append(part)
        diluent.append(round(final - part, 1))
    return {
        "sample_volumes_ul": sample,
        "diluent_volumes_ul": diluent,
        "total_diluent_ul": round(sum(diluent), 1),
        "wells_to_dilute": sum(1 for d in diluent if d > 0),
    }
