"""The round generator: sample N candidates per prompt from a policy with the shared sampler and
turn them into ranking tasks that carry each response's lineage."""

from __future__ import annotations

import dataclasses

from django.conf import settings

from annotate.models import Prompt, Round
from annotate.services.projects import round_update
from annotate.services.tasks import tasks_create

from ..models import ModelVersion, TrainingJob
from ..stages import build_config


def round_generate(*, job: TrainingJob, reporter, cancelled: type[Exception]) -> dict:
    from rlhf.models import load_policy
    from rlhf.sampling import generate

    policy = ModelVersion.objects.get(pk=job.inputs["policy"])
    sampling = build_config("generate", job.config)
    n = int(job.config.get("responses_per_prompt", 2))
    batch = int(job.config.get("batch_size", 8))
    model, tokenizer = load_policy(settings.ARTIFACTS_ROOT / policy.path)
    by_id = {p.pk: p for p in Prompt.objects.filter(pk__in=job.inputs["prompt_ids"])}
    prompts = [by_id[i] for i in job.inputs["prompt_ids"] if i in by_id]
    lineage_sampling = {k: v for k, v in dataclasses.asdict(sampling).items()
                        if k in ("strategy", "temperature", "top_k", "top_p", "seed", "max_new_tokens")}
    round_obj = Round.objects.filter(pk=job.round_id).first() if job.round_id else None
    created = 0
    for start in range(0, len(prompts), batch):
        if reporter.should_stop():
            raise cancelled()
        chunk = prompts[start:start + batch]
        # A different seed per batch keeps the run reproducible without repeating samples.
        config = dataclasses.replace(sampling, seed=None if sampling.seed is None else sampling.seed + start)
        outputs = generate(model, tokenizer, [p.as_messages() for p in chunk], config, n=n)
        for prompt, generations in zip(chunk, outputs, strict=True):
            tasks_create(project=job.project, prompt=prompt, round=round_obj, responses=[
                {"text": _storable(g.text), "source": "model", "model_version_id": policy.pk,
                 "model_name": policy.name, "sampling": lineage_sampling}
                for g in generations])
            created += 1
        reporter.on_step({"step": min(start + batch, len(prompts)), "total_steps": len(prompts),
                          "tasks_created": created})
    if round_obj is not None:
        round_update(round=round_obj, status=Round.Status.ANNOTATING)
    return {"tasks": created, "responses": created * n, "policy": policy.pk}


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; a byte-level model can emit it. Empty output is kept
    visible to annotators as such rather than as a blank card."""
    text = text.replace("\x00", "\ufffd")
    return text if text.strip() else "(empty response)"
