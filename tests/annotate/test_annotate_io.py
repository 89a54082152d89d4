"""Import (line-numbered errors, all or nothing, duplicates) and export (formats, datasets load)."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotate.models import Prompt, RankingTask, Response
from annotate.services.demonstrations import demonstration_create
from annotate.services.imports import prompts_import
from annotate.services.leases import task_lease_next
from annotate.services.rankings import ranking_submit
from config.errors import ApplicationError

from .test_annotate_api import NDJSON, assert_error_shape, client_for

pytestmark = pytest.mark.django_db


def jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in rows)


@pytest.mark.sqlite
def test_import_reports_every_bad_line_and_imports_nothing(make_project):
    project = make_project()
    lines = jsonl(
        {"prompt": "fine"},
        "{not json",
        {"prompt": ""},
        {"prompt": "a", "messages": [{"role": "user", "content": "b"}]},
        {"prompt": "x", "responses": ["only one"]},
        {"prompt": "y", "responses": ["a", "b"], "gold": 2},
        {"prompt": "z", "colour": "red"},
        {"messages": [{"role": "wizard", "content": "hi"}]},
        "[1, 2]",
    ).splitlines()
    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, lines=lines)
    errors = exc.value.details["errors"]
    assert [e["line"] for e in errors] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "not valid JSON" in errors[0]["error"] and "exactly one of" in errors[2]["error"]
    assert '"gold"' in errors[4]["error"] and "unknown keys ['colour']" in errors[5]["error"]
    assert Prompt.objects.filter(project=project).count() == 0


@pytest.mark.sqlite
def test_import_prompts_tasks_gold_and_duplicates(make_project):
    project = make_project(rankings_per_task=3)
    Prompt.objects.create(project=project, text="already here")
    result = prompts_import(project=project, lines=jsonl(
        {"prompt": "What is 2+2?", "reference": "4", "tags": ["math"]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
         "responses": ["Hello!", {"text": "Hi there.", "model_name": "gpt-x", "sampling": {"temperature": 1}}],
         "gold": 1},
        "",
        {"prompt": "What is 2+2?"},
        {"prompt": "already here"},
    ).splitlines())
    assert result.as_dict() == {"lines": 5, "prompts_created": 2, "tasks_created": 1, "duplicates": [
        {"line": 4, "duplicate_of_line": 1}, {"line": 5, "duplicate_of_prompt": Prompt.objects.first().pk}]}
    task = RankingTask.objects.get(project=project)
    assert task.rankings_needed == 3 and task.gold_response.text == "Hi there."
    assert set(Response.objects.filter(prompt=task.prompt).values_list("source", flat=True)) == {"imported"}
    again = prompts_import(project=project, lines=[b'{"prompt": "What is 2+2?"}'])
    assert again.prompts_created == 0 and len(again.duplicates) == 1


def test_import_api_multipart_and_ndjson(admin, make_project):
    project = make_project()
    client = client_for(admin)
    upload = SimpleUploadedFile("p.jsonl", jsonl({"prompt": "one"}, {"prompt": "two", "responses": ["a", "b"]}))
    ok = client.post(f"/api/projects/{project.pk}/import", {"file": upload}, format="multipart")
    assert ok.status_code == 201 and ok.json()["prompts_created"] == 2 and ok.json()["tasks_created"] == 1
    bad = client.post(f"/api/projects/{project.pk}/import", data=jsonl({"prompt": "three"}, "oops"),
                      content_type=NDJSON)
    err = assert_error_shape(bad, 400, "invalid_import")
    assert err["details"]["errors"][0]["line"] == 2 and "line 2" in err["message"]
    assert Prompt.objects.filter(project=project).count() == 2
    nothing = client.post(f"/api/projects/{project.pk}/import", {}, format="json")
    assert_error_shape(nothing, 400, "invalid_import")


def _rank_all(project, users, order=lambda ids: ids):
    for user in users:
        while (lease := task_lease_next(project=project, annotator=user)) is not None:
            ids = sorted(lease.shown_order)
            ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=user,
                           groups=[[i] for i in order(ids)], time_spent_ms=1000)


def _export(client, project, query: str) -> list[dict]:
    response = client.get(f"/api/projects/{project.pk}/export?{query}")
    assert response.status_code == 200 and response["Content-Type"].startswith(NDJSON)
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]


def test_exports_and_datasets_loads_pairs(admin, make_user, make_project, make_tasks, tmp_path):
    import datasets

    project = make_project(responses_per_task=3, rankings_per_task=2)
    tasks = make_tasks(project, 3, responses=3)
    a, b = make_user("a"), make_user("b")
    _rank_all(project, [a])
    _rank_all(project, [b], order=lambda ids: [ids[1], ids[0], ids[2]])
    demonstration_create(prompt=tasks[0].prompt, annotator=a, text="The ideal answer.")
    client = client_for(admin)

    pairs = _export(client, project, "format=pairs")
    assert len(pairs) == 3 * 2 * 3
    row = pairs[0]
    assert {"prompt", "chosen", "rejected", "margin", "annotator", "task", "round"} <= set(row)
    assert row["chosen_lineage"]["model_name"] == "policy-v1" and row["chosen_lineage"]["sampling"]["top_p"] == 0.9
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert ds.num_rows == len(pairs) and {"prompt", "chosen", "rejected", "margin"} <= set(ds.column_names)

    consensus = _export(client, project, "format=pairs&consensus=1")
    # a ranks 0>1>2, b ranks 1>0>2: Borda ties 0 and 1, both beat 2 -> two pairs per task.
    assert len(consensus) == 3 * 2 and all(p["n_rankings"] == 2 for p in consensus)
    rankings = _export(client, project, "format=rankings")
    assert len(rankings) == 6 and rankings[0]["shown_order"] and rankings[0]["responses"][0]["lineage"]
    agg = _export(client, project, "format=rankings&consensus=1")
    assert len(agg) == 3 and len(agg[0]["ranking"]) == 2 and len(agg[0]["ranking"][0]) == 2
    sft = _export(client, project, "format=sft")
    assert sft == [{"messages": [{"role": "user", "content": tasks[0].prompt.text},
                                 {"role": "assistant", "content": "The ideal answer."}],
                    "prompt_id": tasks[0].prompt_id, "demonstration": sft[0]["demonstration"],
                    "response_id": sft[0]["response_id"], "based_on_response": None, "annotator": "a"}]
    prompts = _export(client, project, "format=prompts")
    assert len(prompts) == 3 and prompts[0]["prompt"] == tasks[0].prompt.text
    assert_error_shape(client.get(f"/api/projects/{project.pk}/export?format=csv"), 400, "invalid_format")


def test_conversational_pairs_load_as_a_dataset(admin, make_user, make_project, tmp_path):
    import datasets

    project = make_project()
    prompts_import(project=project, lines=jsonl(
        {"prompt": "plain", "responses": ["x", "y"]},
        {"messages": [{"role": "user", "content": "chat"}], "responses": ["p", {"text": "q", "sampling": {"seed": 3}}]},
    ).splitlines())
    _rank_all(project, [make_user("c")])
    pairs = _export(client_for(admin), project, "format=pairs")
    assert pairs[0]["prompt"] == [{"role": "user", "content": "plain"}]
    assert pairs[0]["chosen"][0]["role"] == "assistant"
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert ds.num_rows == 2 and ds[1]["prompt"][0]["content"] == "chat"


def test_a_large_import_refreshes_the_planner_statistics(make_project):
    from django.db import connection

    from annotate.services.imports import STATISTICS_REFRESH_ROWS

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner statistics")

    def tasks_estimate() -> float:
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'annotate_rankingtask'")
            return cursor.fetchone()[0]

    project = make_project()
    n = STATISTICS_REFRESH_ROWS
    prompts_import(project=project, lines=jsonl(*({"prompt": f"large {i}", "responses": ["a", "b"]}
                                                  for i in range(n))).splitlines())
    # ANALYZE counts a table this small exactly; stale statistics would not know these rows.
    assert tasks_estimate() == RankingTask.objects.count() >= n
