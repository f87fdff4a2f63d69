"""The one exception tree of labconsole.

Every error raised on purpose by labconsole derives from :class:`LabconsoleError`::

    LabconsoleError
    ├── InputError                   bad input from a person or a file; carries Problems (where + what)
    │   ├── ModelError               a wire/order payload that does not validate
    │   ├── ConfigError              command line, config.ini, environment
    │   │   └── FaultSpecError       a --faults spec (core.drivers.faults)
    │   ├── TemplateError            a workflow template file
    │   └── WorkcellError            a workcell definition file
    ├── StoreError                   the SQLite store (always names the file)
    │   ├── CorruptDatabaseError     file is damaged or not a database; never overwritten
    │   ├── ForeignDatabaseError     a SQLite file that belongs to another program
    │   └── SchemaTooNewError        written by a newer labconsole
    ├── StateError                   an operation that the current state does not allow
    │   ├── IllegalTransitionError   e.g. Complete -> Running
    │   └── DuplicateSubmissionError same order submitted twice within the window
    ├── NotFoundError                an id that does not exist
    │   ├── OrderNotFoundError
    │   ├── OrderTemplateNotFoundError     (core.dataservices.errors)
    │   └── EventNotFoundError             (core.dataservices.errors)
    ├── DataServicesError            talking to Biosero Data Services (URL + cause)
    │   └── CreateOutcomeUnknownError      a create whose answer was lost (core.dataservices.errors)
    ├── OrderFailedError             an order scheduled with wait=True ended in Error/Canceled/Invalid
    └── DriverError                  an instrument command failed (core.drivers.base): code, retryable
        ├── InstrumentUnavailable    cannot reach the instrument (retryable)
        ├── OrderCancelled           stopped by cancel()
        ├── OutcomeUnknown           link lost after the command was sent
        └── UnsupportedCapability    the instrument does not offer the command

Errors about input carry *where*: a :class:`Where` with file, field path and line, so a person
can fix the input without guessing. ``str(error)`` lists every problem, one per line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Where:
    """A position in some input: file, dotted field path and 1-based line (each optional)."""

    file: str | None = None
    field: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(self.file if self.line is None else f"{self.file}:{self.line}")
        elif self.line is not None:
            parts.append(f"line {self.line}")
        if self.field:
            parts.append(self.field)
        return ": ".join(parts) if parts else "<input>"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, and where it is."""

    where: Where
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class LabconsoleError(Exception):
    """Root of every error labconsole raises on purpose."""


class InputError(LabconsoleError):
    """Input that labconsole refuses. Lists every problem found, each with where it is."""

    def __init__(self, summary: str, problems: Iterable[Problem] = ()) -> None:
        self.summary = summary
        self.problems: list[Problem] = list(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        if not self.problems:
            return self.summary
        lines = [f"{self.summary} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)

    @classmethod
    def at(cls, message: str, *, file: str | Path | None = None, field: str | None = None,
           line: int | None = None) -> InputError:
        """One-problem shortcut: ``ConfigError.at("not a URL", file="config.ini", line=3)``."""
        where = Where(str(file) if file is not None else None, field, line)
        return cls(message, [Problem(where, message)])


class ModelError(InputError):
    """A wire or order payload that does not validate."""


class ConfigError(InputError):
    """A bad command-line flag, environment variable or config.ini entry."""


class TemplateError(InputError):
    """A workflow template that cannot be loaded; nothing of it is loaded."""


class WorkcellError(InputError):
    """A workcell definition that cannot be loaded."""


class StoreError(LabconsoleError):
    """A problem with the SQLite store. Always names the database file."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class CorruptDatabaseError(StoreError):
    """The file is damaged or is not a SQLite database. It is left untouched."""


class ForeignDatabaseError(StoreError):
    """The file is a SQLite database of another program. It is left untouched."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer labconsole than this one."""


class StateError(LabconsoleError):
    """An operation the current state does not allow."""


class IllegalTransitionError(StateError):
    """A state machine was asked for a transition it does not have. Nothing changed."""

    def __init__(self, what: str, current: object, target: object) -> None:
        self.what, self.current, self.target = what, current, target
        name = getattr(current, "name", current)
        tname = getattr(target, "name", target)
        super().__init__(f"{what}: illegal transition {name} -> {tname}")


class DuplicateSubmissionError(StateError):
    """The same submission arrived twice within the duplicate window."""

    def __init__(self, message: str, earlier_id: str) -> None:
        self.earlier_id = earlier_id
        super().__init__(message)


class NotFoundError(LabconsoleError):
    """An id that does not exist."""


class OrderNotFoundError(NotFoundError):
    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        super().__init__(f"OrderNotFound: order with identifier '{identifier}' was not found")


class DataServicesError(LabconsoleError):
    """Talking to Biosero Data Services failed. Names the URL and the cause."""

    def __init__(self, url: str, cause: str) -> None:
        self.url, self.cause = url, cause
        super().__init__(f"Data Services at {url}: {cause}")


@dataclass
class ProblemList:
    """Collects problems while checking an input, then raises them all at once."""

    file: str | None = None
    problems: list[Problem] = field(default_factory=list)

    def add(self, message: str, *, field: str | None = None, line: int | None = None) -> None:
        self.problems.append(Problem(Where(self.file, field, line), message))

    def __bool__(self) -> bool:
        return bool(self.problems)

    def raise_if_any(self, error_type: type[InputError], summary: str) -> None:
        if self.problems:
            raise error_type(summary, self.problems)
