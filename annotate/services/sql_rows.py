"""Reading and writing rows with plain SQL where the ORM costs more than the statement (the hot
annotation requests of queue_sql.py, token authentication): one-statement INSERTs with each
field's own conversion, instances marked as stored, and the value conversions the raw cursor skips."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache

from django.db import connection
from django.db.models import Model
from django.utils.dateparse import parse_datetime


def row_locks() -> bool:
    return connection.features.has_select_for_update


def datetime_in(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def datetime_out(value) -> datetime:
    """A timestamp as the driver returns it (aware on PostgreSQL, naive UTC or text on SQLite)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def json_out(value):
    """A JSON column as the driver returns it: Django reads jsonb as text on PostgreSQL too."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


@cache
def _insert_sql(table: str, columns: tuple[str, ...], rows: int, returning: bool) -> str:
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * rows)}"
            + (" RETURNING id" if returning else ""))


def rows_insert(model: type[Model], rows: list[dict], *, returning: bool = False) -> list[int]:
    """INSERT rows (field name -> value, the same names in every row) in one statement. Values go
    through each field's own conversion for this database, as Model.save() would do."""
    if not rows:
        return []
    fields = [(name, model._meta.get_field(name)) for name in rows[0]]
    params = [field.get_db_prep_save(row[name], connection) for row in rows for name, field in fields]
    sql = _insert_sql(model._meta.db_table, tuple(field.column for _, field in fields), len(rows), returning)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()] if returning else []


def as_saved(instance: Model) -> Model:
    """A model instance built from values just written by rows_insert, marked as stored."""
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance
