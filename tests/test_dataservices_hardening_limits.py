"""The embedded Data Services server against abuse (oversized bodies, slow and idle connections,
log floods), and the console's Data Services settings (secrets, token sources, bound address,
schema). Real sockets to 127.0.0.1 only; every wait is bounded."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import httpx
import pytest
from helpers.bdm_support import run, serving

from console.cli import build_parser, main
from core.dataservices.config import TOKEN_ENV, redact_url, resolve_token
from core.dataservices.server import EmbeddedDataServices, RepeatFilter, ServerLimits
from core.errors import ConfigError
from core.store import APPLICATION_ID, DB_FILENAME, MIGRATIONS, SCHEMA_DIR, SCHEMA_VERSION, Store

ANSWER_WAIT = 20.0  # generous: the machine is shared; nothing here asserts a duration


def _port(server: EmbeddedDataServices) -> int:
    return server.bound_address[1]


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (or a bounded wait ends)."""
    return await asyncio.wait_for(reader.read(), ANSWER_WAIT)


async def _count_orders(server: EmbeddedDataServices) -> int:
    async with httpx.AsyncClient(base_url=server.url) as c:
        return len((await c.get("/api/v3.0/orders")).json())


# --------------------------------------------------------------------------- request bodies


def test_a_huge_body_gets_413_naming_the_limit_before_it_is_read(store):
    async def scenario():
        async with serving(store) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
            writer.write(b"POST /api/v3.0/orders HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: 209715200\r\n\r\n" + b'{"templateName":"' + b"A" * 65536)
            await writer.drain()
            answer = await _answer(reader)
            writer.close()
            return answer, await _count_orders(server)

    answer, orders = run(scenario())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"8 MiB" in body and b"8388608" in body
    assert orders == 0


def test_a_chunked_body_over_the_limit_gets_413_and_nothing_is_stored(store):
    async def scenario():
        async with serving(store, limits=ServerLimits(max_body_bytes=4096)) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
            body = b'{"templateName":"T","notes":"' + b"n" * 8000 + b'"}'
            writer.write(b"POST /api/v3.0/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: application/json\r\n\r\n"
                         + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
            await writer.drain()
            answer = await _answer(reader)
            writer.close()
            return answer, await _count_orders(server)

    answer, orders = run(scenario())
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"4096 bytes" in answer or b"4 KiB" in answer
    assert orders == 0


def test_a_body_that_does_not_arrive_in_time_gets_408(store):
    async def scenario():
        async with serving(store, limits=ServerLimits(body_timeout=0.3)) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
            writer.write(b"POST /api/v3.0/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                         b'{"templateName"')
            await writer.drain()
            answer = await _answer(reader)
            writer.close()
            return answer

    answer = run(scenario())
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"0.3 s" in answer


def test_a_request_head_that_does_not_arrive_in_time_gets_408_and_is_closed(store):
    async def scenario():
        async with serving(store, limits=ServerLimits(header_timeout=0.3)) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
            writer.write(b"GET /api/v2.0/version HTTP/1.1\r\nHo")  # and then nothing
            await writer.drain()
            answer = await _answer(reader)
            writer.close()
            return answer

    answer = run(scenario())
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]


# --------------------------------------------------------------------------- connections


SLOW_CLIENTS = 200


def test_many_idle_and_slow_connections_neither_lock_out_a_request_nor_pile_up(store):
    """200 clients that connect and stall (half a request head, or nothing): the server keeps at
    most ``max_connections`` of them open, and a normal request still gets its answer."""
    limits = ServerLimits(max_connections=40)

    async def scenario():
        async with serving(store, limits=limits) as server:
            port = _port(server)
            streams = []
            for i in range(SLOW_CLIENTS):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                if i % 2:
                    writer.write(b"GET /api/v2.0/version HTTP/1.1\r\nHo")
                    await writer.drain()
                streams.append((reader, writer))
            async with httpx.AsyncClient(base_url=server.url, timeout=ANSWER_WAIT) as c:
                ok = await c.get("/api/v2.0/version")
            # connections the server closed see end-of-file; open ones see nothing. Closes take
            # a moment to arrive on a busy machine: look again until they have (bounded).
            open_ones = list(range(len(streams)))
            deadline = asyncio.get_running_loop().time() + ANSWER_WAIT
            while len(open_ones) > limits.max_connections and \
                    asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
                for i in list(open_ones):
                    try:
                        await asyncio.wait_for(streams[i][0].read(), 0.001)
                        open_ones.remove(i)
                    except ConnectionResetError:  # closed by the server with a reset: closed too
                        open_ones.remove(i)
                    except TimeoutError:
                        pass
            still_open = len(open_ones)
            for _reader, writer in streams:
                writer.close()
            return ok, still_open

    ok, still_open = run(scenario(), timeout=120)
    assert ok.status_code == 200 and ok.json() == "1.6.2-labconsole"
    assert still_open <= limits.max_connections


def test_a_flood_of_garbage_costs_a_bounded_number_of_log_lines(store):
    counted: list[logging.LogRecord] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            counted.append(record)

    handler = Count(level=logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "core.dataservices.server")]

    async def scenario():
        async with serving(store, limits=ServerLimits(max_connections=20)) as server:
            for logger in loggers:  # once the server runs: nothing can reconfigure them after
                logger.addHandler(handler)
            for _ in range(SLOW_CLIENTS):
                reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
                writer.write(b"NOT HTTP AT ALL\r\n\r\n")
                await writer.drain()
                await _answer(reader)
                writer.close()

    try:
        run(scenario(), timeout=120)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    warnings = [r for r in counted if r.levelno >= logging.WARNING]
    assert len(warnings) <= 10, [r.getMessage() for r in warnings[:12]]


