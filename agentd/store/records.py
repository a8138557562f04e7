"""Pydantic rows <-> Arrow tables.

Every table row crosses the storage boundary as a pydantic model. JSON-valued columns
(context, payload, data, ...) are stored as strings so that agent types can put anything
JSON-serialisable there without a schema migration.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Self

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

__all__ = ["Record", "dumps_json", "encode_json", "loads_json"]


# One encoder for every call: ``json.dumps`` with non-default options builds a new encoder per
# call, which costs more than encoding a small object (this runs several times per step).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)
encode_json = _ENCODER.encode


def dumps_json(value: Any) -> str | None:
    if value is None:
        return None
    return encode_json(value)


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

    def to_values(self) -> tuple[Any, ...]:
        """The row as a tuple in schema order, JSON columns encoded (see ``arrow_from_columns``)."""
        values = self.__dict__
        json_fields = self.JSON_FIELDS
        return tuple(
            dumps_json(values.get(name)) if name in json_fields else values.get(name) for name in self.SCHEMA.names
        )

    @classmethod
    def to_arrow(cls, records: Iterable[Record]) -> pa.Table:
        # Column by column: one pyarrow conversion per column instead of a dict per row.
        values = [r.__dict__ for r in records]
        json_fields = cls.JSON_FIELDS
        arrays = []
        for field in cls.SCHEMA:
            name = field.name
            column = [v.get(name) for v in values]
            if name in json_fields:
                column = [None if x is None else encode_json(x) for x in column]
            arrays.append(pa.array(column, type=field.type))
        return pa.Table.from_arrays(arrays, schema=cls.SCHEMA)

    @classmethod
    def arrow_from_columns(cls, columns: Sequence[Sequence[Any]]) -> pa.Table:
        """A table from one sequence of values per schema column, JSON columns already encoded.

        Timestamp columns take ``datetime`` objects or integers (microseconds since the epoch, UTC).
        The batching writer's path: no model and no dict per row, one conversion per column.
        """
        schema = cls.SCHEMA
        arrays = [pa.array(column, type=field.type) for column, field in zip(columns, schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=schema)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> list[Self]:
        return [cls.from_row(row) for row in table.to_pylist()]

    @classmethod
    def from_arrow_tolerant(cls, table: pa.Table) -> tuple[list[Self], list[tuple[dict[str, Any], str]]]:
        """Like ``from_arrow``, but one row that does not parse does not fail the others.

        Returns the records and, per bad row, the raw row and the reason, so that a caller can
        quarantine what the row belongs to instead of stalling on it.
        """
        records: list[Self] = []
        bad: list[tuple[dict[str, Any], str]] = []
        for row in table.to_pylist():
            try:
                records.append(cls.from_row(row))
            except Exception as exc:
                bad.append((row, f"{type(exc).__name__}: {exc}"[:500]))
        return records, bad
