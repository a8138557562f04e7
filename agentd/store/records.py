"""Pydantic rows <-> Arrow tables.

Every table row crosses the storage boundary as a pydantic model. JSON-valued columns
(context, payload, data, ...) are stored as strings so that agent types can put anything
JSON-serialisable there without a schema migration.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, ClassVar, Self

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

__all__ = ["Record", "dumps_json", "loads_json"]


def dumps_json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def loads_json(value: str | None) -> Any:
    if value is None or value == "":
        return None
    return json.loads(value)


class Record(BaseModel):
    """A table row. Subclasses name their Arrow schema and their JSON-encoded columns."""

    model_config = ConfigDict(extra="ignore")

    SCHEMA: ClassVar[pa.Schema]
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ()

    def to_row(self) -> dict[str, Any]:
        # Attribute access, not model_dump(): this runs once per step row on the hot path, and
        # the field values are already plain JSON-able data (validated, or built by us).
        values = self.__dict__
        row = {name: values.get(name) for name in self.SCHEMA.names}
        for name in self.JSON_FIELDS:
            row[name] = dumps_json(row[name])
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        data = dict(row)
        for name in cls.JSON_FIELDS:
            if name in data:
                data[name] = loads_json(data[name])
        return cls.model_validate(data)

    @classmethod
    def to_arrow(cls, records: Iterable[Record]) -> pa.Table:
        return pa.Table.from_pylist([r.to_row() for r in records], schema=cls.SCHEMA)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> list[Self]:
        return [cls.from_row(row) for row in table.to_pylist()]
