"""Fixtures for the annotation tests: users by role, projects, tasks; and a file-backed SQLite
test database, because threads cannot share Django's default in-memory one."""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config):
    from django.conf import settings

    db = settings.DATABASES["default"]
    if "sqlite" in db["ENGINE"] and not (db.get("TEST") or {}).get("NAME"):
        path = os.path.join(tempfile.gettempdir(), f"annotate_test_{os.getpid()}.sqlite3")
        db.setdefault("TEST", {})["NAME"] = path


@pytest.fixture
def make_user(db):
    from annotate.services.users import user_create

    def make(username: str, role: str = "annotator"):
        return user_create(username=username, password="correct-horse-9", role=role)

    return make


@pytest.fixture
def admin(make_user):
    return make_user("alice-admin", "admin")


@pytest.fixture
def annotators(make_user):
    return [make_user(f"ann{i}") for i in range(4)]


@pytest.fixture
def make_project(db):
    from annotate.services.projects import project_create

    counter = iter(range(10_000))

    def make(**kwargs):
        kwargs.setdefault("name", f"Project {next(counter)}")
        return project_create(**kwargs)

    return make


@pytest.fixture
def make_tasks(db):
    from annotate.models import Prompt
    from annotate.services.tasks import tasks_create

    def make(project, n: int, *, responses: int = 2, gold_index: int | None = None, round=None):
        tasks = []
        for i in range(n):
            prompt = Prompt.objects.create(project=project, text=f"prompt {project.pk}-{i}-{Prompt.objects.count()}")
            specs = [{"text": f"answer {j} to {prompt.pk}", "source": "model", "model_version_id": 7,
                      "model_name": "policy-v1", "sampling": {"strategy": "top_p", "temperature": 0.7, "top_p": 0.9,
                                                             "seed": j}} for j in range(responses)]
            tasks.append(tasks_create(project=project, prompt=prompt, responses=specs, round=round,
                                      gold_index=gold_index))
        return tasks

    return make


def response_ids(task) -> list[int]:
    return list(task.task_responses.order_by("position").values_list("response_id", flat=True))


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's deliberate slowness would dominate these tests, which make many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
