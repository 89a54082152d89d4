"""Evaluate a candidate policy against the one it came from, on held-out prompts of its project."""

from __future__ import annotations

from django.conf import settings

from annotate.models import Prompt

from ..models import ModelVersion


def policy_evaluate(*, candidate: ModelVersion, previous: ModelVersion, reward: ModelVersion | None,
                    n_prompts: int = 8) -> dict:
    from rlhf.evaluation import compare_policies

    # The latest prompts are the ones least seen in training; a fixed choice keeps it repeatable.
    prompts = list(Prompt.objects.filter(project=candidate.project).order_by("-id")[:n_prompts])
    if not prompts:
        return {}
    root = settings.ARTIFACTS_ROOT
    return compare_policies(root / candidate.path, root / previous.path,
                            root / reward.path if reward else None, [p.as_messages() for p in prompts])
