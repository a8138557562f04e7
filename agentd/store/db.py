"""Opening the database: one async LanceDB connection per process, every table, and the meta row.

Creation is idempotent and safe when several processes open a fresh database at once (each
table is created with ``exist_ok`` and re-opened on a lost race). The ``meta`` table records the
schema version and ``num_shards``; a database created with another shard count is refused,
because every stored ``shard`` column and every worker's ownership would be wrong.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa

from agentd.store.actions import ACTIONS
from agentd.store.conversations import CONVERSATIONS, MESSAGES, PARTICIPANTS
from agentd.store.owners import OWNERS
from agentd.store.sessions import SESSIONS
from agentd.store.spec import TableSpec
from agentd.store.steps import STEPS

__all__ = ["SCHEMA_VERSION", "TABLES", "Store", "StoreError"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
METADATA_CACHE_BYTES = 64 << 20
INDEX_CACHE_BYTES = 256 << 20

META = TableSpec(
    name="meta",
    schema=pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string(), nullable=False)]),
    primary_key="key",
)
TABLES: tuple[TableSpec, ...] = (META, SESSIONS, STEPS, ACTIONS, CONVERSATIONS, MESSAGES, PARTICIPANTS, OWNERS)
_STABLE_ROW_IDS = {"new_table_enable_stable_row_ids": "true"}


class StoreError(Exception):
    """The database cannot be used as configured (wrong shard count, newer schema, ...)."""


class Store:
    """The open tables of one database. Create with ``await Store.open(...)``; one per process.

    Attributes are LanceDB ``AsyncTable`` objects. The connection reads with a zero
    consistency interval, so every query sees the other processes' latest commits.
    """

    def __init__(self, uri: str, conn: Any, tables: dict[str, Any], num_shards: int) -> None:
        self.uri = uri
        self.conn = conn
        self.num_shards = num_shards
        self.tables = tables
        self.meta = tables["meta"]
        self.sessions = tables["sessions"]
        self.steps = tables["steps"]
        self.actions = tables["actions"]
        self.conversations = tables["conversations"]
        self.messages = tables["messages"]
        self.participants = tables["participants"]
        self.owners = tables["owners"]

    @classmethod
    async def open(cls, uri: str, num_shards: int, *, create: bool = True) -> Store:
        """Open (and with ``create``, create) the database at ``uri``.

        Raises StoreError if the database records another ``num_shards`` or a newer schema,
        or if it does not exist and ``create`` is false.
        """
        if "://" not in uri:
            await asyncio.to_thread(_prepare_local_dir, Path(uri), create)
        # Bounded caches: LanceDB's default metadata cache grows with every commit a worker makes
        # (about 1 MB/s at 10k steps/s), so an unbounded one looks like a leak in RSS.
        session = lancedb.Session(
            metadata_cache_size_bytes=METADATA_CACHE_BYTES, index_cache_size_bytes=INDEX_CACHE_BYTES
        )
        conn = await lancedb.connect_async(uri, read_consistency_interval=timedelta(0), session=session)
        tables: dict[str, Any] = {}
        existing = set(await _table_names(conn))
        # A database whose meta row is written has had all its tables: one missing now was
        # deleted or lost, and creating it empty would silently drop its data.
        established = "meta" in existing and await _meta_written(conn)
        for spec in TABLES:
            if spec.name not in existing and (not create or established):
                hint = "restore it from a backup" if established else "not an agentd database?"
                raise StoreError(f"database at {uri} has no table {spec.name!r}: {hint}")
            tables[spec.name] = await _open_or_create(conn, spec)
            await _add_missing_columns(tables[spec.name], spec)
        recorded = await _ensure_meta(tables["meta"], num_shards)
        if recorded != num_shards:
            raise StoreError(
                f"database at {uri} was created with num_shards={recorded}, but the config says "
                f"num_shards={num_shards}; set [storage] num_shards = {recorded} (the shard count "
                "is fixed when a database is created)"
            )
        for spec in TABLES:
            if spec.stable_row_ids:
                await _assert_stable_row_ids(tables[spec.name], spec)
        return cls(uri, conn, tables, num_shards)

    async def versions(self) -> dict[str, int]:
        return {name: await table.version() for name, table in self.tables.items()}


def _prepare_local_dir(path: Path, create: bool) -> None:
    """Create the directory owner-only (0700): sessions, guidance and transcripts are private.

    An existing directory keeps its mode (an operator may have widened it on purpose, e.g. the
    unit's ``StateDirectoryMode=``); files LanceDB creates inside follow the process umask,
    which agentd sets to 077 at start (``agentd.cli``).
    """
    if not create and not path.exists():
        raise StoreError(f"no agentd database at {path} (start the daemon once to create it)")
    if not path.exists():
        path.mkdir(parents=True, mode=0o700, exist_ok=True)


async def _table_names(conn: Any) -> list[str]:
    result = await conn.list_tables()
    names = getattr(result, "tables", result)
    return list(names)


async def _open_or_create(conn: Any, spec: TableSpec) -> Any:
    for attempt in range(10):
        try:
            return await conn.open_table(spec.name)
        except (ValueError, FileNotFoundError, RuntimeError):
            pass
        try:
            table = await conn.create_table(
                spec.name,
                schema=spec.schema,
                exist_ok=True,
                storage_options=_STABLE_ROW_IDS if spec.stable_row_ids else None,
            )
        except Exception as exc:  # another process won the creation race; open it next turn
            log.debug("create_table %s lost a race (%s), retrying", spec.name, exc)
            await asyncio.sleep(0.05 * (attempt + 1))
            continue
        if spec.primary_key:
            try:
                await table.set_unenforced_primary_key(spec.primary_key)
            except Exception as exc:  # already set by a concurrent creator
                log.debug("set_unenforced_primary_key on %s: %s", spec.name, exc)
        return table
    raise StoreError(f"could not open or create table {spec.name!r}")


async def _meta_written(conn: Any) -> bool:
    try:
        meta = await conn.open_table("meta")
        return int(await meta.count_rows("key = 'num_shards'")) > 0
    except Exception as exc:  # unreadable meta: let the normal open report it
        log.debug("reading meta: %s", exc)
        return False


async def _add_missing_columns(table: Any, spec: TableSpec) -> None:
    """Migrate a table created by an older agentd: add the columns it lacks, all null.

    New columns are always nullable, so old rows stay valid. Two processes opening an old
    database at once may race here; the loser finds the columns present on its next look.
    """
    for attempt in range(5):
        present = set((await table.schema()).names)
        missing = [field for field in spec.schema if field.name not in present]
        if not missing:
            return
        try:
            await table.add_columns(missing)
            log.info("table %s: added columns %s", spec.name, ", ".join(f.name for f in missing))
            return
        except Exception as exc:
            log.debug("adding columns to %s raced (%s); re-checking", spec.name, exc)
            await asyncio.sleep(0.05 * (attempt + 1))
    raise StoreError(f"cannot add columns to table {spec.name!r}")


async def _ensure_meta(meta: Any, num_shards: int) -> int:
    """Record schema version and num_shards once; return the recorded num_shards."""
    rows = pa.Table.from_pylist(
        [
            {"key": "schema_version", "value": str(SCHEMA_VERSION)},
            {"key": "num_shards", "value": str(num_shards)},
        ],
        schema=META.schema,
    )
    current = {r["key"]: r["value"] for r in (await meta.query().to_arrow()).to_pylist()}
    if "num_shards" not in current:
        await meta.merge_insert("key").when_not_matched_insert_all().execute(rows)
        current = {r["key"]: r["value"] for r in (await meta.query().to_arrow()).to_pylist()}
    version = int(current.get("schema_version", SCHEMA_VERSION))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database schema version {version} is newer than this agentd ({SCHEMA_VERSION}); upgrade agentd"
        )
    return int(current["num_shards"])


async def _assert_stable_row_ids(table: Any, spec: TableSpec) -> None:
    """Tailing silently finds nothing without stable row ids (LANCEDB.md): fail loudly instead."""
    if await table.count_rows() == 0:
        return
    # Without stable row ids the column reads 1 (the creation version) for every row; with
    # them, rows carry the version of the commit that added them, which is always > 1.
    probe = await table.query().select(["_row_created_at_version"]).limit(1).to_arrow()
    if probe.num_rows and probe.column(0)[0].as_py() <= 1:
        raise StoreError(f"table {spec.name!r} lacks stable row ids; it cannot be tailed exactly once")
