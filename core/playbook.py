"""The error playbook: rules that answer a step failure before the template's own policies.

A :class:`Rule` matches a failure by error code (or exception class name), optionally by
capability (the step's kind), instrument and template; the first matching rule (by position)
decides: ``retry`` (with exponential backoff from ``backoff`` seconds, up to ``max_attempts``
attempts), ``skip`` (the step is skipped with the rule's ``outputs``), ``pause`` (the run waits
for the operator, with an inbox item that preselects the rule's advice) or ``cancel`` (the run
is canceled). Every automatic decision is audited as made by ``playbook`` with the rule's id, in
the same transaction as the decision itself.

Rules live in the ``playbook_rules`` table; they are exported to and imported from YAML, a bad
file being refused with ``file:line: field: message``. The inbox proposes a rule after the same
manual decision was taken several times for one error signature (:mod:`core.inbox`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from core.errors import InputError, Problem
from core.sourcemap import Document, load_document, parse_document
from core.users import authorize

if TYPE_CHECKING:
    from core.engine.dag import DagEngine
    from core.engine.decision import Decision
    from core.engine.state import RunState, StepState
    from core.engine.types import StepFailure
    from core.store import Store

WHO = "playbook"
"""*who* of the playbook's automatic decisions in the audit log and the transition log."""
RESPONSES = ("retry", "skip", "pause", "cancel")
MAX_BACKOFF = 3600.0
_RULE_KEYS = {"id", "error_code", "capability", "instrument", "template", "response", "max_attempts", "backoff",
              "outputs", "enabled"}


class PlaybookError(InputError):
    """A playbook rule or rule file that cannot be accepted; nothing of it is stored."""


