"""The tables of the apps that came out of the old `worker` app (training, registry, serving) keep
their rows across the move: on a database that has the old `worker_*` tables, an app's first
migration renames them and brings them up to the current schema; on a new database it creates them.
Used as a RunPython step after a state-only CreateModel."""

from __future__ import annotations

from collections.abc import Callable


def adopt_or_create(app_label: str, old_tables: dict[str, str]) -> Callable:
    """A RunPython forward function: for each model name in `old_tables`, rename the old table to
    the model's table (adding the columns, indexes and constraints it lacks) when the old table
    exists, else create the table."""

    def forward(apps, schema_editor) -> None:
        introspection = schema_editor.connection.introspection
        for model_name, old in old_tables.items():
            model = apps.get_model(app_label, model_name)
            with schema_editor.connection.cursor() as cursor:
                existing = set(introspection.table_names(cursor))
            if old not in existing:
                schema_editor.create_model(model)
                continue
            schema_editor.alter_db_table(model, old, model._meta.db_table)
            for field in model._meta.local_many_to_many:
                through = field.remote_field.through._meta.db_table
                old_through = f"{old}_{field.column}"
                if old_through in existing and through not in existing:
                    schema_editor.alter_db_table(field.remote_field.through, old_through, through)
            _catch_up(schema_editor, model)

    return forward


def _catch_up(schema_editor, model) -> None:
    """Columns, indexes and check constraints added after the old table was made."""
    connection = schema_editor.connection
    table = model._meta.db_table
    with connection.cursor() as cursor:
        columns = {c.name for c in connection.introspection.get_table_description(cursor, table)}
        constraints = connection.introspection.get_constraints(cursor, table)
    for field in model._meta.local_fields:
        if field.column not in columns:
            schema_editor.add_field(model, field)
    for index in model._meta.indexes:
        if index.name not in constraints:
            schema_editor.add_index(model, index)
    for constraint in model._meta.constraints:
        if constraint.name in constraints:  # its definition may have grown since (new job kinds)
            schema_editor.remove_constraint(model, constraint)
        schema_editor.add_constraint(model, constraint)
