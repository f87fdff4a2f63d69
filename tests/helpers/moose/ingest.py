"""Seed 004, Integration with Moose Data Models (Ingesting Data from Workflows), as written;
``ProcessingResult`` is the model its code implies (``id``, ``processed_at``,
``records_processed``, ``success``)."""

from datetime import datetime

from pydantic import BaseModel


class ProcessingResult(BaseModel):
    id: str
    processed_at: datetime
    records_processed: int
    success: bool


# ---- the seed (imports changed)
import httpx  # noqa: E402

from core.compat.seed004 import Task, TaskConfig  # noqa: E402


async def ingest_processed_data(result: ProcessingResult) -> None:
    """Send processed data to Moose ingestion endpoint"""

    # Transform result to match your data model
    ingestion_data = {
        "id": result.id,
        "timestamp": result.processed_at.isoformat(),
        "records_count": result.records_processed,
        "success": result.success
    }

    # Send to ingestion endpoint
    async with httpx.AsyncClient() as client:
        response = await client.post(
            "http://localhost:4000/ingest/ProcessingResults",
            json=ingestion_data,
            timeout=30.0
        )

        if not response.is_success:
            raise Exception(f"Failed to ingest data: {response.status_code}")

# Create ingestion task
ingest_task = Task[ProcessingResult, None](
    name="ingestResults",
    config=TaskConfig(
        run=ingest_processed_data,
        retries=3,
        timeout="1m"
    )
)
