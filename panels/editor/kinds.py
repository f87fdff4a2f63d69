"""The step kinds an editor offers, with typed parameters and known outputs (no Qt).

A :class:`KindCatalog` is built from the workcell (:meth:`KindCatalog.from_workcell`): one
:class:`KindInfo` per capability some instrument offers, plus the built-in kinds ``delay``,
``prompt`` and ``noop`` of the engine.

The workcell file describes a command's *outputs* and the inputs it reads, not a full input
schema, so parameter specs are derived from what it does say:

- ``duration_input``: a duration in seconds that replaces the nominal duration (the first name
  is the parameter, the others its aliases);
- ``outputs.*.from_input``: the first name is the parameter, the others its aliases, typed like
  the output that echoes it (the built-in simulated outputs stand in when none are declared);
- ``step_types.*.parameters``: command input names a step type maps onto.

No capability parameter is required unless the caller says so (``required=``): the workcell
format has no way to declare it. The built-in ``delay`` requires its ``seconds``, as the loader does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.drivers.simulated import DEFAULT_OUTPUTS
from core.templates import BUILTIN_KINDS
from core.workcell import OutputSpec, Workcell

__all__ = ["BUILTIN_GROUP", "KindCatalog", "KindInfo", "OutputInfo", "ParamSpec", "ParamType",
           "humanize"]

ParamType = Literal["string", "integer", "double", "boolean", "json", "duration"]
BUILTIN_GROUP = "Built-in"


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a step kind."""

    name: str
    type: ParamType = "string"
    required: bool = False
    default: Any = None
    unit: str | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    """Other names the instrument accepts for it (a step may use any of them)."""

    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class OutputInfo:
    """One output a step of this kind produces (what later steps can map from)."""

    name: str
    type: str = "double"
    unit: str | None = None


@dataclass(frozen=True)
class KindInfo:
    """A step kind: an instrument capability ``Kind.Command`` or a built-in."""

    kind: str
    title: str
    group: str
    parameters: tuple[ParamSpec, ...] = ()
    outputs: tuple[OutputInfo, ...] = ()
    instruments: tuple[str, ...] = ()
    """Ids of the instruments offering it (empty for built-ins)."""
    description: str = ""
    builtin: bool = False

    def param(self, name: str) -> ParamSpec | None:
        """The spec whose name or alias is ``name``."""
        for p in self.parameters:
            if name in p.names():
                return p
        return None

    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]


def humanize(word: str) -> str:
    """``ReadPlate`` -> ``Read plate``; ``PlateReader`` -> ``Plate reader``."""
    parts = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", word) or [word]
    text = " ".join(p if p.isupper() and len(p) > 1 else p.lower() for p in parts)
    return text[:1].upper() + text[1:]


_BUILTINS = (
    KindInfo("delay", "Delay", BUILTIN_GROUP,
             (ParamSpec("seconds", "duration", True, 60.0, "s", "How long to wait", ("duration",)),),
             (OutputInfo("waited_seconds", "double", "s"),),
             description="Wait a fixed time (settling, incubation at room temperature).", builtin=True),
    KindInfo("prompt", "Operator prompt", BUILTIN_GROUP,
             (ParamSpec("message", "string", False, "Operator action required", None,
                        "What the operator must do; the run waits until it is confirmed"),),
             description="Stop and wait for an operator to confirm.", builtin=True),
    KindInfo("noop", "No-op", BUILTIN_GROUP,
             description="Does nothing: a join point or a placeholder.", builtin=True),
)


def _param_type(output: OutputSpec) -> ParamType:
    return {"list": "json"}.get(output.type, output.type)  # type: ignore[return-value]


@dataclass
class _Builder:
    kind: str
    params: dict[str, ParamSpec] = field(default_factory=dict)
    outputs: dict[str, OutputInfo] = field(default_factory=dict)
    instruments: list[str] = field(default_factory=list)
    description: str = ""

    def known(self, name: str) -> bool:
        return any(name in p.names() for p in self.params.values())

    def add(self, spec: ParamSpec) -> None:
        if not self.known(spec.name):
            self.params[spec.name] = spec