@dataclass(frozen=True)
class Rule:
    id: str
    error_code: str
    response: str
    capability: str | None = None
    instrument: str | None = None
    template: str | None = None
    max_attempts: int | None = None
    backoff: float = 10.0
    outputs: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True

    def matches(self, code: str, class_name: str, capability: str, instrument: str | None, template: str) -> bool:
        return self.enabled and self.error_code in (code, class_name, "*") \
            and self.capability in (None, capability) and self.instrument in (None, instrument) \
            and self.template in (None, template)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "error_code": self.error_code}
        for key in ("capability", "instrument", "template"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        d["response"] = self.response
        if self.response == "retry":
            d["max_attempts"] = self.max_attempts
            d["backoff"] = self.backoff
        if self.outputs:
            d["outputs"] = dict(self.outputs)
        if not self.enabled:
            d["enabled"] = False
        return d

    def describe(self) -> str:
        where = " on ".join(p for p in (self.capability, self.instrument) if p) or "anywhere"
        what = f"retry up to {self.max_attempts}×" if self.response == "retry" else self.response
        return f"{self.error_code} {where}{f' in {self.template}' if self.template else ''} → {what}"


def check_rule(data: Any, *, capabilities: Collection[str] | None = None,
               instruments: Collection[str] | None = None, doc: Document | None = None,
               path: tuple[str | int, ...] = ()) -> Rule:
    """A rule from a mapping; every problem names its field (and, from a file, file:line)."""
    problems: list[Problem] = []

    def bad(key: str | None, message: str) -> None:
        where_path = (*path, key) if key else path
        if doc is not None:
            problems.append(Problem(doc.where(where_path), message))
        else:
            problems.append(Problem(_where(key or "rule"), message))

    if not isinstance(data, Mapping):
        bad(None, "a rule is a mapping with error_code and response")
        raise PlaybookError("bad playbook rule", problems)
    for key in sorted(set(data) - _RULE_KEYS):
        bad(key, f"unknown key (keys: {', '.join(sorted(_RULE_KEYS))})")
    rule_id = data.get("id")
    if not isinstance(rule_id, str) or not rule_id.strip():
        bad("id", "a rule needs an id (text)")
    code = data.get("error_code")
    if not isinstance(code, str) or not code.strip():
        bad("error_code", "an error code or exception class name is required ('*' for any)")
    response = data.get("response")
    if response not in RESPONSES:
        bad("response", f"{response!r} is not one of {', '.join(RESPONSES)}")
    for key in ("capability", "instrument", "template"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            bad(key, f"text is required, not {value!r}")
    capability, instrument = data.get("capability"), data.get("instrument")
    if capabilities is not None and isinstance(capability, str) and capability not in capabilities:
        bad("capability", f"unknown capability '{capability}' (the workcell has: "
                          f"{', '.join(sorted(capabilities)[:12]) or 'none'})")
    if instruments is not None and isinstance(instrument, str) and instrument not in instruments:
        bad("instrument", f"unknown instrument '{instrument}' (the workcell has: "
                          f"{', '.join(sorted(instruments)) or 'none'})")
    attempts = data.get("max_attempts")
    if response == "retry" and (isinstance(attempts, bool) or not isinstance(attempts, int)
                                or not 1 <= attempts <= 100):
        bad("max_attempts", f"a retry rule needs max_attempts 1..100, not {attempts!r}")
    backoff = data.get("backoff", 10.0)
    if isinstance(backoff, bool) or not isinstance(backoff, int | float) or not 0 <= backoff <= MAX_BACKOFF:
        bad("backoff", f"seconds 0..{MAX_BACKOFF:g}, not {backoff!r}")
    outputs = data.get("outputs", {})
    if not isinstance(outputs, Mapping):
        bad("outputs", "a mapping of output names to values")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        bad("enabled", f"true or false, not {enabled!r}")
    if problems:
        raise PlaybookError(f"bad playbook rule{f' {rule_id}' if isinstance(rule_id, str) else ''}", problems)
    return Rule(id=str(rule_id).strip(), error_code=str(code).strip(), response=str(response),
                capability=capability, instrument=instrument, template=data.get("template"),
                max_attempts=attempts if response == "retry" else None, backoff=float(backoff),
                outputs=dict(outputs), enabled=enabled)


def _where(key: str) -> Any:
    from core.errors import Where

    return Where(None, key, None)


def insert_rule_op(rule: Rule, who: str, now: float, *, replace: bool = False) -> Any:
    def op(conn: sqlite3.Connection) -> None:
        if not replace and conn.execute("SELECT 1 FROM playbook_rules WHERE id=?", (rule.id,)).fetchone():
            raise PlaybookError.at(f"a rule '{rule.id}' exists already", field="id")
        position = conn.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM playbook_rules").fetchone()[0]
        conn.execute("INSERT OR REPLACE INTO playbook_rules (id, position, error_code, capability, instrument, "
                     "template, response, max_attempts, backoff, outputs, enabled, created, created_by) "
                     "VALUES (?,COALESCE((SELECT position FROM playbook_rules WHERE id=?), ?),?,?,?,?,?,?,?,?,?,?,?)",
                     (rule.id, rule.id, position, rule.error_code, rule.capability, rule.instrument, rule.template,
                      rule.response, rule.max_attempts, rule.backoff, json.dumps(rule.outputs), int(rule.enabled),
                      now, who))

    return op


def read_rules(conn: sqlite3.Connection) -> list[Rule]:
    rows = conn.execute("SELECT id, error_code, response, capability, instrument, template, max_attempts, backoff, "
                        "outputs, enabled FROM playbook_rules ORDER BY position").fetchall()
    return [Rule(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] if r[7] is not None else 10.0,
                 json.loads(r[8] or "{}"), bool(r[9])) for r in rows]


def parse_rules(text: str, file: str, *, capabilities: Collection[str] | None = None,
                instruments: Collection[str] | None = None) -> list[Rule]:
    """Rules from a YAML (or JSON) document ``{rules: [...]}`` or a bare list; every problem of
    every rule is listed as ``file:line: field: message``."""
    doc = parse_document(text, file, PlaybookError)
    return _rules_of(doc, capabilities, instruments)


def load_rules(path: str | Path, *, capabilities: Collection[str] | None = None,
               instruments: Collection[str] | None = None) -> list[Rule]:
    return _rules_of(load_document(path, PlaybookError), capabilities, instruments)


def _rules_of(doc: Document, capabilities: Collection[str] | None,
              instruments: Collection[str] | None) -> list[Rule]:
    data = doc.data
    base: tuple[str | int, ...] = ()
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - {"rules"})
        if unknown:
            raise PlaybookError(f"{doc.file}: bad playbook", [Problem(doc.where((unknown[0],)),
                                                                      "unknown key (a playbook file has 'rules')")])
        data, base = data.get("rules"), ("rules",)
    if not isinstance(data, list):
        raise PlaybookError(f"{doc.file}: bad playbook", [Problem(doc.where(base), "a list of rules is required")])
    rules: list[Rule] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(data):
        rule_id = raw.get("id") if isinstance(raw, Mapping) else None
        if isinstance(rule_id, str) and rule_id in seen:
            problems.append(Problem(doc.where((*base, i, "id")), f"id '{rule_id}' is used by rule {seen[rule_id]} too"))
        elif isinstance(rule_id, str):
            seen[rule_id] = i
        try:
            rules.append(check_rule(raw, capabilities=capabilities, instruments=instruments, doc=doc,
                                    path=(*base, i)))
        except PlaybookError as exc:
            problems += exc.problems
    if problems:
        raise PlaybookError(f"{doc.file}: bad playbook", problems)
    return rules