def test_repeat_filter_lets_a_burst_through_then_counts_what_it_left_out():
    now = [0.0]
    f = RepeatFilter(burst=3, window=10.0, clock=lambda: now[0])

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.WARNING, __file__, 1, msg, None, None)

    assert [f.filter(rec("same %s")) for _ in range(6)] == [True, True, True, False, False, False]
    assert f.filter(rec("other")) is True
    now[0] = 11.0
    first = rec("same %s")
    assert f.filter(first) is True and "3 more like this not logged" in str(first.msg)


# --------------------------------------------------------------------------- bound address


def test_the_log_names_the_address_actually_bound(store, caplog):
    """Bound to every interface: the log says 0.0.0.0 (read from the socket). Nothing connects
    to a non-loopback address: the socket is inspected."""
    caplog.set_level(logging.INFO, logger="core.dataservices.server")

    async def scenario():
        async with serving(store, host="0.0.0.0", token="t0ken") as server:
            return server.bound_address, server.url

    (host, port), url = run(scenario())
    assert host == "0.0.0.0" and port > 0
    said = [r.getMessage() for r in caplog.records if "listening on" in r.getMessage()]
    assert len(said) == 1
    assert f"0.0.0.0:{port}" in said[0] and "network" in said[0]
    assert url == f"http://127.0.0.1:{port}"


def test_loopback_bind_is_logged_as_loopback(store, caplog):
    caplog.set_level(logging.INFO, logger="core.dataservices.server")

    async def scenario():
        async with serving(store) as server:
            return server.bound_address

    host, port = run(scenario())
    said = [r.getMessage() for r in caplog.records if "listening on" in r.getMessage()]
    assert said and f"127.0.0.1:{port}" in said[0] and "this computer only" in said[0]


# --------------------------------------------------------------------------- secrets


def test_a_password_in_the_data_services_url_is_never_printed(tmp_path, capsys):
    code = main(["--data-dir", str(tmp_path), "--data-services-url", "http://op:s3cret@host:8105"])
    err = capsys.readouterr().err
    assert code == 2
    assert "s3cret" not in err
    assert "http://op:***@host:8105" in err


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:pa:ss@host:1", "http://user:***@host:1"),
    ("https://u:p@ss@h", "https://u:***@h"),
    ("http://host:8105", "http://host:8105"),
    ("http://user@host", "http://user@host"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_the_token_comes_from_the_flag_a_file_or_the_environment(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  from-file-123\n")
    token_file.chmod(0o600)
    assert resolve_token("from-flag", environ={}) == "from-flag"
    assert resolve_token(None, token_file=token_file, environ={TOKEN_ENV: "env"}) == "from-file-123"
    assert resolve_token(None, environ={TOKEN_ENV: " from-env "}) == "from-env"
    assert resolve_token(None, environ={TOKEN_ENV: ""}) is None
    args = build_parser().parse_args(["--token-file", str(token_file)])
    assert args.token_file == token_file and args.token is None


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot read the token file"),
    ("", "the token is empty"),
    ("one\ntwo\n", "on one line"),
    ("has space-secret", "printable ASCII"),
])
def test_a_bad_token_file_is_named_and_its_content_never_shown(tmp_path, content, problem):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        resolve_token(None, token_file=path, environ={})
    text = str(caught.value)
    assert problem in text and str(path) in text
    assert "secret" not in text


def test_token_and_token_file_together_are_refused():
    with pytest.raises(ConfigError, match="either --token or --token-file"):
        resolve_token("a", token_file="b", environ={})


# --------------------------------------------------------------------------- schema


def test_ds_links_comes_from_a_migration_even_over_a_store_that_already_has_it(data_dir):
    db = data_dir / DB_FILENAME
    files = sorted(p.name for p in SCHEMA_DIR.glob("[0-9][0-9][0-9]_*.sql"))
    before = next(i for i, name in enumerate(files) if name.endswith("_ds_links.sql"))
    # a store of the version before, on which the console had created ds_links on the fly
    with sqlite3.connect(db) as conn:
        for sql in MIGRATIONS[:before]:
            conn.executescript(sql)
        conn.execute("CREATE TABLE ds_links (local_id TEXT PRIMARY KEY, remote_id TEXT NOT NULL, "
                     "adopted INTEGER NOT NULL DEFAULT 0)")
        conn.execute("INSERT INTO ds_links VALUES ('Order_00001', 'Order_00042', 1)")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {before}")
    conn.close()
    Store(db).open().close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT * FROM ds_links").fetchall() == [("Order_00001", "Order_00042", 1)]
    conn.close()
    fresh = data_dir / "fresh.db"
    Store(fresh).open().close()
    with sqlite3.connect(fresh) as conn:
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'ds_links'").fetchone()
    conn.close()


def test_no_table_is_created_outside_the_schema_files():
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "core" / "dataservices"
    offenders = [p.name for p in package.glob("*.py") if "CREATE TABLE" in p.read_text().upper()]
    assert offenders == []
