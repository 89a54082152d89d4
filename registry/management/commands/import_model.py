"""Import a base model (GGUF file, Hugging Face directory, or hub id) into the registry."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from config.errors import ApplicationError


class Command(BaseCommand):
    help = "Import a GGUF file, a Hugging Face model directory or a hub id as a policy ModelVersion."

    def add_arguments(self, parser):
        parser.add_argument("source", help="path to a .gguf file or HF directory, or a hub id (org/name)")
        parser.add_argument("--name", help="name of the model version (default: from the source)")
        parser.add_argument("--sha256", help="expected sha256 of a GGUF file")

    def handle(self, *args, source: str, name: str | None, sha256: str | None, **options):
        from registry.services import model_version_import

        try:
            version = model_version_import(source=source, name=name, expected_sha256=sha256)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(self.style.SUCCESS(f"imported {version.name} as model version #{version.id} "
                                             f"({version.path})"))
