"""The composition root: store, bus, templates, engine and executor, assembled once.

The console window, the headless command line and the rehearsal all build the same
:class:`Runtime`, so they behave the same against the same store.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.clock import Clock, SystemClock
from core.engine import Engine, SimulatedExecutor, StepExecutor
from core.errors import TemplateError
from core.facade import Core
from core.store import DB_FILENAME, Store
from core.templates import WorkflowTemplate, load_template

log = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
SAMPLE_TEMPLATES = RESOURCES / "templates"


def template_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in (".yaml", ".yml", ".json"))


def load_templates(directory: Path | None) -> list[WorkflowTemplate]:
    """Every good template file of ``directory``; bad ones are logged with their problems."""
    if directory is None or not directory.is_dir():
        return []
    out = []
    for path in template_files(directory):
        try:
            out.append(load_template(path))
        except TemplateError as exc:
            log.error("%s", exc)
    return out


@dataclass
class Runtime:
    store: Store
    core: Core
    engine: Engine
    executor: StepExecutor
    clock: Clock
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, data_dir: Path, *, clock: Clock | None = None, executor: StepExecutor | None = None,
              store: Store | None = None) -> Runtime:
        clock = clock or SystemClock()
        store = store or Store(data_dir / DB_FILENAME).open()
        core = Core(store)
        executor = executor or SimulatedExecutor(clock, durations={"*": 2.0})
        return cls(store, core, Engine(core, executor, clock=clock), executor, clock)

    async def start(self, templates_dir: Path | None = SAMPLE_TEMPLATES, *,
                    execute: bool = True) -> list[WorkflowTemplate]:
        """Publish the templates of ``templates_dir`` (unchanged ones keep their version), then,
        if ``execute``, resume runs that were in flight. Exactly one process (the console) should
        execute runs; command-line tools start with ``execute=False``."""
        published = []
        for template in await asyncio.to_thread(load_templates, templates_dir):
            published.append(await self.engine.publish(template, who="labconsole"))
        await self.engine.start(resume=execute)
        return published

    async def close(self) -> None:
        await self.engine.close()
        self.store.close()
