"""Importing prompts (and optionally ready-made tasks) from JSONL, all or nothing, without
holding the database for the whole import.

Two passes over the file, which is streamed, never held in memory: the first parses and checks
every line and copies it to a temporary file, writing nothing; the second writes the rows, a
batch of RLHF_IMPORT_BATCH_LINES lines per transaction, into a hidden staging project (its
tasks closed, so no annotator is handed one), and then moves them into the project with two
UPDATEs in one short transaction. Annotators' writes get in between the batches (on SQLite a
20k-line import used to hold the only write lock for 7 s); nobody sees a half-written import;
and if anything fails part way, the staging project is deleted.
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from config.errors import ApplicationError

from ..models import Project, Prompt, RankingTask, Response, Round, TaskResponse, prompt_content_hash
from .tasks import MAX_RESPONSES, MIN_RESPONSES, sampling_normalize, tasks_bulk_insert

log = logging.getLogger(__name__)

ALLOWED_KEYS = {"prompt", "messages", "responses", "reference", "tags", "gold", "source"}
ROLES = {"system", "user", "assistant"}
MAX_REPORTED_ERRORS = 1000
# After a large import PostgreSQL's planner statistics still describe the tables as they were
# until autovacuum's next ANALYZE (which never comes where autovacuum is off). With them stale,
# it misjudged the next-task reads, e.g. started a parallel worker to read a task's two
# responses, and next-task latency grew with the table. An import this large refreshes them.
STATISTICS_REFRESH_ROWS = 1000
# A staging project this old belongs to an import whose process died; the next import removes it.
STALE_STAGING = timedelta(hours=6)


def _statistics_refresh() -> None:
    if connection.vendor == "postgresql":
        tables = [m._meta.db_table for m in (Prompt, Response, RankingTask, TaskResponse)]
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {', '.join(tables)}")


@dataclass
class ImportResult:
    lines: int = 0
    prompts_created: int = 0
    tasks_created: int = 0
    # Lines whose prompt is already in the project or earlier in the file; they are skipped, so
    # importing the same file twice adds nothing.
    duplicates: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"lines": self.lines, "prompts_created": self.prompts_created,
                "tasks_created": self.tasks_created, "duplicates": self.duplicates}


@dataclass
class _Row:
    line: int
    text: str
    messages: list | None
    tags: list
    reference: str
    source: str
    responses: list[dict]
    gold: int | None
    content_hash: str = ""


def _parse_messages(value) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise ValueError('"messages" must be a non-empty list of {"role", "content"} objects')
    for i, m in enumerate(value):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or m.get("role") not in ROLES \
                or not isinstance(m.get("content"), str):
            raise ValueError(f'messages[{i}] must be {{"role": one of {sorted(ROLES)}, "content": str}}')
    if value[-1]["role"] == "assistant":
        raise ValueError("the last message must not be the assistant's: it is what the model answers")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _parse_response(value, i: int) -> dict:
    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, dict) or not isinstance(value.get("text"), str) or not value["text"].strip():
        raise ValueError(f"responses[{i}] must be a non-empty string or an object with a text")
    extra = set(value) - {"text", "model_name", "sampling"}
    if extra:
        raise ValueError(f"responses[{i}] has unknown keys {sorted(extra)}")
    try:
        sampling = sampling_normalize(value.get("sampling"))
    except ApplicationError as exc:
        raise ValueError(f"responses[{i}]: {exc.message}") from None
    return {"text": value["text"], "model_name": str(value.get("model_name") or ""), "sampling": sampling}


def _parse_line(raw: str, number: int, default_source: str) -> _Row:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    unknown = set(obj) - ALLOWED_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; allowed: {sorted(ALLOWED_KEYS)}")
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if has_prompt == has_messages:
        raise ValueError('give exactly one of "prompt" (a string) or "messages" (a list)')
    text, messages = "", None
    if has_prompt:
        if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
            raise ValueError('"prompt" must be a non-empty string')
        text = obj["prompt"]
    else:
        messages = _parse_messages(obj["messages"])
    tags = obj.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError('"tags" must be a list of strings')
    reference = obj.get("reference", "")
    if not isinstance(reference, str):
        raise ValueError('"reference" must be a string')
    source = obj.get("source", default_source)
    if not isinstance(source, str):
        raise ValueError('"source" must be a string')
    responses = obj.get("responses", [])
    if not isinstance(responses, list) or (responses and not MIN_RESPONSES <= len(responses) <= MAX_RESPONSES):
        raise ValueError(f'"responses" must be a list of {MIN_RESPONSES} to {MAX_RESPONSES} responses')
    parsed = [_parse_response(r, i) for i, r in enumerate(responses)]
    gold = obj.get("gold")
    if gold is not None:
        if not parsed:
            raise ValueError('"gold" needs "responses"')
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(parsed):
            raise ValueError(f'"gold" must be the index (0..{len(parsed) - 1}) of the best response')
    row = _Row(number, text, messages, tags, reference, source[:200], parsed, gold)
    row.content_hash = prompt_content_hash(text, messages)
    return row


def _decode(line: bytes | str) -> str:
    if isinstance(line, bytes):
        try:
            return line.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 ({exc.reason})") from None
    return line.lstrip("\ufeff")


@dataclass
class _Checked:
    """What the first pass keeps: the line of each prompt's first occurrence (by content hash,
    32 bytes each), not the rows themselves."""

    lines: int = 0
    first_line: dict[bytes, int] = field(default_factory=dict)
    duplicates: list[dict] = field(default_factory=list)


def _check(lines: Iterable[bytes | str], spool, source: str) -> _Checked:
    checked = _Checked()
    errors: list[dict] = []
    bad = 0
    for number, raw in enumerate(lines, start=1):
        checked.lines = number
        data = raw if isinstance(raw, bytes) else raw.encode()
        spool.write(data if data.endswith(b"\n") else data + b"\n")
        try:
            text = _decode(raw).strip()
            if not text:
                continue
            digest = bytes.fromhex(_parse_line(text, number, source).content_hash)
        except ValueError as exc:
            bad += 1
            if len(errors) < MAX_REPORTED_ERRORS:  # a file of garbage should not make a huge reply
                errors.append({"line": number, "error": str(exc)})
            continue
        first = checked.first_line.setdefault(digest, number)
        if first != number:
            checked.duplicates.append({"line": number, "duplicate_of_line": first})
    if errors:
        raise ApplicationError(f"{bad} bad line(s), nothing imported; first: line {errors[0]['line']}: "
                               f"{errors[0]['error']}", code="invalid_import", details={"errors": errors})
    if not checked.first_line:
        raise ApplicationError("the file holds no prompts", code="invalid_import")
    return checked


def _staging_create(project: Project) -> Project:
    return Project.all_objects.create(
        name=f"import into {project.pk}", slug=f"__import-{project.pk}-{secrets.token_hex(8)}", import_target=project,
        responses_per_task=project.responses_per_task, rankings_per_task=project.rankings_per_task,
        allow_ties=project.allow_ties)


def _staging_discard(staging: Project, batch: int = 2000) -> None:
    """Delete a staging project and its rows a batch at a time (it may hold a million), each
    batch its own transaction so that annotators' writes get in between."""
    while True:
        with transaction.atomic():
            ids = list(RankingTask.objects.filter(project=staging).values_list("id", flat=True)[:batch])
            if not ids:
                break
            TaskResponse.objects.filter(task_id__in=ids).delete()
            RankingTask.objects.filter(id__in=ids).delete()
    while True:
        with transaction.atomic():
            ids = list(Prompt.objects.filter(project=staging).values_list("id", flat=True)[:batch])
            if not ids:
                break
            Response.objects.filter(prompt_id__in=ids).delete()
            Prompt.objects.filter(id__in=ids).delete()
    Project.all_objects.filter(pk=staging.pk).delete()


