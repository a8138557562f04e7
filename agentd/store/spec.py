"""How each table is created: schema, key, change tracking and the indexes maintenance keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

__all__ = ["IndexSpec", "TableSpec", "ts_field"]

UTC_TS = pa.timestamp("us", tz="UTC")


def ts_field(name: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, UTC_TS, nullable=nullable)


@dataclass(frozen=True, slots=True)
class IndexSpec:
    column: str
    kind: Literal["btree", "bitmap"] = "btree"


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    schema: pa.Schema
    # Declared with set_unenforced_primary_key: concurrent merge_insert of the same new key
    # from two processes would otherwise insert it twice (LANCEDB.md, lance #4585).
    primary_key: str | None = None
    # Only for append-mostly tables that are tailed (steps, messages): the stable-row-id index
    # grows with every update, and tailing needs _row_created_at_version, which is 1 without it.
    stable_row_ids: bool = False
    indexes: tuple[IndexSpec, ...] = field(default_factory=tuple)
