"""Imports against abuse (issue #15, item 3): the body is capped (413), streamed rather than held
in memory, written in batches that let annotators' writes through, and invisible until the
whole import is in; a failure part way leaves nothing behind."""

from __future__ import annotations

import json
import threading
import tracemalloc

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from annotate.models import Lease, Project, Prompt, RankingTask
from annotate.services import imports
from annotate.services.imports import prompts_import
from annotate.services.leases import lease_heartbeat, task_lease_next
from annotate.services.tokens import api_token_create
from config.errors import ApplicationError, NotFound

from .test_annotate_api import NDJSON, assert_error_shape

pytestmark = pytest.mark.sqlite


def jsonl(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def admin_client(admin) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Token {api_token_create(user=admin)[1]}")


@pytest.mark.django_db
def test_an_import_over_the_limit_is_a_413_and_imports_nothing(admin, make_project, settings):
    settings.RLHF_IMPORT_MAX_BYTES = 10_000
    project = make_project()
    body = jsonl({"prompt": f"p{i}"} for i in range(2000))
    assert len(body) > 10_000
    client = admin_client(admin)
    error = assert_error_shape(client.post(f"/api/projects/{project.pk}/import", data=body, content_type=NDJSON),
                               413, "body_too_large")
    assert "10000" in error["message"]
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("p.jsonl", body, content_type="application/jsonl")
    assert_error_shape(client.post(f"/api/projects/{project.pk}/import", {"file": upload}, format="multipart"),
                       413, "body_too_large")
    assert Prompt.objects.filter(project=project).count() == 0
    small = client.post(f"/api/projects/{project.pk}/import", data=jsonl([{"prompt": "ok"}]), content_type=NDJSON)
    assert small.status_code == 201


@pytest.mark.django_db
def test_a_body_without_content_length_is_capped_while_it_streams(admin, make_project, settings):
    from annotate.api.projects import _capped

    settings.RLHF_IMPORT_MAX_BYTES = 100
    project = make_project()
    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, lines=_capped(iter([b'{"prompt": "x"}\n'] * 20), 100))
    assert exc.value.status == 413
    assert Prompt.objects.filter(project=project).count() == 0


@pytest.mark.django_db
def test_the_body_is_streamed_not_held(make_project, settings):
    settings.RLHF_IMPORT_BATCH_LINES = 100
    project = make_project()
    rows = [{"prompt": f"prompt {i} " + "w" * 2500, "responses": [f"a{i}", f"b{i}"]} for i in range(2000)]
    size = sum(len(json.dumps(r)) + 1 for r in rows)  # about 5 MB

    def lines():  # as a request body is read: one line at a time, never the whole of it
        for r in rows:
            yield json.dumps(r).encode() + b"\n"

    tracemalloc.start()
    try:
        result = prompts_import(project=project, lines=lines())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.prompts_created == 2000
    # The whole body parsed into rows took about 4.6 times its size; streamed, well under it.
    assert peak < 0.5 * size, (peak, size)


@pytest.mark.django_db(transaction=True)
def test_annotators_write_between_batches_and_see_nothing_until_the_end(make_project, make_user, make_tasks,
                                                                         settings, monkeypatch):
    settings.RLHF_IMPORT_BATCH_LINES = 50
    project = make_project(rankings_per_task=1)
    make_tasks(project, 1)
    ann, other = make_user("ann"), make_user("other")
    lease = task_lease_next(project=project, annotator=ann)
    seen: list[dict] = []
    real_insert = imports.tasks_bulk_insert

    def annotators_meanwhile():
        # Another request's connection, while the import is between two of its batches.
        def work(out: dict):
            try:
                lease_heartbeat(lease_id=lease.pk, annotator=ann)  # a write
                out["prompts"] = Prompt.objects.filter(project=project).count()
                out["tasks"] = RankingTask.objects.filter(project=project).count()
                out["next"] = task_lease_next(project=project, annotator=other)  # a write too
                staging = Project.all_objects.get(import_target=project)
                out["staging_hidden"] = not Project.objects.filter(pk=staging.pk).exists()
                try:
                    task_lease_next(project=staging.pk, annotator=other)
                except NotFound:
                    out["staging_refused"] = True
            except Exception as exc:  # reported below, not lost in the thread
                out["error"] = repr(exc)
            finally:
                connection.close()

        out: dict = {}
        thread = threading.Thread(target=work, args=(out,))
        thread.start()
        thread.join(timeout=10)
        out["finished"] = not thread.is_alive()
        seen.append(out)

    def spy(**kwargs):
        tasks = real_insert(**kwargs)
        if not seen:
            transaction.on_commit(annotators_meanwhile)  # after this batch is committed
            seen.append({})
        return tasks

    monkeypatch.setattr(imports, "tasks_bulk_insert", spy)
    result = prompts_import(project=project, lines=[json.dumps({"prompt": f"q{i}", "responses": ["a", "b"]})
                                                    for i in range(300)])
    assert result.tasks_created == 300
    meanwhile = seen[-1]
    assert meanwhile.get("finished") and "error" not in meanwhile, meanwhile
    # Between two batches: the annotator's writes went through, and nothing of the import showed.
    assert meanwhile["prompts"] == 1 and meanwhile["tasks"] == 1 and meanwhile["next"] is None
    assert meanwhile["staging_hidden"] and meanwhile.get("staging_refused")
    # At the end, all of it at once, open to annotators and in the right place.
    assert RankingTask.objects.filter(project=project, claimed=0).count() == 300
    assert Prompt.objects.filter(project=project).count() == 301
    assert not Project.all_objects.filter(import_target__isnull=False).exists()
    assert task_lease_next(project=project, annotator=other) is not None
    assert Lease.objects.get(pk=lease.pk).status == "active"