def _stale_staging_discard() -> None:
    cutoff = timezone.now() - STALE_STAGING
    for staging in Project.all_objects.filter(import_target__isnull=False, created_at__lt=cutoff):
        _staging_discard(staging)


def _write_batch(project: Project, staging: Project, rows: list[_Row], result: ImportResult) -> None:
    existing = dict(Prompt.objects.filter(project=project, content_hash__in=[r.content_hash for r in rows])
                    .values_list("content_hash", "id"))
    if existing:
        result.duplicates.extend({"line": row.line, "duplicate_of_prompt": existing[row.content_hash]}
                                 for row in rows if row.content_hash in existing)
        rows = [row for row in rows if row.content_hash not in existing]
    with transaction.atomic():
        prompts = Prompt.objects.bulk_create([
            Prompt(project=staging, text=row.text, messages=row.messages, tags=row.tags, reference=row.reference,
                   source=row.source, content_hash=row.content_hash) for row in rows
        ])
        items = [
            (prompt, [Response(prompt=prompt, text=r["text"], source=Response.Source.IMPORTED,
                               model_name=r["model_name"], sampling=r["sampling"]) for r in row.responses], row.gold)
            for prompt, row in zip(prompts, rows, strict=True) if row.responses
        ]
        if items:
            tasks_bulk_insert(project=staging, round=None, items=items, closed=True)
    result.prompts_created += len(prompts)
    result.tasks_created += len(items)


