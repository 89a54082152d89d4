"""Leases and demonstrations against abuse (issue #15, item 4): a lease's whole life is capped, so
heartbeats cannot hold a task (and its round) forever; demonstrations have a length cap, a rate
limit, and may only answer prompts the annotator was shown."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from annotate.models import Demonstration, Lease
from annotate.services.leases import lease_heartbeat, leases_expire, task_lease_next
from annotate.services.tokens import api_token_create
from config.errors import Conflict

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


def client_for(user) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)[1]}")


def test_heartbeats_cannot_keep_a_lease_past_its_lifetime(make_project, make_tasks, annotators, settings):
    settings.RLHF_LEASE_SECONDS = 600
    settings.RLHF_LEASE_MAX_SECONDS = 1800
    project = make_project()
    [task] = make_tasks(project, 1)
    holder, waiting = annotators[:2]
    t0 = timezone.now()
    lease = task_lease_next(project=project, annotator=holder, now=t0)
    deadline = t0 + timedelta(seconds=1800)
    for minutes in (8, 16, 24, 29):
        renewed = lease_heartbeat(lease_id=lease.pk, annotator=holder, now=t0 + timedelta(minutes=minutes))
        assert renewed.expires_at <= deadline
    assert renewed.expires_at == deadline  # the last heartbeats no longer extend it
    after = deadline + timedelta(seconds=1)
    with pytest.raises(Conflict) as exc:
        lease_heartbeat(lease_id=lease.pk, annotator=holder, now=after)
    assert exc.value.code == "lease_expired"
    # The task goes back to the pool, and someone else can finish it.
    assert leases_expire(project=project, now=after) == 1
    assert task_lease_next(project=project, annotator=waiting, now=after).task_id == task.pk


def test_a_lease_handed_out_again_starts_afresh(make_project, make_tasks, annotators, settings):
    settings.RLHF_LEASE_SECONDS = 600
    settings.RLHF_LEASE_MAX_SECONDS = 900
    project = make_project()
    make_tasks(project, 1)
    ann = annotators[0]
    t0 = timezone.now()
    lease = task_lease_next(project=project, annotator=ann, now=t0)
    later = t0 + timedelta(hours=2)  # it expired long ago; the task comes back to the same annotator
    again = task_lease_next(project=project, annotator=ann, now=later)
    assert again.pk == lease.pk and Lease.objects.get(pk=lease.pk).created_at == later
    renewed = lease_heartbeat(lease_id=lease.pk, annotator=ann, now=later + timedelta(minutes=5))
    assert renewed.expires_at == later + timedelta(minutes=15)


def test_the_api_heartbeat_answers_409_past_the_lifetime(make_project, make_tasks, annotators, settings):
    settings.RLHF_LEASE_MAX_SECONDS = 60
    project = make_project()
    make_tasks(project, 1)
    client = client_for(annotators[0])
    lease_id = client.post(f"/api/projects/{project.pk}/tasks/next").json()["lease"]["id"]
    Lease.objects.filter(pk=lease_id).update(created_at=timezone.now() - timedelta(seconds=61))
    response = client.post(f"/api/leases/{lease_id}/heartbeat")
    assert response.status_code == 409 and response.json()["error"]["code"] == "lease_expired"


@pytest.fixture
def shown(make_project, make_tasks, annotators):
    """A task leased by annotators[0]: its prompt was shown to them."""
    project = make_project()
    [task] = make_tasks(project, 1)
    client = client_for(annotators[0])
    assert client.post(f"/api/projects/{project.pk}/tasks/next").status_code == 200
    return {"project": project, "prompt": task.prompt, "client": client}


def test_demonstrations_have_a_length_cap(shown, settings):
    settings.RLHF_DEMONSTRATION_MAX_CHARS = 1000
    url = f"/api/prompts/{shown['prompt'].pk}/demonstrations"
    too_long = shown["client"].post(url, {"text": "x" * 1001}, format="json")
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "demonstration_too_long"
    assert shown["client"].post(url, {"text": "x" * 1000}, format="json").status_code == 201


def test_demonstrations_are_rate_limited_per_annotator(shown, annotators, admin, settings):
    settings.RLHF_DEMONSTRATIONS_PER_HOUR = 3
    url = f"/api/prompts/{shown['prompt'].pk}/demonstrations"
    codes = [shown["client"].post(url, {"text": f"answer {i}"}, format="json").status_code for i in range(5)]
    assert codes == [201, 201, 201, 429, 429]
    limited = shown["client"].post(url, {"text": "again"}, format="json")
    assert int(limited["Retry-After"]) > 0 and limited.json()["error"]["code"] == "throttled"
    assert Demonstration.objects.count() == 3
    boss = client_for(admin)  # admins are not limited
    assert [boss.post(url, {"text": f"admin {i}"}, format="json").status_code for i in range(4)] == [201] * 4


def test_demonstrations_only_for_prompts_the_annotator_was_shown(shown, make_project, annotators, admin):
    from annotate.models import Prompt

    hidden_project = make_project()
    hidden = Prompt.objects.create(project=hidden_project, text="never shown to anyone")
    ann, other = annotators[0], annotators[1]
    client = shown["client"]
    refused = client.post(f"/api/prompts/{hidden.pk}/demonstrations", {"text": "guess"}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "prompt_not_shown"
    # The prompt of a task they were given: fine, with or without a lease still live.
    assert client.post(f"/api/prompts/{shown['prompt'].pk}/demonstrations", {"text": "ok"},
                       format="json").status_code == 201
    # Writing mode offers a prompt with a signed offer; the offer is theirs and that prompt's only.
    offered = client.get(f"/api/projects/{hidden_project.pk}/writing/next").json()
    assert offered["prompt"]["id"] == hidden.pk
    forged = client.post(f"/api/prompts/{hidden.pk}/demonstrations",
                         {"text": "x", "offer": offered["offer"][:-2] + "xx"}, format="json")
    assert forged.status_code == 403
    someone_elses = client_for(other).post(f"/api/prompts/{hidden.pk}/demonstrations",
                                           {"text": "x", "offer": offered["offer"]}, format="json")
    assert someone_elses.status_code == 403
    other_prompt = Prompt.objects.create(project=hidden_project, text="another")
    wrong_prompt = client.post(f"/api/prompts/{other_prompt.pk}/demonstrations",
                               {"text": "x", "offer": offered["offer"]}, format="json")
    assert wrong_prompt.status_code == 403
    assert client.post(f"/api/prompts/{hidden.pk}/demonstrations", {"text": "written", "offer": offered["offer"]},
                       format="json").status_code == 201
    # Admins may write for any prompt.
    assert client_for(admin).post(f"/api/prompts/{other_prompt.pk}/demonstrations", {"text": "admin"},
                                  format="json").status_code == 201
    assert ann.demonstrations.count() == 2


def test_writing_next_moves_on_and_ends(shown, make_project, annotators):
    from annotate.models import Prompt

    project = make_project()
    first, second = (Prompt.objects.create(project=project, text=t) for t in ("one", "two"))
    client = shown["client"]
    assert client.get(f"/api/projects/{project.pk}/writing/next").json()["prompt"]["id"] == first.pk
    assert client.get(f"/api/projects/{project.pk}/writing/next?after={first.pk}").json()["prompt"]["id"] == second.pk
    for p in (first, second):
        offer = client.get(f"/api/projects/{project.pk}/writing/next?prompt={p.pk}").json()["offer"]
        assert client.post(f"/api/prompts/{p.pk}/demonstrations", {"text": "a", "offer": offer},
                           format="json").status_code == 201
    assert client.get(f"/api/projects/{project.pk}/writing/next").status_code == 204
    assert client.get(f"/api/projects/{project.pk}/writing/next?after=99999999999999999999").status_code == 400
