"""A damaged store is refused on open, named, with what to do, and left byte for byte as it was.

Each case damages a real closed store (a few hundred demo orders plus live transitions and audit
entries) in one way, with a fixed seed. SQLite keeps no checksums of stored values, so every
pattern here damages structure (pages, b-tree headers, cell pointers, the file header, the
freelist), which is what ``PRAGMA quick_check`` can see.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from console.cli import main as cli_main
from core import demo
from core.errors import ConfigError, CorruptDatabaseError, StoreError
from core.ledger import Ledger
from core.orders import Order, OrderStatus
from core.store import DB_FILENAME, Store, resolve_data_dir

SEED = 20240611
BTREE_TYPES = (0x02, 0x05, 0x0A, 0x0D)  # index/table interior/leaf pages


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a healthy, cleanly closed store."""
    path = tmp_path_factory.mktemp("pristine") / DB_FILENAME
    store = Store(path).open()
    demo.generate(store, 600, seed=3)

    async def live() -> None:
        core = Ledger(store)
        for n in range(20):
            order = await core.create_order(Order(templateName=f"T{n}"), who="lims")
            await core.set_status(order.identifier, OrderStatus.Running, who="dispatcher")
            await core.operator_status(order.identifier, OrderStatus.Canceled, action="cancel",
                                       reason=f"reason {n}", who="alice")

    asyncio.run(live())
    store.close()
    assert not Path(f"{path}-wal").exists(), "a clean close checkpoints the WAL into the file"
    return path.read_bytes()


def _page_size(data: bytearray) -> int:
    size = int.from_bytes(data[16:18], "big")
    return 65536 if size == 1 else size