def _publish(project: Project, staging: Project, round: Round | None) -> None:
    """Make the staged rows the project's: two UPDATEs, one short transaction."""
    with transaction.atomic():
        if round is not None and not Round.objects.filter(pk=round.pk, project=project).exists():
            raise ApplicationError(f"round {round.pk} was deleted during the import", code="invalid_import")
        Prompt.objects.filter(project=staging).update(project=project)
        RankingTask.objects.filter(project=staging).update(project=project, round=round, claimed=0)
        Project.all_objects.filter(pk=staging.pk).delete()


def prompts_import(*, project: Project, lines: Iterable[bytes | str], source: str = "import",
                   round: Round | None = None) -> ImportResult:
    """Parse every line, then import them all, or nothing if any line is bad: the error's details
    list each bad line's number and reason. Prompts already in the project or earlier in the file
    are skipped and listed as duplicates, so importing the same file twice adds nothing."""
    if round is not None and round.project_id != project.pk:
        raise ApplicationError(f"round {round.pk} belongs to another project", code="invalid_import")
    with tempfile.TemporaryFile() as spool:
        checked = _check(lines, spool, source)
        spool.seek(0)
        result = ImportResult(lines=checked.lines, duplicates=checked.duplicates)
        _stale_staging_discard()
        staging = _staging_create(project)
        try:
            batch: list[_Row] = []
            for number, raw in enumerate(spool, start=1):
                text = _decode(raw).strip()
                if not text:
                    continue
                row = _parse_line(text, number, source)
                if checked.first_line[bytes.fromhex(row.content_hash)] != number:
                    continue  # a duplicate of an earlier line
                batch.append(row)
                if len(batch) >= settings.RLHF_IMPORT_BATCH_LINES:
                    _write_batch(project, staging, batch, result)
                    batch = []
            if batch:
                _write_batch(project, staging, batch, result)
            _publish(project, staging, round)
        except BaseException:
            try:
                _staging_discard(staging)
            except Exception:  # keep the first error; a stale staging project goes at the next import
                log.exception("could not remove the staging project of a failed import")
            raise
    result.duplicates.sort(key=lambda d: d["line"])
    if result.prompts_created >= STATISTICS_REFRESH_ROWS:
        _statistics_refresh()
    return result