@dataclass(frozen=True)
class KindCatalog:
    """Every step kind the editor offers, by kind name."""

    kinds: Mapping[str, KindInfo]
    capabilities: frozenset[str] | None = None
    """What the workcell offers (None: no workcell, capabilities are not checked)."""

    def get(self, kind: str) -> KindInfo | None:
        return self.kinds.get(kind)

    def groups(self) -> list[tuple[str, list[KindInfo]]]:
        """Kinds grouped for the palette: built-ins first, then by instrument kind."""
        out: dict[str, list[KindInfo]] = {BUILTIN_GROUP: []}
        for info in self.kinds.values():
            out.setdefault(info.group, []).append(info)
        ordered = [BUILTIN_GROUP, *sorted(g for g in out if g != BUILTIN_GROUP)]
        return [(g, sorted(out[g], key=lambda i: (not i.builtin, i.title)) if g != BUILTIN_GROUP
                 else out[g]) for g in ordered if out[g]]

    def outputs_of(self, kind: str) -> list[OutputInfo]:
        info = self.kinds.get(kind)
        return list(info.outputs) if info else []

    @classmethod
    def builtins(cls) -> KindCatalog:
        """Only the built-in kinds; no capability check."""
        return cls({k.kind: k for k in _BUILTINS}, None)

    @classmethod
    def from_workcell(cls, workcell: Workcell | None,
                      required: Mapping[str, Iterable[str]] | None = None) -> KindCatalog:
        """The catalog of ``workcell`` (None: built-ins only, capabilities unchecked).

        ``required`` marks parameters as required, by capability: ``{"Sealer.Seal": ["plate"]}``.
        """
        if workcell is None:
            return cls.builtins()
        builders: dict[str, _Builder] = {}
        for inst in workcell.instruments:
            for cap, spec in inst.capabilities.items():
                b = builders.setdefault(cap, _Builder(cap))
                b.instruments.append(inst.id)
                b.description = b.description or spec.description or ""
                if spec.duration_input:
                    first, *aliases = spec.duration_input
                    b.add(ParamSpec(first, "duration", unit="s", aliases=tuple(aliases),
                                    description=f"Replaces the nominal {spec.duration:g} s"))
                outputs = spec.outputs if spec.outputs is not None else DEFAULT_OUTPUTS.get(cap, {})
                for out_name, out in outputs.items():
                    b.outputs.setdefault(out_name, OutputInfo(out_name, out.type, out.unit))
                    if out.from_input:
                        first, *aliases = out.from_input
                        b.add(ParamSpec(first, _param_type(out), unit=out.unit,
                                        description=out.description or f"Echoed as output '{out_name}'",
                                        aliases=tuple(aliases)))
                b.outputs.setdefault("Success", OutputInfo("Success", "boolean"))
        for step_type in workcell.step_types.values():
            found = builders.get(step_type.capability)
            if found is not None:
                for command_input in step_type.parameters.values():
                    found.add(ParamSpec(command_input, "string"))
        needed = {cap: set(names) for cap, names in (required or {}).items()}
        kinds: dict[str, KindInfo] = {k.kind: k for k in _BUILTINS}
        for cap in sorted(builders):
            b = builders[cap]
            group, _, command = cap.partition(".")
            params = tuple(ParamSpec(p.name, p.type, p.name in needed.get(cap, ()), p.default,
                                     p.unit, p.description, p.aliases) for p in b.params.values())
            kinds[cap] = KindInfo(cap, humanize(command), humanize(group), params,
                                  tuple(b.outputs.values()), tuple(b.instruments), b.description)
        return cls(kinds, workcell.capabilities)


assert {k.kind for k in _BUILTINS} == BUILTIN_KINDS
