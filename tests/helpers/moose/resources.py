"""Seed 004, Best Practices 4 (Resource Management), as written. What it leaves to the reader is
defined as it implies: ``DatasetInfo.get_chunks`` yields chunks of rows, ``process_chunk`` works on
one (writing a temporary file, as large-dataset processing does), ``cleanup_temp_files`` removes
those files; ``ProcessingResult`` is this section's (``total_processed``, ``errors``)."""

from pathlib import Path

from pydantic import BaseModel


class Chunk(BaseModel):
    workdir: str
    rows: list[int]


class ChunkResult(BaseModel):
    count: int
    errors: list[str]


class DatasetInfo(BaseModel):
    workdir: str
    rows: list[int]

    def get_chunks(self, chunk_size: int):
        for start in range(0, len(self.rows), chunk_size):
            yield Chunk(workdir=self.workdir, rows=self.rows[start:start + chunk_size])


class ProcessingResult(BaseModel):
    total_processed: int
    errors: list[str]


_workdirs: set[str] = set()


async def process_chunk(chunk: Chunk) -> ChunkResult:
    _workdirs.add(chunk.workdir)
    Path(chunk.workdir, f"chunk-{chunk.rows[0]}.tmp").write_text(",".join(map(str, chunk.rows)))  # noqa: ASYNC240
    if any(r < 0 for r in chunk.rows):
        raise ValueError(f"negative row value in the chunk starting at {chunk.rows[0]}")
    return ChunkResult(count=len(chunk.rows), errors=[f"row {r} is odd" for r in chunk.rows if r % 1000 == 999])


async def cleanup_temp_files() -> None:
    for workdir in _workdirs:
        for tmp in Path(workdir).glob("chunk-*.tmp"):  # noqa: ASYNC240
            tmp.unlink()


# ---- the seed
async def process_large_dataset(input: DatasetInfo) -> ProcessingResult:  # noqa: A002
    """Handle large datasets efficiently"""
    try:
        # Process in chunks to avoid memory issues
        results = []
        for chunk in input.get_chunks(chunk_size=1000):
            chunk_result = await process_chunk(chunk)
            results.append(chunk_result)

        return ProcessingResult(
            total_processed=sum(r.count for r in results),
            errors=[e for r in results for e in r.errors]
        )
    except Exception as e:  # noqa: F841 - as the seed writes it
        # Clean up resources on failure
        await cleanup_temp_files()
        raise
