"""Seed 004's fragments that call functions the seed leaves to the reader (Best Practices 1-4 and
Ingesting Data from Workflows), as written in ``tests/helpers/moose/``, with those functions
defined as the seed implies, run through the seed's API on a console runtime: every task in a
worker process, typed inputs and outputs validated, timeouts and retries in the template."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers.moose import granularity, ingest, resources, timeouts, type_safety

from core.compat.seed004 import Task, TaskConfig, Workflow, WorkflowConfig
from core.runtime import Runtime

# ------------------------------------------------------------------ workflows around the fragments

type_safety_flow = Workflow(name="TypeSafetyWorkflow", config=WorkflowConfig(starting_task=type_safety.typed_task))

validate_email_task = Task[type_safety.UserData, granularity.ValidationResult](
    name="validateEmail", config=TaskConfig(run=granularity.validate_email, timeout="30s"))
welcome_task = Task[type_safety.UserData, granularity.EmailResult](
    name="sendWelcomeEmail", config=TaskConfig(run=granularity.send_welcome_email, timeout="1m"))
validate_email_task.config.on_complete = [welcome_task]
onboarding = Workflow(name="OnboardingWorkflow", config=WorkflowConfig(starting_task=validate_email_task))

db_task = Task[timeouts.Job, None](name="databaseOperation", config=timeouts.database_config)
api_task = Task[timeouts.Job, None](name="externalApiCall", config=timeouts.api_config)
file_task = Task[timeouts.Job, None](name="fileProcessing", config=timeouts.file_config)
db_task.config.on_complete = [api_task, file_task]
maintenance = Workflow(name="MaintenanceWorkflow", config=WorkflowConfig(starting_task=db_task))

dataset_task = Task[resources.DatasetInfo, resources.ProcessingResult](
    name="processLargeDataset", config=TaskConfig(run=resources.process_large_dataset, retries=0))
datasets = Workflow(name="DatasetWorkflow", config=WorkflowConfig(starting_task=dataset_task))

ingestion = Workflow(name="IngestionWorkflow", config=WorkflowConfig(starting_task=ingest.ingest_task))


def _with_runtime(data_dir, body, timeout=90):
    async def main():
        db = Runtime.build(data_dir, workcell=None)
        await db.start(templates_dir=None)
        try:
            return await asyncio.wait_for(body(db), timeout)
        finally:
            await db.close()

    return asyncio.run(main())


def _outputs(run):
    return {s["id"]: s["outputs"] for s in run["steps"]}


class _Endpoint(BaseHTTPRequestHandler):
    """127.0.0.1:4000 (Moose's ingestion port, as the seed writes it): GET answers 503 twice, then
    JSON; POST records the body."""

    gets = 0
    received: list[tuple[str, dict]] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).gets += 1
        body = b'{"status": "ok"}' if self.gets > 2 else b'{"status": "busy"}'
        self.send_response(200 if self.gets > 2 else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    try:
        server = ThreadingHTTPServer(("127.0.0.1", 4000), _Endpoint)
    except OSError as exc:
        pytest.fail(f"the stand-in endpoint needs 127.0.0.1:4000: {exc}")
    _Endpoint.gets, _Endpoint.received = 0, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:4000"
    server.shutdown()
    server.server_close()


def test_type_safety_and_task_granularity(data_dir):
    user = {"user_id": "u7", "email": "ann@lab.example", "created_at": "2026-11-27T06:00:00"}

    async def body(db):
        return (await type_safety_flow.run(db, user),
                await type_safety_flow.run(db, {**user, "email": "nobody"}),
                await type_safety_flow.run(db, {**user, "created_at": "yesterday"}),
                await onboarding.run(db, user))

    typed, bad_email, bad_date, onboarded = _with_runtime(data_dir, body)
    assert typed["status"] == "completed"
    assert _outputs(typed) == {"processUser": {"success": True, "records_processed": 1, "errors": []}}
    assert _outputs(bad_email)["processUser"]["errors"] == ["user u7: invalid email 'nobody'"]
    assert bad_date["status"] == "failed"
    assert "UserData: input field 'created_at'" in bad_date["steps"][0]["error"]
    assert _outputs(onboarded) == {"validateEmail": {"valid": True, "error": None},
                                   "sendWelcomeEmail": {"sent": True, "message_id": "12345"}}


def test_timeout_and_retry_configuration(data_dir, tmp_path, endpoint):
    plates = tmp_path / "plates.csv"
    plates.write_text("P-1,450\nP-2,450\nP-1,600\n")
    job = {"database": str(tmp_path / "lab.sqlite3"), "url": f"{endpoint}/health", "file": str(plates)}

    async def body(db):
        run = await maintenance.run(db, job)
        return run, db.engine.templates.get("MaintenanceWorkflow")

    run, template = _with_runtime(data_dir, body)
    assert run["status"] == "completed", run["steps"]
    out = _outputs(run)
    assert out["databaseOperation"] == {"rows": 2}
    assert out["externalApiCall"] == {"api": {"status": "ok"}}  # after two 503 answers, retried
    assert {s["id"]: s["attempt"] for s in run["steps"]}["externalApiCall"] == 3
    assert out["fileProcessing"] == {"lines": 3, "plates": ["P-1", "P-2"]}
    steps = {s.id: s for s in template.steps}
    assert (steps["databaseOperation"].timeout, steps["databaseOperation"].retry_policy.max_attempts) == (30, 4)
    assert (steps["externalApiCall"].timeout, steps["externalApiCall"].retry_policy.max_attempts) == (120, 6)
    assert (steps["fileProcessing"].timeout, steps["fileProcessing"].retry_policy.max_attempts) == (600, 2)


def test_resource_management_cleans_up_on_failure(data_dir, tmp_path):
    good = {"workdir": str(tmp_path), "rows": list(range(2500))}
    bad = {"workdir": str(tmp_path), "rows": [*range(1500), -1]}

    async def body(db):
        done = await datasets.run(db, good)
        left = sorted(p.name for p in tmp_path.glob("chunk-*.tmp"))
        failed = await datasets.run(db, bad)
        return done, left, failed

    done, left, failed = _with_runtime(data_dir, body)
    assert _outputs(done) == {"processLargeDataset": {"total_processed": 2500,
                                                      "errors": ["row 999 is odd", "row 1999 is odd"]}}
    assert left == ["chunk-0.tmp", "chunk-1000.tmp", "chunk-2000.tmp"]  # success keeps the results
    assert failed["status"] == "failed"
    assert "ValueError: negative row value in the chunk starting at 1000" in failed["steps"][0]["error"]
    assert list(tmp_path.glob("chunk-*.tmp")) == []  # cleaned up on failure, as the seed says


def test_ingesting_data_from_a_workflow(data_dir, endpoint):
    result = {"id": "R-12", "processed_at": "2026-11-27T06:30:00", "records_processed": 96, "success": True}

    async def body(db):
        return await ingestion.run(db, result)

    run = _with_runtime(data_dir, body)
    assert run["status"] == "completed" and _outputs(run) == {"ingestResults": {}}
    assert _Endpoint.received == [("/ingest/ProcessingResults", {
        "id": "R-12", "timestamp": "2026-11-27T06:30:00", "records_count": 96, "success": True})]
