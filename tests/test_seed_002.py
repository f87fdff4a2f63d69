"""Seed 002 (JobOrchestrator): its examples as written, imports changed, over a console runtime.
The seed's three repositories are the console's Runtime. Handlers are module-level functions
of this file; they run in worker processes."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest

from core.compat.seed002 import JobOrchestrator, WorkflowDefinition, WorkflowStep
from core.errors import InputError
from core.runtime import Runtime

# ------------------------------------------------------------------ Quick Start


async def my_task():
    # Do work
    return {"result": "data"}


step = WorkflowStep(
    name="My Task",
    task_type="process",
    handler=my_task,
    max_retries=3,
    timeout=300,
    estimated_duration=60,
)

# ------------------------------------------------------------------ Example: Dataset Build Workflow


# Define steps
async def download():
    # Download images
    return {"count": 1000}


async def validate():
    # Validate images
    return {"valid": 950}


async def deduplicate():
    # Remove duplicates
    return {"unique": 900}


async def label():
    # Generate labels
    return {"labeled": 900}


async def store():
    # Store dataset
    return {"stored": 900}


# Create workflow
steps = [
    WorkflowStep("Download", "download", download, max_retries=3, estimated_duration=300),
    WorkflowStep("Validate", "validate", validate, max_retries=2, dependencies=[0], estimated_duration=200),
    WorkflowStep("Deduplicate", "deduplicate", deduplicate, max_retries=2, dependencies=[1], estimated_duration=150),
    WorkflowStep("Label", "label", label, max_retries=1, dependencies=[2], estimated_duration=100),
    WorkflowStep("Store", "storage", store, max_retries=2, dependencies=[3], estimated_duration=200),
]

workflow_def = WorkflowDefinition("Dataset Build", steps, max_recovery_attempts=3)

# ------------------------------------------------------------------ handlers of the patterns


def handler1():
    return {"n": 1}


def handler2():
    return {"n": 2}


def handler3():
    return {"n": 3}


def process_a():
    return {"a": True}


def process_b():
    return {"b": True}


def merge(input_data):
    return {"merged": input_data["a"] and input_data["b"]}


def _marker(console_pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"labconsole-seed002-fixed-{console_pid}"


def breaks_once():
    """Fails until the marker file of the console (this worker's parent) exists: the operator
    "fixes" the labeling service between the failure and the recovery."""
    if not _marker(os.getppid()).exists():
        raise RuntimeError("labeling service unavailable")
    return {"labeled": 900}


def _with_runtime(data_dir, body, timeout=60):
    async def main():
        db = Runtime.build(data_dir, workcell=None)
        await db.start(templates_dir=None)
        try:
            return await asyncio.wait_for(body(db), timeout)
        finally:
            await db.close()

    return asyncio.run(main())


def test_dataset_build_example(data_dir, capsys):
    async def body(db):
        workflow_repo = task_repo = job_repo = db
        # Execute
        orchestrator = JobOrchestrator(workflow_repo, task_repo, job_repo)
        workflow = await orchestrator.create_workflow(job_id=1, workflow_def=workflow_def)
        result = await orchestrator.execute_workflow(workflow.id, workflow_def)

        # Monitor
        progress = await orchestrator.get_workflow_progress(workflow.id)
        print(f"Status: {progress['status']}, Progress: {progress['progress']}%")
        by_job = await orchestrator.get_workflow_by_job(job_id=1)
        return result, progress, by_job, db.engine.get_instance(workflow.id)

    result, progress, by_job, instance = _with_runtime(data_dir, body)
    assert capsys.readouterr().out == "Status: completed, Progress: 100%\n"
    assert result.status == "completed" and by_job.id == result.id and by_job.job_id == 1
    assert [t["name"] for t in progress["tasks"]] == ["Download", "Validate", "Deduplicate", "Label", "Store"]
    assert [s["outputs"] for s in instance["steps"]] == [
        {"count": 1000}, {"valid": 950}, {"unique": 900}, {"labeled": 900}, {"stored": 900}]


def test_quick_start_and_patterns(data_dir):
    async def body(db):
        step1 = step
        step2 = WorkflowStep(name="Step 2", task_type="task", handler=handler2, dependencies=[0])
        step3 = WorkflowStep(name="Step 3", task_type="task", handler=handler3, dependencies=[1])
        workflow = WorkflowDefinition(
            name="My Workflow",
            steps=[step1, step2, step3],
            max_recovery_attempts=3,
        )
        workflow_def = workflow
        orchestrator = JobOrchestrator(db, db, db)

        # Create workflow
        workflow = await orchestrator.create_workflow(
            job_id=1,
            workflow_def=workflow_def,
        )

        # Execute workflow
        result = await orchestrator.execute_workflow(
            workflow_id=workflow.id,
            workflow_def=workflow_def,
        )

        # Pattern 1: Sequential Tasks
        sequential = [
            WorkflowStep(name="Step 1", task_type="task", handler=handler1),
            WorkflowStep(name="Step 2", task_type="task", handler=handler2, dependencies=[0]),
            WorkflowStep(name="Step 3", task_type="task", handler=handler3, dependencies=[1]),
        ]
        # Pattern 2: Parallel Tasks
        parallel = [
            WorkflowStep(name="Download", task_type="download", handler=download),
            WorkflowStep(name="Validate", task_type="validate", handler=validate, dependencies=[0]),
            WorkflowStep(name="Process A", task_type="process", handler=process_a, dependencies=[1]),
            WorkflowStep(name="Process B", task_type="process", handler=process_b, dependencies=[1]),
            WorkflowStep(name="Merge", task_type="merge", handler=merge, dependencies=[2, 3]),
        ]
        results = [result]
        for job_id, pattern in ((2, sequential), (3, parallel)):
            definition = WorkflowDefinition(f"Pattern {job_id}", pattern)
            created = await orchestrator.create_workflow(job_id=job_id, workflow_def=definition,
                                                         metadata={"pattern": job_id})
            results.append(await orchestrator.execute_workflow(created.id, definition))
        return results, db.engine.get_instance(results[-1].id)

    (quick, sequential, parallel), instance = _with_runtime(data_dir, body)
    assert quick.status == sequential.status == parallel.status == "completed"
    assert quick.name == "My Workflow" and parallel.metadata == {"pattern": 3}
    assert instance["steps"][-1]["outputs"] == {"merged": True}


def test_error_recovery_pattern_and_monitoring(data_dir):
    marker = _marker(os.getpid())
    marker.unlink(missing_ok=True)

    async def body(db):
        orchestrator = JobOrchestrator(db)
        definition = WorkflowDefinition("Flaky Build", [
            WorkflowStep("Download", "download", download),
            WorkflowStep("Label", "label", breaks_once, max_retries=0, dependencies=[0]),
            WorkflowStep("Store", "storage", store, dependencies=[1]),
        ], max_recovery_attempts=3)
        workflow = await orchestrator.create_workflow(job_id=7, workflow_def=definition)
        await orchestrator.execute_workflow(workflow.id, definition)
        workflow_id = workflow.id
        failed = await orchestrator.get_failed_workflows()
        recoverable = await orchestrator.get_recoverable_workflows()
        marker.touch()

        # Monitor workflow
        progress = await orchestrator.get_workflow_progress(workflow_id)

        # If failed, recover
        if progress['status'] == 'failed':
            await orchestrator.recover_workflow(
                workflow_id=workflow_id,
                from_step=progress['current_step'],
            )
        active = await orchestrator.get_active_workflows()
        await db.engine.wait(workflow_id, 30)
        after = await orchestrator.get_workflow_progress(workflow_id)
        with pytest.raises(InputError, match="from_step 9 is not a step index"):
            await orchestrator.recover_workflow(workflow_id, from_step=9)
        # from_step may name the step by its id as well
        marker.unlink()
        second = await orchestrator.create_workflow(job_id=8, workflow_def=definition)
        await orchestrator.execute_workflow(second.id, definition)
        before = db.engine.get_instance(second.id)
        label_id = before["steps"][1]["id"]
        marker.touch()
        await orchestrator.recover_workflow(workflow_id=second.id, from_step=label_id)
        await db.engine.wait(second.id, 30)
        by_id = db.engine.get_instance(second.id)
        return progress, failed, recoverable, active, after, (before, by_id)

    try:
        progress, failed, recoverable, active, after, (before, by_id) = _with_runtime(data_dir, body)
    finally:
        marker.unlink(missing_ok=True)
    assert progress["status"] == "failed" and progress["current_step"] == 1
    assert "labeling service unavailable" in progress["tasks"][1]["error_message"]
    assert [w.job_id for w in failed] == [7] and [w.job_id for w in recoverable] == [7]
    assert [w.job_id for w in active] == [7]
    assert after["status"] == "completed" and after["recovery_attempts"] == 1
    assert after["tasks"][0]["retry_count"] == 0  # the download was kept, not re-run
    assert by_id["status"] == "completed" and by_id["recovery_attempts"] == 1
    assert before["status"] == "failed" and before["steps"][1]["id"] == by_id["steps"][1]["id"] == "label"
    assert by_id["steps"][0] == before["steps"][0]  # the download was kept as it was, not re-run
    assert [s["status"] for s in by_id["steps"]] == ["completed"] * 3 and by_id["steps"][1]["outputs"] == {
        "labeled": 900}


def test_control_pause_cancel_and_a_handler_that_cannot_be_sent(data_dir):
    with pytest.raises(TypeError, match="define it at module level"):
        WorkflowStep("Inline", "x", lambda: {"no": "pickle"})

    async def body(db):
        orchestrator = JobOrchestrator(db)
        workflow = await orchestrator.create_workflow(job_id=9, workflow_def=workflow_def)
        paused = await orchestrator.pause_workflow(workflow.id)
        started = await orchestrator.start_workflow(workflow.id)
        cancelled = await orchestrator.cancel_workflow(workflow.id)
        missing = await orchestrator.get_workflow("Order_99999")
        return paused, started, cancelled, missing

    paused, started, cancelled, missing = _with_runtime(data_dir, body)
    assert cancelled.status == "cancelled" and missing is None
