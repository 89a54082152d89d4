"""Fault injection on the production stack (PostgreSQL + Redis, a real gunicorn web process, real
Celery workers), under a load of 8 annotators: the web process is killed mid-submit, the worker is
killed mid-job, Redis restarts (losing every message: it keeps nothing on disk) and PostgreSQL
restarts. Afterwards nothing acknowledged is missing, no task is over k, no ranking is duplicated,
no job is left running, and every round moved on or failed with a reason.

Marked `faults`: it restarts the machine's PostgreSQL and Redis, so it runs where those are the
test run's own (CI does); `-m "not faults"` leaves it out.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import REPO, start_worker
from tests.web_process import Web

pytestmark = [pytest.mark.faults, pytest.mark.slow]

ANNOTATORS = 8
TASKS = 1000
PPO = {"iterations": 16, "rollout_batch_size": 16, "mini_batch_size": 4, "ppo_epochs": 4, "learning_rate": 1e-3,
       "precision": "fp32", "max_length": 64, "save_every": 4, "scorer": {"scorer": "contains", "text": "yes"},
       "sampling": {"strategy": "multinomial", "temperature": 1.0, "max_new_tokens": 12}}


def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # a service restarting
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _call(url: str, token: str, body: dict | None = None) -> tuple[int, dict | None]:
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:  # refused, reset mid-request: not acknowledged
        return 0, None


class Annotators:
    """8 annotators ranking as fast as they can; every ranking the server acknowledged is kept."""

    def __init__(self, web: Web, project_id: int, tokens: list[str]):
        self.web, self.project_id, self.tokens = web, project_id, tokens
        self.acked: list[int] = []
        self.failures = Counter()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in tokens]

    def _run(self, token: str) -> None:
        while not self.stop.is_set():
            status, body = _call(f"{self.web.url}/api/projects/{self.project_id}/tasks/next", token)
            if status == 204:
                return
            if status != 200:
                self.failures[f"next {status}"] += 1
                time.sleep(0.2)
                continue
            ids = sorted(r["id"] for r in body["task"]["responses"])
            status, reply = _call(f"{self.web.url}/api/tasks/{body['task']['id']}/rankings", token,
                                  {"lease": body["lease"]["id"], "ranking": [[i] for i in ids]})
            if status == 201:
                self.acked.append(reply["ranking"])
            else:
                self.failures[f"submit {status}"] += 1
                time.sleep(0.2)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def _restart_redis() -> None:
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"], capture_output=True)
    _until(lambda: subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True).returncode != 0, 20,
           "Redis to stop")
    subprocess.run(["bash", str(REPO / "scripts" / "ensure_services.sh")], check=True, capture_output=True)


def _restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(x) for x in v.split(".")])[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
                   check=True, capture_output=True)
    connection.close()  # this process's own connection died with the server
    _until(lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1"], capture_output=True).returncode == 0, 60,
           "PostgreSQL")


@pytest.fixture
def can_restart_services():
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") or not settings.CELERY_BROKER_URL.startswith(
            "redis"):
        pytest.skip("the fault suite runs on PostgreSQL + Redis")
    if not (shutil.which("pg_ctlcluster") and shutil.which("redis-cli") and os.path.isdir("/etc/postgresql")):
        pytest.skip("needs this machine's PostgreSQL and Redis to restart them")


def test_faults_lose_nothing(can_restart_services, transactional_db, tmp_path):
    from annotate.models import Pair, RankingTask, Round
    from annotate.services.imports import prompts_import
    from annotate.services.projects import project_create
    from annotate.services.users import token_obtain, user_create
    from config.celery import app
    from tests.factories import project_with_pairs, register_policy
    from tests.tiny_model import build_tiny_model
    from training.models import TrainingJob
    from training.services.jobs import training_job_launch

    with app.connection_for_write() as conn:
        conn.default_channel.client.flushdb()
    # The annotation load: TASKS tasks, k = 2, two responses each: enough to outlast the faults.
    load = project_create(name="Load", slug="load", rankings_per_task=2)
    prompts_import(project=load, lines=[json.dumps({"prompt": f"question {i}", "responses": [f"a{i}", f"b{i}"]})
                                        for i in range(TASKS)])
    tokens = []
    for i in range(ANNOTATORS):
        user_create(username=f"fault-ann-{i}", password="annotator-pass-1")
        tokens.append(token_obtain(username=f"fault-ann-{i}", password="annotator-pass-1"))
    # A PPO job to kill the worker under, and a self-running round to see through it all.
    trainer, _ = project_with_pairs(slug="fault-ppo", n_tasks=4)
    policy = register_policy(build_tiny_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8]),
                             project=trainer)
    ppo = training_job_launch(project=trainer, kind="ppo", config=PPO)
    # A round whose generate job waits behind the PPO job (its message is lost with Redis too).
    from annotate.models import Prompt
    from training.services.rounds import round_start

    Prompt.objects.create(project=trainer, text="a prompt for the round")
    round_obj, generate = round_start(project=trainer, prompts="unused", sampling={"max_new_tokens": 4})

    outcomes: dict[str, str] = {}
    web = Web(tmp_path)
    web.start()
    worker = start_worker(tmp_path, extra_env={"RLHF_JOB_STALE_SECONDS": "6"})
    try:
        with Annotators(web, load.pk, tokens) as annotators:
            time.sleep(3)
            # 1. The web process dies with submits in flight, and comes back.
            before = len(annotators.acked)
            web.kill()
            time.sleep(1)
            web.start()
            _until(lambda: len(annotators.acked) > before + 10, 60, "annotation to go on after the web restart")
            outcomes["kill web mid-submit"] = f"annotation went on; refused meanwhile: {dict(annotators.failures)}"
            # 2. PostgreSQL restarts under the annotators and the running PPO job.
            counted, failures = len(annotators.acked), Counter(annotators.failures)
            _restart_postgres()
            _until(lambda: len(annotators.acked) > counted + 10, 120, "annotation to go on after PostgreSQL")
            outcomes["restart PostgreSQL"] = (f"annotation went on; refused meanwhile: "
                                              f"{dict(annotators.failures - failures)}")
            # 3. The worker dies mid-PPO; a job is launched while no worker runs.
            # Alone the whole test takes ~80 s; in a full run on a slow, loaded machine (CI beside the
            # session engine and 8 annotators) 300 s for five PPO iterations was seen to run out.
            _until(lambda: (TrainingJob.objects.get(pk=ppo.pk).progress.get("step") or 0) >= 5, 600, "PPO step 5")
            worker.stop(sig=signal.SIGKILL)
            late = training_job_launch(project=trainer, kind="reward_model",
                                       config={"max_steps": 2, "batch_size": 2, "precision": "fp32",
                                               "max_length": 64, "eval_fraction": 0.0})
            # 4. Redis restarts: every message in it is gone. A new worker resumes PPO and finds the rest.
            time.sleep(1)
            _restart_redis()
            worker = start_worker(tmp_path, extra_env={"RLHF_JOB_STALE_SECONDS": "6"})
            for thread in annotators.threads:  # the load runs to the end of the queue
                thread.join(timeout=600)
        # Everything settles: the resumed PPO and the jobs whose messages Redis lost all finish.
        for job in (ppo, late, generate):
            _until(lambda j=job: TrainingJob.objects.get(pk=j.pk).is_final, 600, f"job {job.pk} to finish")
    finally:
        worker.stop()
        web.kill()

    connection.close()
    acked = set(annotators.acked)
    from annotate.models import Ranking

    stored = set(Ranking.objects.filter(project=load).values_list("id", flat=True))
    assert acked <= stored, f"acknowledged rankings missing: {sorted(acked - stored)[:10]}"
    over = RankingTask.objects.filter(project=load, rankings_done__gt=2).count()
    per_task = Counter(Ranking.objects.filter(project=load).values_list("task_id", flat=True))
    dup = len(Ranking.objects.filter(project=load).values_list("task_id", "annotator_id")) - len(
        set(Ranking.objects.filter(project=load).values_list("task_id", "annotator_id")))
    assert over == 0 and max(per_task.values()) <= 2 and dup == 0
    assert Pair.objects.filter(project=load).count() == len(stored)  # one pair per 2-way ranking
    assert RankingTask.objects.filter(project=load, rankings_done=2).count() == TASKS, "the queue was finished"
    assert not TrainingJob.objects.filter(state__in=("running", "queued")).exists()
    ppo.refresh_from_db()
    late.refresh_from_db()
    assert ppo.state == "succeeded" and ppo.attempts == 2, ppo.error
    assert late.state == "succeeded" and late.log_lines.filter(message__contains="message was lost").exists()
    assert Round.objects.get(pk=round_obj.pk).status == "annotating", "the round moved on once generated"
    for round_obj in Round.objects.all():
        assert round_obj.status not in ("generating", "reward_model", "policy", "evaluating") or \
            not TrainingJob.objects.get(pk=round_obj.stage_job_id).is_final
        assert round_obj.status != "failed" or round_obj.reason
    outcomes.update({"kill worker mid-PPO": f"resumed on the next worker (run {ppo.attempts}), succeeded",
                     "restart Redis (messages lost)": "published again by an idle worker; the jobs succeeded"})
    print(json.dumps({"outcomes": outcomes, "failed_requests": dict(annotators.failures),
                      "acknowledged": len(acked), "stored": len(stored)}, indent=1))
    assert policy.pk