@pytest.mark.django_db(transaction=True)
def test_a_failure_part_way_leaves_nothing(make_project, settings, monkeypatch):
    settings.RLHF_IMPORT_BATCH_LINES = 10
    project = make_project()
    calls = []
    real = imports._write_batch

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(*args)

    monkeypatch.setattr(imports, "_write_batch", failing)
    with pytest.raises(RuntimeError):
        prompts_import(project=project, lines=[json.dumps({"prompt": f"q{i}", "responses": ["a", "b"]})
                                               for i in range(50)])
    assert Prompt.objects.count() == 0 and RankingTask.objects.count() == 0
    assert not Project.all_objects.filter(import_target__isnull=False).exists()


@pytest.mark.django_db
def test_a_dead_imports_staging_project_is_removed_by_the_next(make_project):
    """Dead before its rows started to move: removed (after STALE_STAGING)."""
    from datetime import timedelta

    from django.utils import timezone

    project = make_project()
    staging = imports._staging_create(project, None)
    Prompt.objects.create(project=staging, text="left over")
    Project.all_objects.filter(pk=staging.pk).update(created_at=timezone.now() - timedelta(days=1))
    prompts_import(project=project, lines=[b'{"prompt": "new"}'])
    assert not Project.all_objects.filter(pk=staging.pk).exists()
    assert list(Prompt.objects.values_list("text", flat=True)) == ["new"]


@pytest.mark.django_db
def test_a_file_of_garbage_is_not_read_to_its_end(make_project):
    project = make_project()
    read = []

    def lines():
        yield b'{"prompt": "fine"}\n'
        for i in range(5000):
            read.append(i)
            yield b"not json\n"

    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, lines=lines())
    assert len(exc.value.details["errors"]) == imports.MAX_REPORTED_ERRORS and "not read" in exc.value.message
    assert len(read) == imports.MAX_REPORTED_ERRORS  # stopped at the last error it reports
    assert Prompt.objects.filter(project=project).count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_move_cut_short_is_completed_not_undone(make_project, settings, monkeypatch):
    from datetime import timedelta

    settings.RLHF_IMPORT_BATCH_LINES = 10  # moves 100 prompts per transaction
    project = make_project()
    real = imports._publish
    moved = []

    def dies_after_one_batch(target, staging):
        from django.db.models import Min

        Project.all_objects.filter(pk=staging.pk).update(import_publishing=True)
        first = Prompt.objects.filter(project=staging).aggregate(Min("id"))["id__min"]
        ids = list(range(first, first + 100))
        RankingTask.objects.filter(prompt_id__in=ids).update(project=target, claimed=0)
        Prompt.objects.filter(id__in=ids).update(project=target)
        moved.append(len(ids))
        raise RuntimeError("the process died here")

    monkeypatch.setattr(imports, "_publish", dies_after_one_batch)
    with pytest.raises(RuntimeError):
        prompts_import(project=project, lines=[json.dumps({"prompt": f"q{i}", "responses": ["a", "b"]})
                                               for i in range(250)])
    assert Prompt.objects.filter(project=project).count() == 100  # committed, part way through
    monkeypatch.setattr(imports, "_publish", real)
    imports.imports_settle(older_than=timedelta(0))  # as the next import or bootstrap does once it is stale
    assert Prompt.objects.filter(project=project).count() == 250
    assert RankingTask.objects.filter(project=project, claimed=0).count() == 250
    assert not Project.all_objects.filter(import_target__isnull=False).exists()


@pytest.mark.django_db
def test_a_large_import_moves_in_batches_each_prompt_with_its_task(make_project, settings):
    settings.RLHF_IMPORT_BATCH_LINES = 5  # 50 rows moved per transaction
    project = make_project()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        prompts_import(project=project, lines=[json.dumps({"prompt": f"q{i}", "responses": ["a", "b"]})
                                               for i in range(120)])
    moves = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('UPDATE "annotate_prompt"')]
    assert len(moves) == 3  # 50 + 50 + 20
    assert RankingTask.objects.filter(project=project, claimed=0).count() == 120


@pytest.mark.django_db(transaction=True)
def test_a_garbage_import_cut_short_still_gets_its_whole_answer_over_gunicorn(admin, make_project, tmp_path):
    """The import stops reading at the last error it reports; the rest of the body must still be
    read (and dropped) before answering, or gunicorn's close with unread bytes resets the
    connection and the client loses the end of the error report (seen: IncompleteRead)."""
    import requests

    from tests.web_process import Web

    if connection.vendor == "sqlite":
        pytest.skip("gunicorn beside the test process's own SQLite writer lock is the PostgreSQL pass's job; "
                    "the drain does not depend on the database")
    project = make_project()
    token = api_token_create(user=admin)[1]
    body = b'{"prompt": "x"}\n' + b"not json\n" * (48 * 1024 * 1024 // 9)
    web = Web(tmp_path)
    web.start()
    try:
        for _ in range(6):  # a reset depends on timing: ask more than once
            r = requests.post(f"{web.url}/api/projects/{project.pk}/import", data=body, timeout=120,
                              headers={"Authorization": f"Token {token}", "Content-Type": "application/x-ndjson"})
            assert r.status_code == 400
            assert len(r.json()["error"]["details"]["errors"]) == imports.MAX_REPORTED_ERRORS
    finally:
        web.stop()
    assert Prompt.objects.filter(project=project).count() == 0
