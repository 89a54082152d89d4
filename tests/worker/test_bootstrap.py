"""`manage.py bootstrap` is idempotent: admin, demo project and its prompts once."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from annotate.models import Project


@pytest.mark.sqlite
@pytest.mark.django_db
def test_bootstrap_twice_creates_admin_and_demo_once(settings, tmp_path, capsys):
    settings.DATA_DIR = tmp_path
    settings.ENV_ADMIN_PASSWORD = ""
    settings.RLHF_BIND = "127.0.0.1:8899"
    call_command("bootstrap", "--skip-model")
    first = capsys.readouterr().out
    call_command("bootstrap", "--skip-model")
    second = capsys.readouterr().out
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser
    password = (tmp_path / "admin_password").read_text().strip()
    # Printed once, when the account is made, with the address RLHF_BIND names (issue #15).
    assert admin.check_password(password) and password in first and password not in second
    assert f"http://{settings.RLHF_BIND}/" in first and f"http://{settings.RLHF_BIND}/" in second
    project = Project.objects.get(slug="demo")
    assert project.prompts.count() == 8
