"""Slow connections and a large body against the embedded Data Services (in its own process).

usage: python bench/reliability/attacks.py [--slow N] [--body-mb N]

The server runs in a child process (``--serve``) so its memory and log are its own. Slow
attack: N clients connect and stall (half send half a request head, half nothing) for 15 s while
a normal client sends a request every 0.5 s; figures: normal requests answered, the slowest,
and the log the server wrote meanwhile. Large body: a 200 MB create, once with Content-Length
and once chunked; figures: the answers, the server's peak memory growth, orders stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
STALL = 15.0


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def file_size(path: Path) -> int:
    return path.stat().st_size


async def serve(data_dir: str) -> None:
    import logging

    from core.dataservices.server import EmbeddedDataServices
    from core.store import DB_FILENAME, Store

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    store = Store(Path(data_dir) / DB_FILENAME).open()
    server = EmbeddedDataServices(store, port=0)
    print(f"URL {await server.start()}", flush=True)
    await asyncio.Event().wait()


async def slow_attack(url: str, port: int, n: int) -> tuple[int, int, float]:
    streams = []
    for i in range(n):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            continue
        if i % 2:
            writer.write(b"POST /api/v3.0/orders HTTP/1.1\r\nHost: x\r\nContent-Le")
        streams.append(writer)
    answered = asked = 0
    worst = 0.0
    end = time.monotonic() + STALL
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        while time.monotonic() < end:
            asked += 1
            t0 = time.monotonic()
            try:
                r = await c.get("/api/v2.0/version")
                answered += r.status_code == 200
            except httpx.HTTPError:
                pass
            worst = max(worst, time.monotonic() - t0)
            await asyncio.sleep(0.5)
    for writer in streams:
        writer.close()
    return answered, asked, worst


async def big_body(port: int, megabytes: int, chunked: bool) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    size = megabytes * 1024 * 1024
    head = (b"POST /api/v3.0/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + (b"Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n".encode()))
    writer.write(head)
    block = b"A" * (64 * 1024)
    reading = asyncio.ensure_future(reader.read(200))  # the server may answer before the end
    await asyncio.wait([reading], timeout=2.0)  # a declared size over the limit: answered at once
    for _ in range(megabytes * 16):
        await asyncio.sleep(0)  # let an answer in before sending more
        if reading.done():
            break
        writer.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        try:
            await writer.drain()
        except (ConnectionError, OSError):  # it answered and closed: stop sending
            break
    try:
        answer = await asyncio.wait_for(reading, 30)
    except (ConnectionError, OSError, TimeoutError):
        answer = b""
    writer.close()
    return answer.split(b"\r\n", 1)[0].decode(errors="replace") or "connection closed"


async def attack(url: str, pid: int, log_path: Path, args: argparse.Namespace) -> list[dict]:
    port = int(url.rsplit(":", 1)[1])
    log_before = file_size(log_path)
    t0 = time.monotonic()
    answered, asked, worst = await slow_attack(url, port, args.slow)
    log_rate = (file_size(log_path) - log_before) / (time.monotonic() - t0)
    rss_before = rss_kb(pid)
    answers = [await big_body(port, args.body_mb, chunked) for chunked in (False, True)]
    growth_mb = (rss_kb(pid, "VmHWM") - rss_before) / 1024
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        stored = len((await c.get("/api/v3.0/orders")).json())
    ok_413 = all(a.startswith("HTTP/1.1 413") for a in answers)
    return [
        {"figure": f"{args.slow} slow connections for {STALL:.0f} s: normal requests answered",
         "value": f"{answered}/{asked}, slowest {worst:.2f} s", "target": "all",
         "ok": answered == asked and asked > 0},
        {"figure": "slow connections: server log written", "value": f"{log_rate / 1024:.1f} KiB/s",
         "target": "<= 10 KiB/s", "ok": log_rate <= 10 * 1024},
        {"figure": f"{args.body_mb} MB create (Content-Length, chunked): answers",
         "value": " / ".join(a[9:] for a in answers), "target": "413", "ok": ok_413},
        {"figure": "large bodies: server peak memory growth, orders stored",
         "value": f"{growth_mb:.1f} MB, {stored}", "target": "<= 50 MB, 0",
         "ok": growth_mb <= 50 and stored == 0}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=1100)
    parser.add_argument("--body-mb", type=int, default=200)
    parser.add_argument("--serve", metavar="DATA_DIR")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    work = Path(tempfile.mkdtemp(prefix="labconsole-attacks-"))
    log_path = work / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(work)], stdout=subprocess.PIPE,
                                stderr=log, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[1]
            rows = asyncio.run(attack(url, proc.pid, log_path, args))
        finally:
            proc.terminate()
            proc.wait(10)
    print("RESULT " + json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
