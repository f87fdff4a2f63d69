"""Seed 004, Best Practices 3 (Timeout and Retry Configuration), as written (each ``TaskConfig``
given a name so it can be used); the three functions are the kinds of work the seed names: a
database operation (SQLite), an external API call (HTTP) and file processing."""

import sqlite3
from pathlib import Path

import httpx
from pydantic import BaseModel

from core.compat.seed004 import TaskConfig


class Job(BaseModel):
    database: str
    url: str
    file: str


async def database_operation(job: Job) -> dict:
    with sqlite3.connect(job.database) as db:
        db.execute("CREATE TABLE IF NOT EXISTS plates (id TEXT PRIMARY KEY)")
        db.execute("INSERT OR IGNORE INTO plates VALUES ('P-1'), ('P-2')")
        (count,) = db.execute("SELECT count(*) FROM plates").fetchone()
    return {"rows": count}


async def external_api_call(job: Job) -> dict:
    async with httpx.AsyncClient() as client:
        response = await client.get(job.url, timeout=10)
    response.raise_for_status()  # a 503 fails the attempt: retried
    return {"api": response.json()}


async def file_processing(job: Job) -> dict:
    lines = Path(job.file).read_text().splitlines()  # noqa: ASYNC240 - a worker process
    return {"lines": len(lines), "plates": sorted({line.split(",")[0] for line in lines})}


# ---- the seed
# Configure appropriate timeouts and retries
database_config = TaskConfig(
    run=database_operation,
    timeout="30s",      # Short timeout for database operations
    retries=3           # Moderate retries for transient failures
)

api_config = TaskConfig(
    run=external_api_call,
    timeout="2m",       # Longer timeout for external APIs
    retries=5           # More retries for network issues
)

file_config = TaskConfig(
    run=file_processing,
    timeout="10m",      # Very long timeout for file processing
    retries=1           # Fewer retries for resource-intensive operations
)
