"""Test support for the Data Services tests: a served store, a module executor, a lossy proxy.

* :func:`serving` runs :class:`EmbeddedDataServices` on an ephemeral loopback port.
* :class:`ModuleExecutor` stands in for the workcell: it claims the orders it can run (by template
  name, and restricted to its module or unrestricted), runs a handler and completes them with
  output parameters, through our client, as an external module would. It satisfies
  :class:`OrderExecutor`, so the simulated workcell can take its place in these tests.
* :class:`LossyProxy` is a real TCP proxy that can lose an answer after the server committed it,
  or strip response headers, to test retries without mocks.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from core.dataservices import DataServicesApi, EmbeddedDataServices, Order, OrderStatus

ROOT = Path(__file__).resolve().parents[2]
BDM_PYTHON = ROOT / ".bdm-venv" / "bin" / "python"
SCRIPTS = Path(__file__).resolve().parent

Handler = Callable[[Order], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]


def run(coro: Awaitable[Any], timeout: float = 60) -> Any:
    """Run one test scenario on a fresh asyncio loop, failing it after ``timeout`` seconds."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@asynccontextmanager
async def serving(store: Any, **kwargs: Any) -> AsyncIterator[EmbeddedDataServices]:
    """An embedded server over ``store`` on 127.0.0.1 and an ephemeral port (never 8105)."""
    kwargs.setdefault("port", 0)
    server = EmbeddedDataServices(store, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class OrderExecutor(Protocol):
    """Something that executes the orders of a workcell while a test runs."""

    executed: list[str]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ModuleExecutor:
    """Claims and completes orders for ``module_id``; ``handlers`` map template names to work.

    A handler gets the order and returns output values ``{name: value}``; raising an exception
    sends the order to Error with the exception text as ``statusDetails``.
    """

    def __init__(self, client: DataServicesApi, module_id: str, handlers: Mapping[str, Handler],
                 poll_interval: float = 0.02) -> None:
        self.client, self.module_id, self.handlers = client, module_id, dict(handlers)
        self.poll_interval = poll_interval
        self.executed: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            for order in await self.client.unassigned_orders(module_id=self.module_id,
                                                             template_names=self.handlers):
                if await self.client.try_assign(order.identifier or "", self.module_id):
                    await self._execute(order)
            await asyncio.sleep(self.poll_interval)

    async def _execute(self, order: Order) -> None:
        oid = order.identifier or ""
        await self.client.update_order_status(oid, OrderStatus.Running)
        try:
            outputs = self.handlers[order.templateName or ""](order)
            if inspect.isawaitable(outputs):
                outputs = await outputs
        except Exception as exc:  # noqa: BLE001 - the module reports it; the test reads it from the order
            await self.client.update_order_status(oid, OrderStatus.Error, str(exc))
        else:
            await self.client.set_output_parameters(oid, outputs)
            await self.client.update_order_status(oid, OrderStatus.Complete,
                                                  f"done by {self.module_id}")
        self.executed.append(oid)


class LossyProxy:
    """A loopback HTTP proxy, one request per connection, that can misbehave on purpose.

    ``lose(substring)``: the next request whose request line contains ``substring`` reaches the
    server, but its answer is dropped (the connection closes without a response).
    ``strip_headers``: response header names removed from every answer.
    """

    def __init__(self, upstream_port: int, strip_headers: tuple[str, ...] = ()) -> None:
        self.upstream_port = upstream_port
        self.strip = {h.lower().encode() for h in strip_headers}
        self.requests: list[str] = []
        self._lose: list[str] = []
        self._server: asyncio.Server | None = None

    def lose(self, substring: str, times: int = 1) -> None:
        self._lose += [substring] * times

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.split(b"\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in lines
                       if line.lower().startswith(b"content-length:")), 0)
        body = await reader.readexactly(length) if length else b""
        request_line = lines[0].decode()
        self.requests.append(request_line)
        kept = [line for line in lines[1:] if line and not line.lower().startswith(b"connection:")]
        upstream_head = b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n"
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up_writer.write(upstream_head + body)
        await up_writer.drain()
        answer = await up_reader.read()
        up_writer.close()
        rule = next((s for s in self._lose if s in request_line), None)
        if rule is not None:
            self._lose.remove(rule)
            writer.close()
            return
        if self.strip:
            answer_head, _, answer_body = answer.partition(b"\r\n\r\n")
            answer_lines = [line for line in answer_head.split(b"\r\n")
                            if line.split(b":", 1)[0].strip().lower() not in self.strip]
            answer = b"\r\n".join(answer_lines) + b"\r\n\r\n" + answer_body
        writer.write(answer)
        await writer.drain()
        writer.close()


async def run_bdm_script(script: str, *args: str, interpreter: Path | None = None,
                         timeout: float = 60) -> dict[str, Any]:
    """Run ``tests/helpers/<script>`` with Biosero's client (.bdm-venv); return its JSON result.

    The script prints one JSON object on its last stdout line. Fails with a clear message if the
    venv is missing or biosero-data-models cannot be imported. ``interpreter`` runs it with
    another Python instead (labconsole's own, for the import-change comparison).
    """
    if interpreter is None:
        check_bdm_venv()
    proc = await asyncio.create_subprocess_exec(
        str(interpreter or BDM_PYTHON), str(SCRIPTS / script), *args, cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"{script} did not finish within {timeout} s\nstdout:\n"
                             f"{out.decode()[-3000:]}\nstderr:\n{err.decode()[-3000:]}") from None
    text = out.decode()
    assert proc.returncode == 0, (f"{script} failed (exit {proc.returncode})\nstdout:\n"
                                  f"{text[-3000:]}\nstderr:\n{err.decode()[-5000:]}")
    last = text.strip().splitlines()[-1] if text.strip() else ""
    try:
        return json.loads(last)
    except ValueError:
        raise AssertionError(f"{script} printed no JSON result\nstdout:\n{text[-3000:]}\n"
                             f"stderr:\n{err.decode()[-3000:]}") from None


def check_bdm_venv() -> None:
    """Fail (never skip) when Biosero's client is not installed where the Makefile puts it."""
    import subprocess

    if not BDM_PYTHON.exists():
        raise AssertionError(f"{BDM_PYTHON} is missing: the Biosero client tests need it. "
                             "Run 'make bdm-venv' (or 'make test', which builds it).")
    probe = subprocess.run([str(BDM_PYTHON), "-c", "import biosero.datamodels.restclients, "
                            "biosero.datamodels.adapter"], capture_output=True, text=True,
                           timeout=120, cwd=str(ROOT))
    if probe.returncode != 0:
        raise AssertionError(f"biosero-data-models cannot be imported by {BDM_PYTHON}: "
                             f"{probe.stderr.strip()[-2000:]}\nRebuild it: rm -rf .bdm-venv && "
                             "make bdm-venv")


__all__ = ["BDM_PYTHON", "LossyProxy", "ModuleExecutor", "OrderExecutor", "check_bdm_venv",
           "run", "run_bdm_script", "serving"]
