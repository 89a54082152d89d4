"""One-time (idempotent) set-up of the embedded default: migrate, fetch and convert the bundled
base model, create the admin account, load the demo project. A second run does nothing heavy."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection, transaction

from config.errors import ApplicationError

DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = "Migrate, fetch/convert the bundled model, create the admin and the demo project (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--skip-model", action="store_true", help="do not fetch/convert the base model")

    def handle(self, *args, skip_model: bool = False, **options):
        started = time.monotonic()
        try:
            connection.ensure_connection()
        except DatabaseError as exc:
            raise CommandError(f"cannot reach the database ({settings.DATABASES['default']['NAME']}): "
                               f"{str(exc).strip().splitlines()[0]}; check DATABASE_URL") from None
        call_command("migrate", interactive=False, verbosity=0)
        from annotate.services.imports import imports_settle

        # What dead imports left (another web process may be importing: only stale ones).
        imports_settle()
        call_command("collectstatic", interactive=False, verbosity=0)
        version = None
        if not skip_model:
            version = self._base_model()
        username, password = self._admin()
        self._demo_project(version)
        self.stdout.write(f"ready in {time.monotonic() - started:.1f} s")
        # The address run_service will serve on (RLHF_BIND), and the generated password only on
        # the run that made it: logs of later starts do not carry it.
        where = f"log in at http://{settings.RLHF_BIND}/ as {username!r}"
        if password:
            self.stdout.write(self.style.SUCCESS(
                f"{where} with password {password!r} (shown this once; kept in "
                f"{settings.DATA_DIR / 'admin_password'}, readable by you only)"))
        elif settings.ENV_ADMIN_PASSWORD:
            self.stdout.write(self.style.SUCCESS(f"{where} (password from RLHF_ADMIN_PASSWORD)"))
        else:
            self.stdout.write(self.style.SUCCESS(
                f"{where} (the password printed when the account was made; kept in "
                f"{settings.DATA_DIR / 'admin_password'})"))

    def _base_model(self):
        from registry.bundled import SMOLLM2, fetch_gguf
        from registry.services import default_model_version, model_version_import

        existing = default_model_version()
        if existing and (settings.ARTIFACTS_ROOT / existing.path / "config.json").is_file():
            self.stdout.write(f"base model {existing.name} already converted ({existing.path})")
            return existing
        if settings.RLHF_DEFAULT_MODEL != SMOLLM2.name:
            raise CommandError(f"RLHF_DEFAULT_MODEL={settings.RLHF_DEFAULT_MODEL!r} is not registered; import "
                               "it with `python manage.py import_model SOURCE --name NAME` first")
        try:
            gguf = fetch_gguf(SMOLLM2, settings.DATA_DIR / "downloads", log=self.stdout.write)
            self.stdout.write(f"converting {gguf.name} to a Hugging Face directory (once)…")
            t0 = time.monotonic()
            version = model_version_import(source=str(gguf), name=SMOLLM2.name, expected_sha256=SMOLLM2.sha256,
                                           base_label=f"base:{SMOLLM2.package}=={SMOLLM2.version}/{gguf.name}")
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"converted in {time.monotonic() - t0:.1f} s → {settings.ARTIFACTS_ROOT / version.path}")
        return version

    def _admin(self) -> tuple[str, str | None]:
        username = settings.ENV_ADMIN_USERNAME
        env_password = settings.ENV_ADMIN_PASSWORD
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        password_file = settings.DATA_DIR / "admin_password"
        if user is not None:
            return username, None
        password = env_password or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if env_password:
            return username, None
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        return username, password

    @transaction.atomic
    def _demo_project(self, version) -> None:
        from annotate.models import Project, Prompt

        project, created = Project.objects.get_or_create(
            slug=DEMO_SLUG,
            defaults={"name": "Demo project", "responses_per_task": 2, "rankings_per_task": 1,
                      "guidelines": "Prefer the response that is correct, helpful and concise."},
        )
        if created:
            lines = (Path(__file__).resolve().parents[2] / "demo" / "prompts.jsonl").read_text().splitlines()
            for line in lines:
                row = json.loads(line)
                Prompt.objects.create(project=project, text=row["prompt"], tags=row.get("tags", []),
                                      reference=row.get("reference", ""), source="demo")
            self.stdout.write(f"demo project loaded with {len(lines)} prompts")
        if version is not None and not version.promoted:
            from registry.models import ModelVersion

            if not ModelVersion.objects.filter(project=project, promoted=True, kind="policy").exists():
                from registry.services import model_version_promote

                # Through the service, so the base model's served period is in the history.
                model_version_promote(version=version, project=project)
