"""The model registry API: list, detail, promote and roll back, import."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from annotate.services.projects import project_create
from registry.models import ModelVersion
from tests.tiny_model import build_tiny_model


def _version(project, name: str, kind: str = "policy", promoted: bool = False) -> ModelVersion:
    return ModelVersion.objects.create(name=name, kind=kind, path=f"x/{name}", source="test", project=project,
                                       promoted=promoted)


@pytest.mark.sqlite
@pytest.mark.django_db
def test_promote_then_roll_back(admin_client):
    project = project_create(name="Reg", slug="reg")
    first = _version(project, "first", promoted=True)
    second = _version(project, "second")
    second.parents.set([first])
    response = admin_client.post(f"/api/models/{second.pk}/promote")
    assert response.status_code == 200 and response.json()["promoted"] is True
    first.refresh_from_db()
    assert first.promoted is False and ModelVersion.objects.filter(pk=first.pk).exists(), "kept for rollback"
    assert admin_client.post(f"/api/models/{first.pk}/promote").status_code == 200
    assert list(ModelVersion.objects.filter(promoted=True).values_list("name", flat=True)) == ["first"]
    listed = {m["id"]: m for m in admin_client.get("/api/models").json()}
    assert listed[second.pk]["parents"] == [first.pk]
    assert listed[first.pk]["kind"] == "policy" and listed[first.pk]["promoted"] is True


@pytest.mark.sqlite
@pytest.mark.django_db
def test_promote_refuses_reward_models_and_unknown_ids(admin_client):
    project = project_create(name="Reg2", slug="reg2")
    reward = _version(project, "rm", kind="reward")
    response = admin_client.post(f"/api/models/{reward.pk}/promote")
    assert response.status_code == 400 and "only policies are promoted" in response.json()["error"]["message"]
    missing = admin_client.post("/api/models/987654/promote")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


@pytest.mark.sqlite
@pytest.mark.django_db
def test_one_promoted_policy_per_project_is_a_database_rule():
    project = project_create(name="Reg3", slug="reg3")
    _version(project, "a", promoted=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        _version(project, "b", promoted=True)


@pytest.mark.django_db
def test_import_a_model_directory_through_the_api(admin_client, settings, tmp_path):
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    source = build_tiny_model(tmp_path / "incoming" / "tiny-src")
    response = admin_client.post("/api/models/import", {"source": str(source), "name": "tiny-imported"},
                                 format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["kind"] == "policy" and body["name"] == "tiny-imported" and len(body["sha256"]) == 64
    assert (settings.ARTIFACTS_ROOT / body["path"] / "config.json").is_file()
    missing = admin_client.post("/api/models/import", {"source": str(tmp_path / "nope")}, format="json")
    assert missing.status_code == 400 and "does not exist" in missing.json()["error"]["message"]




@pytest.mark.django_db
def test_promoting_the_candidate_approves_the_waiting_round(admin_client):
    from annotate.models import Round
    from annotate.services.projects import round_create

    project = project_create(name="Approve", slug="approve")
    _version(project, "old", promoted=True)
    candidate = _version(project, "candidate")
    round_obj = round_create(project=project, status="awaiting_approval", settings={
        "auto": {"enabled": True, "candidate": candidate.pk}})
    assert admin_client.post(f"/api/models/{candidate.pk}/promote").status_code == 200
    round_obj = Round.objects.get(pk=round_obj.pk)
    assert round_obj.status == "closed" and round_obj.settings["auto"]["approved"] is True


# --- served history and archiving ---------------------------------------------------------------

@pytest.mark.sqlite
@pytest.mark.django_db
def test_promotions_are_recorded_and_only_served_versions_are_rollbacks(admin_client):
    from registry.models import ModelPromotion

    project = project_create(name="History", slug="history")
    base, sft, ppo = (_version(project, n) for n in ("base", "sft", "ppo"))
    sft.parents.set([base])
    ppo.parents.set([sft])
    for v in (base, ppo):
        assert admin_client.post(f"/api/models/{v.pk}/promote").status_code == 200
    listed = {m["name"]: m for m in admin_client.get(f"/api/models?project={project.pk}").json()}
    # The base was served, the SFT model never was: only the base is a rollback.
    assert listed["base"]["served_before"] is True and listed["sft"]["served_before"] is False
    assert listed["ppo"]["served_before"] is False and listed["ppo"]["promoted"] is True
    assert [p["until"] is None for p in listed["ppo"]["served"]] == [True]
    assert len(listed["base"]["served"]) == 1 and listed["base"]["served"][0]["until"] is not None
    assert admin_client.post(f"/api/models/{base.pk}/promote").status_code == 200  # roll back
    rows = list(ModelPromotion.objects.filter(project=project).values_list("version__name", "rollback"))
    assert rows == [("base", False), ("ppo", False), ("base", True)]
    assert ModelPromotion.objects.filter(project=project, ended_at__isnull=True).count() == 1
    assert admin_client.post(f"/api/models/{base.pk}/promote").status_code == 200  # again: no new period
    assert ModelPromotion.objects.filter(project=project).count() == 3
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelPromotion.objects.create(project=project, version=sft, promoted_at=base.created_at)


@pytest.mark.sqlite
@pytest.mark.django_db
def test_archiving_hides_a_version_keeps_it_and_refuses_the_served_one(admin_client):
    project = project_create(name="Attic", slug="attic")
    served = _version(project, "served", promoted=True)
    old = _version(project, "old")
    rm = _version(project, "rm", kind="reward")
    reply = admin_client.post(f"/api/models/{old.pk}/archive")
    assert reply.status_code == 200 and reply.json()["archived_at"] is not None
    names = lambda q="": [m["name"] for m in admin_client.get(f"/api/models?project={project.pk}{q}").json()]  # noqa: E731
    assert "old" not in names() and "old" in names("&archived=include") and names("&archived=only") == ["old"]
    assert admin_client.get(f"/api/models/{old.pk}").status_code == 200  # still there by id
    refused = admin_client.post(f"/api/models/{served.pk}/archive")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "promoted"
    promote = admin_client.post(f"/api/models/{old.pk}/promote")
    assert promote.status_code == 409 and promote.json()["error"]["code"] == "archived"
    assert admin_client.delete(f"/api/models/{old.pk}/archive").json()["archived_at"] is None
    assert "old" in names()
    assert admin_client.post(f"/api/models/{rm.pk}/archive").status_code == 200
    assert admin_client.get("/api/models?archived=sometimes").status_code == 400
    ModelVersion.objects.filter(pk=old.pk).update(archived_at=None)
    assert ModelVersion.objects.filter(pk=rm.pk, archived_at__isnull=False).exists()
