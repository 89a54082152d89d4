"""The round generator: sample N candidates per prompt from a policy with the shared sampler and
turn them into ranking tasks that carry each response's lineage.

Resumable by construction: a prompt's task is created as soon as its responses are sampled, and a
relaunched job skips the prompts that already have their task. A cancel is seen between tokens;
the tasks made before it are kept (they are complete tasks), the batch in flight is dropped."""

from __future__ import annotations

import dataclasses

from django.conf import settings

from annotate.models import Prompt, RankingTask
from annotate.services.tasks import tasks_create
from registry.models import ModelVersion

from .kinds import build_config
from .models import TrainingJob
from .reporter import JobCancelled, JobReporter


def run_generate(job: TrainingJob, reporter: JobReporter) -> dict:
    from rlhf.callbacks import StopRequested
    from rlhf.models import load_policy
    from rlhf.sampling import generate

    policy = ModelVersion.objects.get(pk=job.inputs["policy"])
    n = int(job.config.get("responses_per_prompt", 2))
    # A step is one sampled response: the total is prompts × responses from the first second.
    reporter.stage("loading model", total=len(job.inputs["prompt_ids"]) * n)
    sampling = build_config("generate", job.config)
    batch = int(job.config.get("batch_size", 8))
    model, tokenizer = load_policy(settings.ARTIFACTS_ROOT / policy.path)
    by_id = {p.pk: p for p in Prompt.objects.filter(pk__in=job.inputs["prompt_ids"])}
    prompts = [by_id[i] for i in job.inputs["prompt_ids"] if i in by_id]
    lineage_sampling = {k: v for k, v in dataclasses.asdict(sampling).items()
                        if k in ("strategy", "temperature", "top_k", "top_p", "seed", "max_new_tokens")}
    round_obj = job.round
    done = _prompts_done(job)
    created = len(done)
    reporter.stage("generating")
    for start in range(0, len(prompts), batch):
        chunk = [p for p in prompts[start:start + batch] if p.pk not in done]
        if not chunk:
            continue
        # A different seed per batch keeps the run reproducible without repeating samples (and a
        # resumed run samples a batch as the first run would have).
        config = dataclasses.replace(sampling, seed=None if sampling.seed is None else sampling.seed + start)
        try:
            outputs = generate(model, tokenizer, [p.as_messages() for p in chunk], config, n=n,
                               should_stop=reporter.should_stop)
        except StopRequested:
            raise JobCancelled() from None
        for prompt, generations in zip(chunk, outputs, strict=True):
            tasks_create(project=job.project, prompt=prompt, round=round_obj, responses=[
                {"text": _storable(g.text), "source": "model", "model_version_id": policy.pk,
                 "model_name": policy.name,
                 # "length": the answer was cut off at max_new_tokens (the ranking page marks it)
                 "sampling": {**lineage_sampling, "finish_reason": g.finish_reason}}
                for g in generations])
            created += 1
        reporter.on_step({"step": created * n, "total_steps": len(prompts) * n, "tasks_created": created,
                          "stage": "generating"})
    return {"tasks": created, "responses": created * n, "policy": policy.pk}


def _prompts_done(job: TrainingJob) -> set[int]:
    """Prompts of this job that an earlier run of it already turned into tasks."""
    tasks = RankingTask.objects.filter(project=job.project, prompt_id__in=job.inputs["prompt_ids"])
    if job.round_id is not None:
        tasks = tasks.filter(round_id=job.round_id)
    else:
        tasks = tasks.filter(round__isnull=True, created_at__gte=job.created_at,
                             responses__model_version_id=job.inputs["policy"])
    return set(tasks.values_list("prompt_id", flat=True))


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; a byte-level model can emit it. Empty output is kept
    visible to annotators as such rather than as a blank card."""
    text = text.replace("\x00", "\ufffd")
    return text if text.strip() else "(empty response)"
