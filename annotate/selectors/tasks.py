"""What an annotator is shown for a leased task."""

from __future__ import annotations

from django.db import connection

from ..models import Lease, Prompt, RankingTask, Response, TaskResponse
from ..services.sql_rows import json_out


def task_as_shown(lease: Lease) -> dict:
    """The task as the lease's annotator sees it: the prompt and the responses in the order
    shuffled for them, and nothing about where the responses came from (blind ranking). One
    query: this runs on every next-task request."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.id, r.text, p.id, p.text, p.messages FROM {TaskResponse._meta.db_table} tr "
            f"JOIN {Response._meta.db_table} r ON r.id = tr.response_id "
            f"JOIN {RankingTask._meta.db_table} t ON t.id = tr.task_id "
            f"JOIN {Prompt._meta.db_table} p ON p.id = t.prompt_id WHERE tr.task_id = %s",
            [lease.task_id])
        rows = cursor.fetchall()
    texts = {row[0]: row[1] for row in rows}
    _, _, prompt_id, prompt_text, messages = rows[0]
    return {"id": lease.task_id, "prompt_id": prompt_id, "prompt": prompt_text, "messages": json_out(messages),
            "responses": [{"id": rid, "text": texts[rid]} for rid in lease.shown_order]}
