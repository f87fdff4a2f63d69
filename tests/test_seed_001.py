"""Seed 001 (template-based workflow engine): its examples as written, imports changed, over a
console runtime. ``db`` — the seed's database session — is the console's Runtime. Handlers are
the sample ones of resources/handlers (``app.services.handlers.*``) and, for the seed's handler
template, a file in the data directory's handlers/."""

from __future__ import annotations

import asyncio
import textwrap
from datetime import datetime, timedelta

import pytest

from core.compat.seed001 import WorkflowEngine, WorkflowService
from core.errors import TemplateError
from core.runtime import Runtime


def _with_runtime(data_dir, body, timeout=60):
    async def main():
        db = Runtime.build(data_dir, workcell=None)
        await db.start(templates_dir=None)
        try:
            return await asyncio.wait_for(body(db), timeout)
        finally:
            await db.close()

    return asyncio.run(main())


async def _finished(engine, instance_id):
    await engine.engine.wait(instance_id, 30)
    return engine.get_instance(instance_id)


def test_creating_executing_and_monitoring_as_documented(data_dir, capsys):
    async def body(db):
        engine = WorkflowEngine(db)

        template = engine.create_template(
            name="schedule_generation",
            definition={
                "steps": [
                    {
                        "id": "validate",
                        "name": "Validate Input",
                        "handler": "app.services.handlers.validate_input",
                        "execution_mode": "sequential",
                        "depends_on": [],
                        "retry_policy": {
                            "max_attempts": 3,
                            "backoff_multiplier": 2,
                            "max_backoff_seconds": 300
                        },
                        "timeout_seconds": 60,
                    },
                    {
                        "id": "generate",
                        "name": "Generate Schedule",
                        "handler": "app.services.handlers.generate_schedule",
                        "execution_mode": "sequential",
                        "depends_on": ["validate"],
                        "timeout_seconds": 600,
                    },
                ],
                "error_handlers": {},
                "default_timeout_seconds": 3600,
            },
            description="Automated schedule generation workflow",
            tags=["schedule", "automated"],
        )

        # Create workflow instance
        instance = engine.create_instance(
            template_id=template.id,
            input_data={"start_date": "2024-01-01", "end_date": "2024-12-31"},
            priority=5,
        )

        # Execute asynchronously
        await engine.execute_workflow(
            instance_id=instance.id,
            async_execution=True,
        )

        # Check status
        instance = engine.get_instance(instance.id)
        print(f"Status: {instance.status}")

        first = await _finished(engine, instance.id)

        service = WorkflowService(db)

        # Start a workflow by template name
        instance = service.start_workflow(
            template_name="schedule_generation",
            input_data={"start_date": "2024-01-01"},
            priority=10,
            async_execution=True,
        )

        # Monitor running workflows
        running = service.get_running_workflows()
        for workflow in running:
            print(f"{workflow.name}: {workflow.status}")

        second = await instance
        second = await _finished(engine, second.id)

        # Get statistics
        stats = service.get_statistics(template_name="schedule_generation")
        print(f"Success rate: {stats['success_rate']:.1f}%")

        # Get failed workflows
        failed, total = engine.query_instances(
            status="failed",
            created_after=datetime.now() - timedelta(hours=24),
        )
        assert (failed, total) == ([], 0)

        # Get high priority workflows
        priority, total = engine.query_instances(
            priority_min=8,
        )
        assert total == 1 and priority[0].id == second.id

        stats = engine.get_statistics(template_id=template.id)
        return first, second, stats

    first, second, stats = _with_runtime(data_dir, body)
    out = capsys.readouterr().out
    assert out.splitlines()[0] in ("Status: running", "Status: pending")
    assert "schedule_generation: pending" in out or "schedule_generation: running" in out
    assert "Success rate: 100.0%" in out
    assert first.status == "completed" and second.status == "completed"
    steps = {s["id"]: s for s in first.steps}
    assert steps["validate"]["outputs"]["result"]["days"] == 366
    assert steps["generate"]["outputs"]["result"] == {"slots": 366, "first": "2024-01-01", "last": "2024-12-31"}
    assert stats["total_instances"] == 2 and stats["completed_instances"] == 2


def test_conditional_parallel_and_error_handler_definitions(data_dir):
    handlers = data_dir / "handlers"
    handlers.mkdir()
    # the seed's handler template, with the do_work it leaves to the reader
    (handlers / "my_handlers.py").write_text(textwrap.dedent('''
        async def do_work(input_data):
            return sum(input_data.get("numbers", []))

        async def my_step_handler(input_data: dict) -> dict:
            """
            Custom step handler.
            """
            # Process input
            result = await do_work(input_data)

            # Return output
            return {
                "success": True,
                "result": result,
                "message": "Step completed"
            }

        def fail(input_data: dict) -> dict:
            raise RuntimeError("critical step failed")

        def send_error_notification(input_data: dict) -> dict:
            return {"notified": True}
        '''))

    async def body(db):
        engine = WorkflowEngine(db)
        engine.create_template(name="conditional", definition={"steps": [
            {"id": "previous_step", "handler": "my_handlers.my_step_handler"},
            {
                "id": "conditional_step",
                "name": "Execute Only on Success",
                "handler": "app.handlers.conditional_handler",
                "condition": "step_outputs['previous_step']['success'] == True",
                "depends_on": ["previous_step"],
            },
        ]})
        engine.create_template(name="parallel", definition={
            "steps": [
                {
                    "id": "step1",
                    "name": "Initial Step",
                    "depends_on": [],
                },
                {
                    "id": "step2a",
                    "name": "Parallel A",
                    "depends_on": ["step1"],  # Same dependency
                },
                {
                    "id": "step2b",
                    "name": "Parallel B",
                    "depends_on": ["step1"],  # Same dependency - runs parallel with 2a
                },
            ]})
        engine.create_template(name="handled", definition={
            "steps": [{"id": "critical_step", "handler": "my_handlers.fail",
                       "retry_policy": {"max_attempts": 1}},
                      {"id": "send_error_notification", "handler": "my_handlers.send_error_notification"}],
            "error_handlers": {
                "critical_step": "send_error_notification"
            }})
        out = []
        for name, inputs in (("conditional", {"numbers": [1, 2, 3]}), ("parallel", {}), ("handled", {})):
            instance = engine.create_instance(template_id=name, input_data=inputs)
            await engine.execute_workflow(instance_id=instance.id, async_execution=False)
            out.append(engine.get_instance(instance.id))
        return out

    conditional, parallel, handled = _with_runtime(data_dir, body)
    steps = {s["id"]: s for s in conditional.steps}
    assert steps["previous_step"]["outputs"] == {"success": True, "result": 6, "message": "Step completed"}
    assert steps["conditional_step"]["status"] == "completed"
    assert parallel.status == "completed"
    handled_steps = {s["id"]: s for s in handled.steps}
    assert handled.status == "failed"
    assert handled_steps["send_error_notification"]["outputs"] == {"notified": True}


def test_a_bad_definition_is_refused_at_once_with_every_problem(data_dir):
    async def body(db):
        engine = WorkflowEngine(db)
        with pytest.raises(TemplateError) as err:
            engine.create_template(name="bad", definition={"steps": [
                {"id": "a", "handler": "not a path"}, {"id": "b", "handler": "x.y", "depends_on": ["zz"]}]})
        return str(err.value)

    message = _with_runtime(data_dir, body)
    assert "steps[0].handler: handler 'not a path' must be a dotted path" in message
    assert "depends on unknown step 'zz'" in message
