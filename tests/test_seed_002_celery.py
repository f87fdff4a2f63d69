"""Seed 002's "Integration with Celery" snippet as written (the import changed) in a step of a
JobOrchestrator workflow, over a console runtime: the step's handler runs in a worker process and
dispatches ``backend.tasks.my_task``, which is found on the console's handler path
(``<data dir>/handlers/backend/tasks.py``), as the seed's users would ship their tasks module."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from core.compat.celery_core import NotRegistered, TaskTimeoutError
from core.compat.celery_core.app import CeleryApp, get_celery_app
from core.compat.seed002 import JobOrchestrator, WorkflowDefinition, WorkflowStep
from core.pysteps import POOL
from core.runtime import Runtime

# ------------------------------------------------------------------ the seed, as written

app = get_celery_app()

arg1, arg2 = 6, 7  # the arguments the seed passes; it leaves them to the reader


async def my_task():
    # Dispatch to Celery
    task = app.send_task('backend.tasks.my_task', args=[arg1, arg2])

    # Wait for completion
    result = task.get(timeout=300)
    return result

# ------------------------------------------------------------------ the same pattern, going wrong


async def slow_task():
    task = app.send_task('backend.tasks.slow', args=[30])
    return task.get(timeout=0.5)


async def failing_task():
    task = app.send_task('backend.tasks.broken', args=[arg1])
    return task.get(timeout=300)


async def unknown_task():
    return app.send_task('backend.tasks.nowhere').get(timeout=300)


BACKEND_TASKS = '''\
"""The seed's backend.tasks module: the heavy work its handlers offload."""
import os
import time


def my_task(a, b):
    return {"product": a * b, "worker_pid": os.getpid()}


def slow(seconds):
    time.sleep(seconds)
    return {"slept": seconds}


def broken(a):
    raise ValueError(f"cannot process {a}")
'''


@pytest.fixture
def handlers(data_dir):
    """backend/tasks.py in this test's data dir; workers started now see that data dir."""
    backend = data_dir / "handlers" / "backend"
    backend.mkdir(parents=True)
    (backend / "__init__.py").write_text("")
    (backend / "tasks.py").write_text(BACKEND_TASKS)
    POOL.close()  # idle workers of earlier tests know another data dir
    yield backend
    POOL.close()


def _run(data_dir, handler, name):
    async def main():
        db = Runtime.build(data_dir, workcell=None)
        await db.start(templates_dir=None)
        try:
            orchestrator = JobOrchestrator(db, db, db)
            definition = WorkflowDefinition(name, [WorkflowStep(name, "process", handler, max_retries=0)])
            workflow = await orchestrator.create_workflow(job_id=1, workflow_def=definition)
            await asyncio.wait_for(orchestrator.execute_workflow(workflow.id, definition), 60)
            return db.engine.get_instance(workflow.id)
        finally:
            await db.close()

    return asyncio.run(main())


def test_the_celery_snippet_runs_in_a_step(data_dir, handlers):
    import os

    run = _run(data_dir, my_task, "Offload")
    step = run["steps"][0]
    assert run["status"] == "completed", step
    assert step["outputs"]["product"] == 42
    assert step["outputs"]["worker_pid"] != os.getpid()  # in the step's worker process


def test_a_task_that_times_out_or_fails_fails_the_step_naming_why(data_dir, handlers):
    slow = _run(data_dir, slow_task, "Slow")["steps"][0]
    assert slow["status"] == "failed"
    assert "TaskTimeoutError" in slow["error"] and "did not finish within 0.5 s" in slow["error"]
    broken = _run(data_dir, failing_task, "Broken")["steps"][0]
    assert broken["status"] == "failed" and "ValueError: cannot process 6" in broken["error"]
    unknown = _run(data_dir, unknown_task, "Unknown")["steps"][0]
    assert unknown["status"] == "failed" and "NotRegistered" in unknown["error"]
    assert "'backend.tasks.nowhere'" in unknown["error"] and "on the handler path" in unknown["error"]


def test_the_app_in_this_process(tmp_path):
    (tmp_path / "lab.py").write_text(textwrap.dedent("""\
        async def double(x):
            return 2 * x
    """))
    local = CeleryApp(handler_dirs=[tmp_path])

    @local.task(name="backend.tasks.add")
    def add(a, b):
        return a + b

    assert local.send_task("backend.tasks.add", args=[2, 3]).get(timeout=5) == 5
    result = local.send_task("lab.double", kwargs={"x": 21})  # a coroutine function on the path
    assert result.get(timeout=5) == 42 and result.successful() and result.state == "SUCCESS"
    with pytest.raises(NotRegistered, match="not a dotted path|must be a dotted path"):
        local.send_task("add")
    with pytest.raises(NotRegistered, match=r"'os\.system'.*handler path"):
        local.send_task("os.system", args=["true"])  # never an import from outside the path

    @local.task
    def boom():
        raise KeyError("gone")

    failed = local.send_task(f"{__name__}.test_the_app_in_this_process.<locals>.boom")
    with pytest.raises(KeyError, match="gone"):
        failed.get(timeout=5)
    assert failed.failed() and isinstance(failed.get(timeout=5, propagate=False), KeyError)
    assert get_celery_app() is app


def test_get_is_refused_on_the_consoles_event_loop():
    local = CeleryApp(handler_dirs=[])

    @local.task(name="t")
    def t():
        return 1

    async def on_the_loop():
        local.send_task("t").get(timeout=5)

    with pytest.raises(RuntimeError, match="not on the console's event loop"):
        asyncio.run(on_the_loop())
    with pytest.raises(TaskTimeoutError, match="did not finish within 0.05 s"):
        _never(local).get(timeout=0.05)


def _never(local):
    import threading

    gate = threading.Event()

    @local.task(name="waits")
    def waits():
        gate.wait(5)

    return local.send_task("waits")
