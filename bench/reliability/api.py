"""schemathesis against the embedded Data Services: every route of /openapi.json, no 5xx.

usage: python bench/reliability/api.py [--examples N] [--seed N]

Starts the embedded server on 127.0.0.1 (ephemeral port, a fresh store), runs ``st run`` on its
``/openapi.json`` (positive and negative data, not_a_server_error check), and counts, on the
server side, every answer by status class and the operations that were exercised.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from core.dataservices import server as ds_server
from core.dataservices.server import EmbeddedDataServices
from core.store import DB_FILENAME, Store

STATUS: Counter[int] = Counter()


def count_statuses() -> None:
    """Count each answer's status as it leaves the app (wraps the ASGI ``send``)."""
    original = ds_server.DataServicesApp.__call__

    async def counted(self: ds_server.DataServicesApp, scope: dict[str, Any], receive: Any,
                      send: Any) -> None:
        async def send_counted(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                STATUS[message["status"]] += 1
            await send(message)

        await original(self, scope, receive, send_counted)

    ds_server.DataServicesApp.__call__ = counted  # type: ignore[method-assign]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args()
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        raise SystemExit("schemathesis (st) is not installed in this environment: pip install -e '.[test]'")
    count_statuses()
    work = Path(tempfile.mkdtemp(prefix="labconsole-api-"))
    store = Store(work / DB_FILENAME).open()
    server = EmbeddedDataServices(store, port=0)
    await server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            st, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
            "--max-examples", str(args.examples), "--seed", str(args.seed), "--workers", "1",
            "--phases", "examples,coverage,fuzzing", "--no-color", "--request-timeout", "20",
            "--generation-database", "none", "--continue-on-failure",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=work)
        out, _ = await proc.communicate()
    finally:
        await server.stop()
        store.close()
    text = out.decode("utf-8", "replace")
    (work / "schemathesis.txt").write_text(text)
    tested = re.search(r"API Operations:\s*\n?\s*Selected:\s*(\d+)/(\d+)\s*\n?\s*Tested:\s*(\d+)", text)
    selected, total, done = (tested.groups() if tested else ("?", "?", "?"))
    fivexx = sum(n for s, n in STATUS.items() if s >= 500)
    requests = sum(STATUS.values())
    by_class = ", ".join(f"{k}xx {v}" for k, v in sorted(Counter(s // 100 for s in STATUS.elements()).items()))
    print("RESULT " + json.dumps({"statuses": dict(STATUS), "schemathesis_exit": proc.returncode,
                                  "log": str(work / "schemathesis.txt"), "rows": [
        {"figure": "schemathesis: operations of /openapi.json tested", "value": f"{done} of {total}",
         "target": "all", "ok": done == total and done != "?"},
        {"figure": f"schemathesis: 5xx answers ({requests} requests: {by_class})",
         "value": f"{fivexx}", "target": "0", "ok": fivexx == 0 and requests > 0}]}))


if __name__ == "__main__":
    asyncio.run(main())