def dump_rules(rules: Iterable[Rule]) -> str:
    return yaml.safe_dump({"rules": [r.as_dict() for r in rules]}, sort_keys=False, allow_unicode=True)


class Playbook:
    """The rules in memory (read from the store) and the engine's use of them."""

    def __init__(self, store: Store, *, capabilities: Collection[str] | None = None,
                 instruments: Collection[str] | None = None) -> None:
        self.store = store
        self.capabilities = capabilities
        self.instruments = instruments
        self.rules: list[Rule] = []
        self._suggestions: dict[str, dict[str, Any]] = {}

    @classmethod
    def attach(cls, engine: DagEngine, workcell: Any = None) -> Playbook:
        """The engine's playbook (made and loaded on first use)."""
        if engine.playbook is not None:
            return engine.playbook
        caps = {c for i in workcell.instruments for c in i.capabilities} if workcell is not None else None
        ids = {i.id for i in workcell.instruments} if workcell is not None else None
        playbook = cls(engine.store, capabilities=caps, instruments=ids)
        playbook.reload_sync()
        engine.playbook = playbook
        return playbook

    def reload_sync(self) -> None:
        self.rules, self._suggestions = self.store.read_sync(_load)

    async def reload(self) -> None:
        self.rules, self._suggestions = await self.store.read(_load)

    # ------------------------------------------------------------------ editing (audited)

    async def add(self, data: Mapping[str, Any] | Rule, *, who: str, replace: bool = False) -> Rule:
        authorize(self.store, who, "playbook")
        rule = data if isinstance(data, Rule) else check_rule(data, capabilities=self.capabilities,
                                                              instruments=self.instruments)
        insert = insert_rule_op(rule, who, self.store.now().timestamp(), replace=replace)
        audit = self.store.audit_op(who, "edit playbook rule" if replace else "add playbook rule", rule.id, None,
                                    rule.as_dict())

        def both(conn: sqlite3.Connection) -> None:
            insert(conn)
            audit(conn)

        await self.store.write(both)
        await self.reload()
        return rule

    async def remove(self, rule_id: str, *, who: str) -> None:
        authorize(self.store, who, "playbook")
        audit = self.store.audit_op(who, "remove playbook rule", rule_id, None)

        def both(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM playbook_rules WHERE id=?", (rule_id,)).rowcount == 0:
                raise PlaybookError.at(f"no rule '{rule_id}'", field="id")
            audit(conn)

        await self.store.write(both)
        await self.reload()

    async def import_file(self, path: str | Path, *, who: str) -> list[Rule]:
        """Replace every rule by the file's (all or nothing, audited)."""
        authorize(self.store, who, "playbook")
        rules = load_rules(path, capabilities=self.capabilities, instruments=self.instruments)
        now = self.store.now().timestamp()
        ops = [insert_rule_op(r, who, now, replace=True) for r in rules]
        audit = self.store.audit_op(who, "import playbook", str(path), None, {"rules": [r.id for r in rules]})

        def replace_all(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM playbook_rules")
            for op in ops:
                op(conn)
            audit(conn)

        await self.store.write(replace_all)
        await self.reload()
        return rules

    def export(self) -> str:
        return dump_rules(self.rules)

    # ------------------------------------------------------------------ the engine's use

    def match(self, run: RunState, state: StepState, failure: StepFailure) -> Rule | None:
        for rule in self.rules:
            if rule.matches(failure.code, type(failure).__name__, state.step.kind, state.instrument,
                            run.template.name):
                return rule
        return None

    def suggest(self, signature: str) -> dict[str, Any] | None:
        """The choice to preselect for an error: the operators' most frequent one so far."""
        return self._suggestions.get(signature)

    def decide(self, engine: DagEngine, d: Decision, run: RunState, state: StepState, failure: StepFailure) -> bool:
        """Apply the first matching rule to a failed attempt (True), or leave it to the template (False).
        A step whose outcome is unknown is never decided automatically unless it is idempotent."""
        from core.engine.types import StepFailure as Failure
        from core.states import RUN_FINAL, RunStatus, StepStatus

        if failure.outcome_unknown and not state.step.idempotent:
            return False
        rule = self.match(run, state, failure)
        if rule is None:
            return False
        details = {"rule": rule.id, "error_code": failure.code, "attempt": state.attempt}
        now = engine.clock.now()
        if rule.response == "retry":
            limit = rule.max_attempts or 1
            if state.attempt < limit and run.status not in RUN_FINAL:
                delay = min(MAX_BACKOFF, rule.backoff * 2 ** (state.attempt - 1))
                state.next_attempt_at = now + delay
                d.step(run, state, StepStatus.RETRYING, f"Retry {state.attempt + 1}/{limit} in {delay:.1f} s after "
                       f"{failure.code}: {failure.message} (playbook rule {rule.id})", who=WHO)
                attempt = state.attempt
                state.timer = engine.timers.at(state.next_attempt_at,
                                               lambda: engine._retry_due(run, state, attempt))  # noqa: SLF001
                d.audit(WHO, "retry step", state.order_id, f"rule {rule.id}", {**details, "delay": delay})
                return True
            d.audit(WHO, "fail step", state.order_id, f"rule {rule.id}: {limit} attempts used", details)
            engine._fail_for_good(d, run, state, Failure(failure.message, failure.code, False))  # noqa: SLF001
            return True
        state.ended = now
        if rule.response == "skip":
            state.outputs, state.error = dict(rule.outputs), None
            d.step(run, state, StepStatus.SKIPPED, f"Skipped by playbook rule {rule.id} after {failure.code}",
                   changes={"outputParameters": _parameters(state.outputs)}, who=WHO)
            d.audit(WHO, "skip step", state.order_id, f"rule {rule.id}", {**details, "outputs": state.outputs})
            engine._advance(d, run, after=state)  # noqa: SLF001
            return True
        d.step(run, state, StepStatus.FAILED, f"{failure.code}: {failure.message}", who=WHO)
        if rule.response == "pause":
            d.audit(WHO, "pause", run.run_id, f"rule {rule.id}", details)
            from core import inbox

            run.paused = True
            d.run(run, RunStatus.PAUSED, f"step '{state.step.id}' needs the operator "
                  f"(playbook rule {rule.id}): {failure.message}", who=WHO)
            inbox.record_error(engine, d, run, state, suggestion=self.suggest(
                inbox.signature(state.error_code, state.step.kind, state.instrument)), rule=rule.id)
            d.then.append(run.done.set)
            return True
        d.audit(WHO, "cancel run", run.run_id, f"rule {rule.id}", details)
        engine._end(d, run, RunStatus.CANCELLED,  # noqa: SLF001
                    f"Canceled by playbook rule {rule.id}: step '{state.step.id}' {failure.code}", who=WHO)
        return True


def _parameters(outputs: dict[str, Any]) -> Any:
    from core.engine.types import to_parameters

    return to_parameters(outputs)


def _load(conn: sqlite3.Connection) -> tuple[list[Rule], dict[str, dict[str, Any]]]:
    rules = read_rules(conn)
    best: dict[str, tuple[int, str]] = {}
    for sig, choice, count in conn.execute("SELECT signature, choice, count FROM playbook_choices"):
        if count > best.get(sig, (0, ""))[0]:
            best[sig] = (count, choice)
    return rules, {sig: {"choice": choice} for sig, (_count, choice) in best.items()}
