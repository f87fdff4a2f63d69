"""Simulated SiLA 2 servers the console starts itself, for demo workcells.

A SiLA instrument whose workcell entry says ``simulate: true`` (allowed for 127.0.0.1 only) is
served by ``labconsole sila-sim`` in a child process that the console starts before it connects
its instruments and stops when it exits; the child also stops by itself when the console is gone
(``--parent``). So ``make run ARGS="--workcell resources/workcells/demo-sila.yaml"`` drives its
SiLA instruments over gRPC with nothing else to start. If something already serves those ports
(a ``labconsole sila-sim`` started by hand), the child exits, the log says so and the console
connects to what is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

from core.instruments import SilaOptions
from core.workcell import Workcell

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
"""Seconds the child has to start every server (it compiles the feature definitions)."""


def simulated_ids(workcell: Workcell) -> list[str]:
    """The SiLA instruments of ``workcell`` marked ``simulate: true``."""
    return [i.id for i in workcell.instruments
            if i.driver == "sila" and SilaOptions.model_validate(i.options).simulate]


class SilaSimulators:
    """The ``labconsole sila-sim`` child process of one console (or nothing to run)."""

    def __init__(self, workcell: Workcell) -> None:
        self.workcell = workcell
        self.ids = simulated_ids(workcell)
        self.proc: asyncio.subprocess.Process | None = None
        self.served: dict[str, str] = {}
        """Instrument id -> what the child printed for it (address and server UUID)."""
        self.problem = ""
        """Why the servers are not running, if they are not ("" when they are or none is wanted)."""
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> SilaSimulators:
        """Start the servers and wait until each one listens (or the child gave up)."""
        if not self.ids or self.workcell.source is None:
            return self
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "console", "sila-sim", "--workcell", str(self.workcell.source),
            "--only", ",".join(self.ids), "--parent", str(os.getpid()),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while len(self.served) < len(self.ids):
                    line = (await self.proc.stdout.readline()).decode(errors="replace").strip()
                    if not line:  # the child ended before serving everything
                        self.problem = (await self.proc.stderr.read()).decode(errors="replace").strip()
                        break
                    iid, _, rest = line.partition(": ")
                    self.served[iid] = rest
        except TimeoutError:
            self.problem = f"the simulated SiLA 2 servers did not start within {START_TIMEOUT:g} s"
        if self.problem or self.proc.returncode is not None:
            self.problem = self.problem or f"labconsole sila-sim exited ({self.proc.returncode})"
            log.warning("simulated SiLA 2 servers for %s not started: %s; connecting to whatever "
                        "serves their ports", ", ".join(self.ids), self.problem)
            await self.stop()
        else:
            log.info("simulated SiLA 2 servers: %s", "; ".join(f"{k}: {v}" for k, v in self.served.items()))
            self._drain = asyncio.create_task(self._forward(), name="sila-sim-output")
        return self

    async def _forward(self) -> None:
        """The child's messages go to the log (a full pipe would stop it)."""
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        async for line in proc.stderr:
            log.info("sila-sim: %s", line.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
