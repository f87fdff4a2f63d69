"""Seed 004 (Moose workflows): its examples as written, imports changed, run on a console
runtime. The task functions are module-level functions of this file; they run in worker
processes. The e-commerce example posts to ``http://localhost:4000`` as written: a small HTTP
server on 127.0.0.1:4000 stands in for Moose's ingestion endpoint."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

import httpx
import pytest
from pydantic import BaseModel

from core.compat.seed004 import (
    Task,
    TaskConfig,
    Workflow,
    WorkflowConfig,
    _workflows,
    publish_workflows,
)
from core.runtime import Runtime

# ================================================================== Basic Workflow Setup


class WorkflowInput(BaseModel):
    user_id: str
    start_date: str
    end_date: str


class WorkflowOutput(BaseModel):
    processed_records: int
    errors: list[str]


class ValidationResult(BaseModel):
    valid: bool
    message: str


# Define task functions
async def validate_input(input: WorkflowInput) -> ValidationResult:
    """Validate input data"""
    if not input.user_id or not input.start_date or not input.end_date:
        return ValidationResult(valid=False, message="Missing required input fields")
    return ValidationResult(valid=True, message="Input validated successfully")


async def process_data(input: WorkflowInput) -> WorkflowOutput:
    """Process user data"""
    # Simulate data processing
    processed_count = 100  # This would be actual processing logic
    return WorkflowOutput(processed_records=processed_count, errors=[])


# Create tasks with typed inputs and outputs
validate_task = Task[WorkflowInput, ValidationResult](
    name="validateInput",
    config=TaskConfig(
        run=validate_input,
        timeout="30s",
        retries=3
    )
)

process_task = Task[WorkflowInput, WorkflowOutput](
    name="processData",
    config=TaskConfig(
        run=process_data,
        timeout="5m",
        retries=2
    )
)

# Chain tasks using on_complete
validate_task.config.on_complete = [process_task]

# Create workflow
workflow = Workflow(
    name="DataProcessingWorkflow",
    config=WorkflowConfig(
        starting_task=validate_task,
        timeout="1h",
        retries=3
    )
)

# ================================================================== Task Dependencies and Chaining


class InputModel(BaseModel):  # the chained and the parallel examples both name it
    text: str = ""
    value: int = 0


class IntermediateModel(BaseModel):
    words: list[str]


class OutputModel(BaseModel):
    count: int


def first_function(input: InputModel) -> IntermediateModel:
    return IntermediateModel(words=input.text.split())


async def second_function(input: IntermediateModel) -> OutputModel:
    return OutputModel(count=len(input.words))


def final_function(input: OutputModel) -> None:
    if input.count < 0:
        raise ValueError("negative count")


# Create a chain of dependent tasks
task1 = Task[InputModel, IntermediateModel](
    name="firstTask",
    config=TaskConfig(run=first_function)
)

task2 = Task[IntermediateModel, OutputModel](
    name="secondTask",
    config=TaskConfig(run=second_function)
)

task3 = Task[OutputModel, None](
    name="finalTask",
    config=TaskConfig(run=final_function)
)

# Chain tasks
task1.config.on_complete = [task2]
task2.config.on_complete = [task3]

# Create workflow starting with first task
chained = Workflow(
    name="ChainedWorkflow",
    config=WorkflowConfig(starting_task=task1)
)

# ================================================================== Scheduled, retries, parallel


def cleanup() -> None:
    """No input, no output."""


cleanup_task = Task[None, None](name="cleanup", config=TaskConfig(run=cleanup))

# Workflow with scheduled execution
scheduled_workflow = Workflow(
    name="DailyCleanupWorkflow",
    config=WorkflowConfig(
        starting_task=cleanup_task,
        schedule="0 0 * * *",  # Daily at midnight (cron format)
        timeout="2h",
        retries=3
    )
)


class DataModel(BaseModel):
    value: int


class ResultModel(BaseModel):
    success: bool
    data: int


async def external_api_call(input: DataModel) -> int:
    if input.value < 0:
        raise ConnectionError("upstream refused a negative value")
    return input.value * 10


async def risky_operation(input: DataModel) -> ResultModel:
    """Function that might fail and needs retries"""
    try:
        # Risky operation that might fail
        result = await external_api_call(input)
        return ResultModel(success=True, data=result)
    except Exception as e:
        # Log error for debugging
        print(f"Operation failed: {e}")
        raise  # Re-raise to trigger retry logic


risky_task = Task[DataModel, ResultModel](
    name="riskyOperation",
    config=TaskConfig(
        run=risky_operation,
        retries=5,           # Retry up to 5 times
        timeout="10m"        # 10 minute timeout per attempt
    )
)
risky = Workflow(name="RiskyWorkflow", config=WorkflowConfig(starting_task=risky_task))


class Output1(BaseModel):
    doubled: int


class Output2(BaseModel):
    squared: int


def function1(input: InputModel) -> Output1:
    return Output1(doubled=input.value * 2)


def function2(input: InputModel) -> Output2:
    return Output2(squared=input.value ** 2)


def start(input: DataModel) -> DataModel:
    return input


starting_task = Task[DataModel, DataModel](name="start", config=TaskConfig(run=start))

# Create parallel tasks that don't depend on each other
parallel_task1 = Task[InputModel, Output1](
    name="parallelTask1",
    config=TaskConfig(run=function1)
)

parallel_task2 = Task[InputModel, Output2](
    name="parallelTask2",
    config=TaskConfig(run=function2)
)

# Both tasks can run in parallel from the starting task
starting_task.config.on_complete = [parallel_task1, parallel_task2]
parallel = Workflow(name="ParallelWorkflow", config=WorkflowConfig(starting_task=starting_task))

# ================================================================== Example: E-commerce Order Processing


# Data models
class Order(BaseModel):
    order_id: str
    user_id: str
    items: list[dict]
    total_amount: float


class PaymentResult(BaseModel):
    success: bool
    transaction_id: Optional[str] = None  # noqa: UP045 - as the seed writes it
    error_message: Optional[str] = None  # noqa: UP045


class InventoryResult(BaseModel):
    available: bool
    reserved_items: list[str]


class ShippingResult(BaseModel):
    shipping_id: str
    estimated_delivery: datetime


class OrderResult(BaseModel):
    order_id: str
    status: str
    payment_id: Optional[str] = None  # noqa: UP045
    shipping_id: Optional[str] = None  # noqa: UP045


# Task functions
async def validate_order(order: Order) -> Order:
    """Validate order data"""
    if not order.items or order.total_amount <= 0:
        raise ValueError("Invalid order data")
    return order


async def check_inventory(order: Order) -> InventoryResult:
    """Check and reserve inventory"""
    # Simulate inventory check
    return InventoryResult(
        available=True,
        reserved_items=[item["id"] for item in order.items]
    )


async def process_payment(order: Order) -> PaymentResult:
    """Process payment"""
    # Simulate payment processing
    return PaymentResult(
        success=True,
        transaction_id=f"txn_{order.order_id}"
    )


async def arrange_shipping(order: Order) -> ShippingResult:
    """Arrange shipping"""
    return ShippingResult(
        shipping_id=f"ship_{order.order_id}",
        estimated_delivery=datetime.now()
    )


async def finalize_order(order: Order) -> OrderResult:
    """Finalize order and send to ingestion"""
    # Create final result
    result = OrderResult(
        order_id=order.order_id,
        status="completed"
    )

    # Ingest into Moose
    async with httpx.AsyncClient() as client:
        await client.post(
            "http://localhost:4000/ingest/Orders",
            json=result.dict()
        )

    return result


# Create tasks
validate_task = Task[Order, Order](
    name="validateOrder",
    config=TaskConfig(run=validate_order, timeout="30s", retries=2)
)

inventory_task = Task[Order, InventoryResult](
    name="checkInventory",
    config=TaskConfig(run=check_inventory, timeout="1m", retries=3)
)

payment_task = Task[Order, PaymentResult](
    name="processPayment",
    config=TaskConfig(run=process_payment, timeout="2m", retries=2)
)

shipping_task = Task[Order, ShippingResult](
    name="arrangeShipping",
    config=TaskConfig(run=arrange_shipping, timeout="1m", retries=3)
)

finalize_task = Task[Order, OrderResult](
    name="finalizeOrder",
    config=TaskConfig(run=finalize_order, timeout="30s", retries=2)
)

# Chain tasks
validate_task.config.on_complete = [inventory_task]
inventory_task.config.on_complete = [payment_task, shipping_task]  # Parallel execution
payment_task.config.on_complete = [finalize_task]
shipping_task.config.on_complete = [finalize_task]

# Create workflow
order_workflow = Workflow(
    name="OrderProcessingWorkflow",
    config=WorkflowConfig(
        starting_task=validate_task,
        timeout="30m",
        retries=1
    )
)

# ================================================================== running them


def _with_runtime(data_dir, body, timeout=60):
    async def main():
        db = Runtime.build(data_dir, workcell=None)
        await db.start(templates_dir=None, schedules=True)
        try:
            return await asyncio.wait_for(body(db), timeout)
        finally:
            await db.close()

    return asyncio.run(main())


def _outputs(run):
    return {s["id"]: s["outputs"] for s in run["steps"]}


def test_the_registry_as_documented(capsys):
    # Get workflow by name
    my_workflow = _workflows.get("DataProcessingWorkflow")

    # List all task names in workflow
    task_names = my_workflow.get_task_names()
    print("Tasks:", task_names)

    # Find specific task
    specific_task = my_workflow.get_task("validateInput")

    # Access workflow structure for monitoring
    workflow = _workflows["DataProcessingWorkflow"]

    # Get all task names for monitoring dashboards
    all_tasks = workflow.get_task_names()
    print(f"Workflow has {len(all_tasks)} tasks: {all_tasks}")

    # Find specific tasks for targeted monitoring
    critical_task = workflow.get_task("processPayment")
    if critical_task:
        print(f"Critical task timeout: {critical_task.config.timeout}")
        print(f"Critical task retries: {critical_task.config.retries}")
    critical_task = _workflows["OrderProcessingWorkflow"].get_task("processPayment")
    assert (critical_task.config.timeout, critical_task.config.retries) == ("2m", 2)

    assert specific_task is validate_task_basic
    assert capsys.readouterr().out == ("Tasks: ['validateInput', 'processData']\n"
                                       "Workflow has 2 tasks: ['validateInput', 'processData']\n")


validate_task_basic = workflow.config.starting_task


def test_typed_workflows_run_with_data_flowing_between_tasks(data_dir):
    async def body(db):
        await publish_workflows(db)
        basic = await workflow.run(db, {"user_id": "123", "start_date": "2024-01-01", "end_date": "2024-01-31"})
        missing = await workflow.run(db, {"user_id": "123"})
        chain = await chained.run(db, {"text": "plate read twice"})
        fanned = await parallel.run(db, {"value": 7})
        retried = await risky.run(db, {"value": 5})
        schedules = db.schedules.entries()
        return basic, missing, chain, fanned, retried, schedules, db.engine.templates.get("RiskyWorkflow")

    basic, missing, chain, fanned, retried, schedules, risky_template = _with_runtime(data_dir, body)
    assert basic["status"] == "completed"
    assert _outputs(basic) == {"validateInput": {"valid": True, "message": "Input validated successfully"},
                               "processData": {"processed_records": 100, "errors": []}}
    step = missing["steps"][0]
    assert missing["status"] == "failed" and step["attempt"] == 1  # bad input is not retried
    assert "WorkflowInput: input field 'start_date': Field required" in step["error"]
    assert _outputs(chain)["secondTask"] == {"count": 3} and chain["status"] == "completed"
    assert _outputs(fanned)["parallelTask1"] == {"doubled": 14} and _outputs(fanned)["parallelTask2"] == {"squared": 49}
    assert _outputs(retried) == {"riskyOperation": {"success": True, "data": 50}}
    assert risky_template.step("riskyOperation").retry_policy.max_attempts == 6
    assert any(s.template == "DailyCleanupWorkflow" and s.cron == "0 0 * * *" for s in schedules)


class _Ingest(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_e_commerce_order_processing(data_dir):
    try:
        server = ThreadingHTTPServer(("127.0.0.1", 4000), _Ingest)
    except OSError as exc:
        pytest.fail(f"the stand-in ingestion endpoint needs 127.0.0.1:4000: {exc}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Ingest.received.clear()
    order = {"order_id": "A17", "user_id": "u1", "items": [{"id": "plate-96"}, {"id": "tips-200"}],
             "total_amount": 42.5}
    try:
        done, bad = _with_runtime(data_dir, lambda db: _orders(db, order))
    finally:
        server.shutdown()
        server.server_close()
    outputs = _outputs(done)
    assert done["status"] == "completed"
    assert outputs["checkInventory"] == {"available": True, "reserved_items": ["plate-96", "tips-200"]}
    assert outputs["processPayment"]["transaction_id"] == "txn_A17"
    assert outputs["finalizeOrder"] == {"order_id": "A17", "status": "completed", "payment_id": None,
                                        "shipping_id": None}
    assert _Ingest.received == [("/ingest/Orders", outputs["finalizeOrder"])]
    assert bad["status"] == "failed" and "ValueError: Invalid order data" in bad["steps"][0]["error"]


async def _orders(db, order):
    done = await order_workflow.run(db, order)
    bad = await order_workflow.run(db, {**order, "items": []})
    return done, bad


NIGHTLY_TASKS = '''
def sweep(input_data):
    return {"swept": input_data.get("shelf", "all")}
'''


def test_a_scheduled_workflow_fires_in_a_freshly_started_runtime(data_dir, monkeypatch):
    """A task function lives only in the process that registered it, unless its module is on the
    handler path: then a console started later (here: a second runtime, the registration
    forgotten) finds it there when the schedule fires."""
    import importlib
    import sys

    from core import pysteps
    from core.clock import VirtualClock
    from core.store import DB_FILENAME, Store

    handlers = data_dir / "handlers"
    handlers.mkdir(exist_ok=True)
    (handlers / "nightly_tasks.py").write_text(NIGHTLY_TASKS)
    monkeypatch.syspath_prepend(str(handlers))
    monkeypatch.delitem(sys.modules, "nightly_tasks", raising=False)
    nightly_tasks = importlib.import_module("nightly_tasks")
    workflow = Workflow(name="NightlySweep", config=WorkflowConfig(
        starting_task=Task(name="sweep", config=TaskConfig(run=nightly_tasks.sweep)), schedule="* * * * *"))

    async def register():
        db = Runtime.build(data_dir, workcell=None, metrics=False)
        await db.start(templates_dir=None, schedules=True)
        try:
            await workflow.publish(db)
            await db.schedules.adopt_template_schedules()
            return [s.id for s in db.schedules.entries()]
        finally:
            await db.close()

    async def fresh():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store)
        db = Runtime.build(data_dir, clock=clock, store=store, workcell=None, metrics=False)
        await db.start(templates_dir=None, schedules=True)
        try:
            await clock.advance(61)
            for _ in range(1500):
                started = db.schedules.started
                if started and db.engine.run_status(started[0][1]).is_final:
                    break
                await asyncio.sleep(0.02)  # the task runs in a worker, in real time
                await clock.advance(0.02)
            return db.engine.get_instance(db.schedules.started[0][1])
        finally:
            await db.close()

    schedule_ids = asyncio.run(register())
    _workflows.pop("NightlySweep", None)
    monkeypatch.delitem(pysteps._CALLABLES, "nightly_tasks.sweep")  # what a new process would not know
    run = asyncio.run(fresh())
    assert len(schedule_ids) == 1
    assert run["status"] == "completed", run
    assert run["steps"][0]["outputs"] == {"swept": "all"}


def test_publishing_a_scheduled_workflow_whose_task_is_off_the_handler_path_says_so(data_dir, caplog):
    async def body(db):
        await scheduled_workflow.publish(db)
        await workflow.publish(db)  # not scheduled: runs started by this process only, nothing to say

    with caplog.at_level("WARNING", logger="core.compat.seed004"):
        _with_runtime(data_dir, body)
    warnings = [r.getMessage() for r in caplog.records if r.name == "core.compat.seed004"]
    assert len(warnings) == 1, warnings
    assert "workflow 'DailyCleanupWorkflow' is scheduled (0 0 * * *), but task 'cleanup'" in warnings[0]
    assert "no module test_seed_004 in the handler path" in warnings[0] and str(data_dir / "handlers") in warnings[0]
