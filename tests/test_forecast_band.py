"""Forecast band: the p10-p90 band of a run's completion holds about 80 % of outcomes.

A band that an operator reads as "80 % sure" must hold about 80 % of what happens: the error of
a mean learned from a few samples is shared by every step of a queue (it does not average out),
the dispatcher serves runs under way before new ones, and p10/p90 read from a few plays must not
narrow the band."""

from __future__ import annotations

import random

import numpy as np

from core.durations_model import DurationsModel
from core.forecast import InstrumentState, RunState, Snapshot, StepState, _band, forecast
from core.states import StepStatus
from core.templates import template_from_dict
from core.workcell import parse_workcell

NOW = 1_800_000_000.0
CELL = """
name: band cell
seed: 5
instruments:
  - {id: Centrifuge, kind: Centrifuge, driver: simulated, options: {connect_time: 0s},
     capabilities: {Centrifuge.Spin: {duration: 5m, jitter: 10s}}}
  - {id: Reader, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 60s, jitter: 0s}}}
"""
SPIN = template_from_dict({"name": "Spin", "version": 1, "definition": {"steps": [
    {"id": "spin", "kind": "Centrifuge.Spin"}]}})
TWO_READS = template_from_dict({"name": "Two reads", "version": 1, "definition": {"steps": [
    {"id": "a", "kind": "PlateReader.ReadPlate"},
    {"id": "b", "kind": "PlateReader.ReadPlate", "depends_on": ["a"]}]}})
CENTRIFUGE = (InstrumentState("Centrifuge", ("Centrifuge.Spin",)),)
READER = (InstrumentState("Reader", ("PlateReader.ReadPlate",)),)


def test_a_queue_on_a_duration_learned_from_few_samples_is_inside_the_band_about_80_percent():
    """Spins take 290-310 s (uniform); the model has seen six; ten plates wait for the one
    centrifuge. Over 40 such shifts the actual completion of every plate is inside its band about
    80 % of the time (independent draws alone hold about half: the learned mean's error is the
    same for all ten spins)."""
    truth = random.Random(11)
    inside = total = 0
    for trial in range(40):
        model = DurationsModel(parse_workcell(CELL))
        for _ in range(6):
            model.observe(truth.uniform(290, 310), capability="Centrifuge.Spin", instrument="Centrifuge",
                          template="Spin", step="spin")
        runs = tuple(RunState(f"r{k}", SPIN, "running", 50, NOW - 100 + k, {}, {}) for k in range(10))
        result = forecast(Snapshot(NOW, runs, CENTRIFUGE), model, samples=16, seed=trial)
        done = NOW
        for k in range(10):
            done += truth.uniform(290, 310)
            eta = result.runs[f"r{k}"]
            inside += eta.p10 <= done <= eta.p90
            total += 1
    coverage = inside / total
    assert 0.65 <= coverage <= 0.95, f"actual completion inside p10-p90 for {coverage:.0%} of predictions"


def test_a_run_under_way_takes_the_instrument_before_a_new_run_created_earlier():
    """As the dispatcher serves it: steps of runs under way before the first steps of new runs."""
    new = RunState("new", TWO_READS, "running", 50, NOW - 100, {}, {})
    under_way = RunState("under_way", TWO_READS, "running", 50, NOW - 50, {}, {
        "a": StepState("a", StepStatus.COMPLETED, started=NOW - 45, ended=NOW - 1)})
    result = forecast(Snapshot(NOW, (new, under_way), READER), DurationsModel(parse_workcell(CELL)), samples=2)
    assert result.runs["under_way"].p50 == NOW + 60
    assert result.runs["new"].p50 == NOW + 180


def test_the_band_read_from_16_plays_spans_80_percent_of_the_distribution_on_average():
    """p10 and p90 of 16 plays of a uniform 0..1 end: the span between them is 0.8 on average
    (the usual interpolation between ranks gives about 0.71)."""
    rng = np.random.default_rng(3)
    widths = [p90 - p10 for p10, _p50, p90 in _band(rng.random((4000, 16)).tolist())]
    assert 0.78 <= float(np.mean(widths)) <= 0.82
