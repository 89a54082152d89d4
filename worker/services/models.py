"""Model registry services: import a base model, register a checkpoint, find the default."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings
from django.db import transaction

from config.errors import ApplicationError

from ..models import ModelVersion


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def default_model_version() -> ModelVersion | None:
    return (ModelVersion.objects.filter(name=settings.RLHF_DEFAULT_MODEL, kind=ModelVersion.Kind.POLICY,
                                        source__startswith="base:")
            .order_by("id").first())


def model_version_import(*, source: str, name: str | None = None, expected_sha256: str | None = None,
                         base_label: str | None = None) -> ModelVersion:
    """Convert a GGUF file, HF directory or hub id into an HF directory under ARTIFACTS_ROOT and
    register it as a policy ModelVersion. An existing registration with files present is reused."""
    from rlhf.model_import import ModelImportError, import_model

    name = name or _slug(Path(source).stem if source.endswith(".gguf") else Path(source).name)
    rel = Path("base") / _slug(name)
    out_dir = settings.ARTIFACTS_ROOT / rel
    label = base_label or f"base:{source}"
    existing = ModelVersion.objects.filter(name=name, path=str(rel), kind=ModelVersion.Kind.POLICY).first()
    if existing and (out_dir / "config.json").is_file():
        return existing
    try:
        info = import_model(source, out_dir, expected_sha256=expected_sha256)
    except ModelImportError as exc:
        raise ApplicationError(str(exc), code="model_import_failed") from exc
    with transaction.atomic():
        version, _ = ModelVersion.objects.update_or_create(
            name=name, path=str(rel), kind=ModelVersion.Kind.POLICY,
            defaults={
                "source": label,
                "sha256": info.sha256,
                "info": {"architecture": info.architecture, "parameters": info.parameters,
                         "dtype": info.dtype, "eos_token": info.eos_token, "pad_token": info.pad_token},
            },
        )
    return version