def _btree_pages(data: bytearray) -> list[int]:
    """0-based numbers of the b-tree pages after the first (by their type byte)."""
    ps = _page_size(data)
    return [p for p in range(1, len(data) // ps) if data[p * ps] in BTREE_TYPES]


def zero_middle_page(data: bytearray, rng: random.Random) -> bytearray:
    ps = _page_size(data)
    pages = _btree_pages(data)
    p = pages[len(pages) // 2]
    data[p * ps:(p + 1) * ps] = bytes(ps)
    return data


def zero_random_btree_page(data: bytearray, rng: random.Random) -> bytearray:
    ps = _page_size(data)
    p = rng.choice(_btree_pages(data))
    data[p * ps:(p + 1) * ps] = bytes(ps)
    return data


def random_bytes_over_a_page(data: bytearray, rng: random.Random) -> bytearray:
    ps = _page_size(data)
    p = rng.choice(_btree_pages(data))
    data[p * ps:(p + 1) * ps] = rng.randbytes(ps)
    return data


def flip_btree_page_header(data: bytearray, rng: random.Random) -> bytearray:
    ps = _page_size(data)
    p = rng.choice(_btree_pages(data))
    for i in range(1, 8):  # freeblock, cell count, content start, fragmented bytes
        data[p * ps + i] ^= 0xFF
    return data


def flip_cell_pointers(data: bytearray, rng: random.Random) -> bytearray:
    ps = _page_size(data)
    leaves = [p for p in _btree_pages(data) if data[p * ps] == 0x0D
              and int.from_bytes(data[p * ps + 3:p * ps + 5], "big") >= 3]
    p = rng.choice(leaves)
    for i in range(8, 14):  # the first three cell pointers of a table leaf
        data[p * ps + i] ^= 0xFF
    return data


def flip_page_type(data: bytearray, rng: random.Random) -> bytearray:
    ps = _page_size(data)
    p = rng.choice(_btree_pages(data))
    data[p * ps] = 0x07  # not a page type
    return data


def truncate_to_half(data: bytearray, rng: random.Random) -> bytearray:
    ps = _page_size(data)
    return data[:(len(data) // ps // 2) * ps]


def truncate_mid_page(data: bytearray, rng: random.Random) -> bytearray:
    return data[:len(data) - _page_size(data) // 2]


def bad_page_size(data: bytearray, rng: random.Random) -> bytearray:
    data[16:18] = (1000).to_bytes(2, "big")  # not a power of two
    return data


def other_page_size(data: bytearray, rng: random.Random) -> bytearray:
    data[16:18] = (_page_size(data) * 2).to_bytes(2, "big")  # valid, but not the file's
    return data


def wipe_schema_page(data: bytearray, rng: random.Random) -> bytearray:
    data[100:_page_size(data)] = b"\xff" * (_page_size(data) - 100)
    return data


def break_freelist_pointer(data: bytearray, rng: random.Random) -> bytearray:
    data[32:36] = (0xFFFFFFFF).to_bytes(4, "big")  # first freelist trunk page
    data[36:40] = (3).to_bytes(4, "big")  # and a freelist count
    return data


def zero_last_page(data: bytearray, rng: random.Random) -> bytearray:
    ps = _page_size(data)
    data[-ps:] = bytes(ps)
    return data


CORRUPTIONS: list[Callable[[bytearray, random.Random], bytearray]] = [
    zero_middle_page, zero_random_btree_page, random_bytes_over_a_page, flip_btree_page_header,
    flip_cell_pointers, flip_page_type, truncate_to_half, truncate_mid_page, bad_page_size,
    other_page_size, wipe_schema_page, break_freelist_pointer, zero_last_page,
]


def corrupt(directory: Path, pristine: bytes, how: Callable) -> tuple[Path, bytes]:
    path = directory / DB_FILENAME
    damaged = bytes(how(bytearray(pristine), random.Random(SEED)))
    assert damaged != pristine
    path.write_bytes(damaged)
    return path, damaged


@pytest.mark.parametrize("how", CORRUPTIONS, ids=lambda f: f.__name__)
def test_damaged_store_is_refused_named_and_untouched(tmp_path, pristine, how):
    path, damaged = corrupt(tmp_path, pristine, how)
    with pytest.raises(CorruptDatabaseError) as refused:
        Store(path).open()
    message = str(refused.value)
    assert str(path) in message
    assert "labconsole store restore BACKUP" in message and "move it away" in message
    assert path.read_bytes() == damaged
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


@pytest.mark.parametrize("how", [zero_middle_page, flip_cell_pointers, truncate_mid_page],
                         ids=lambda f: f.__name__)
def test_command_line_refuses_to_write_into_a_damaged_store(tmp_path, pristine, how, capsys):
    path, damaged = corrupt(tmp_path, pristine, how)
    rc = cli_main(["--data-dir", str(tmp_path), "workflow", "run", "ELISA Readout", "--input", "{}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"labconsole: {path}: is damaged" in err and "Traceback" not in err
    assert path.read_bytes() == damaged


def test_damage_message_points_at_the_latest_backup(tmp_path, pristine):
    backups = tmp_path / "backups"
    backups.mkdir()
    for stamp in ("20240101-020000", "20240102-020000"):
        (backups / f"labconsole-{stamp}.sqlite3").write_bytes(pristine)
    path, _ = corrupt(tmp_path, pristine, zero_middle_page)
    with pytest.raises(CorruptDatabaseError, match="latest backup: .*labconsole-20240102-020000"):
        Store(path).open()


def test_healthy_store_passes_the_check_on_open(tmp_path, pristine):
    path = tmp_path / DB_FILENAME
    path.write_bytes(pristine)
    store = Store(path).open()
    try:
        check = store.last_open_check
        assert check.ok and check.complete and check.check == "quick_check"
        assert store.count_orders() > 600
    finally:
        store.close()


def test_check_on_open_stops_at_its_budget_and_says_so(tmp_path, pristine, caplog):
    path = tmp_path / DB_FILENAME
    path.write_bytes(pristine)
    store = Store(path)
    store.open_check_seconds = 0.0
    with caplog.at_level(logging.WARNING, logger="core.store"):
        store.open()
    try:
        assert store.last_open_check.complete is False
        assert "partial" in caplog.text and "labconsole store check" in caplog.text
    finally:
        store.close()


# ---------------------------------------------------------------------- the place of the file


def test_directory_where_the_database_file_belongs(tmp_path, capsys):
    (tmp_path / DB_FILENAME).mkdir()
    with pytest.raises(StoreError, match=f"{tmp_path / DB_FILENAME}: is a directory"):
        Store(tmp_path / DB_FILENAME).open()
    rc = cli_main(["--data-dir", str(tmp_path), "workflow", "list"])
    err = capsys.readouterr().err
    assert rc == 2 and "is a directory" in err and "Traceback" not in err
    assert (tmp_path / DB_FILENAME).is_dir()


def test_data_dir_that_cannot_be_created(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=f"cannot create the data directory {blocker / 'data'}"):
        resolve_data_dir(blocker / "data")
    rc = cli_main(["--data-dir", str(blocker / "data"), "workflow", "list"])
    err = capsys.readouterr().err
    assert rc == 2 and "--data-dir: cannot create the data directory" in err


@pytest.fixture
def unwritable_dir(tmp_path) -> Path:
    """A directory this process cannot create files in (root writes anywhere chmod allows:
    it gets a /proc directory instead)."""
    if os.geteuid() != 0:
        d = tmp_path / "locked"
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
    elif sys.platform == "linux":
        yield Path("/proc/self")
    else:
        pytest.skip("no unwritable directory for root on this platform")


def test_unwritable_data_dir(unwritable_dir, capsys):
    with pytest.raises(StoreError, match=f"the directory {unwritable_dir} is not writable"):
        Store(unwritable_dir / DB_FILENAME).open()
    rc = cli_main(["--data-dir", str(unwritable_dir), "workflow", "list"])
    err = capsys.readouterr().err
    assert rc == 2 and "is not writable" in err and "Traceback" not in err
