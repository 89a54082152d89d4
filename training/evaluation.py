"""The evaluate job: compare a candidate policy with the one it came from on held-out prompts of its
project (mean reward, win rate by the reward model, KL), and keep the report on the candidate."""

from __future__ import annotations

from django.conf import settings

from annotate.models import Project, Prompt
from registry.models import ModelVersion

from .models import TrainingJob
from .reporter import JobCancelled, JobReporter

EVAL_PROMPTS = 8


def evaluation_prompt_ids(*, project: Project, n_prompts: int = EVAL_PROMPTS) -> list[int]:
    """The latest prompts are the ones least seen in training; a fixed choice keeps it repeatable."""
    return list(Prompt.objects.filter(project=project).order_by("-id").values_list("id", flat=True)[:n_prompts])


def run_evaluate(job: TrainingJob, reporter: JobReporter) -> dict:
    from rlhf.callbacks import StopRequested
    from rlhf.evaluation import EvalConfig, compare_policies

    from .kinds import build_config

    candidate = ModelVersion.objects.get(pk=job.inputs["candidate"])
    previous = ModelVersion.objects.get(pk=job.inputs["policy"])
    reward = ModelVersion.objects.filter(pk=job.inputs.get("reward_model")).first()
    by_id = {p.pk: p for p in Prompt.objects.filter(pk__in=job.inputs["prompt_ids"])}
    prompts = [by_id[i].as_messages() for i in job.inputs["prompt_ids"] if i in by_id]
    root = settings.ARTIFACTS_ROOT
    config: EvalConfig = build_config("evaluate", job.config)
    reporter.stage("evaluating", total=1)
    try:
        report = compare_policies(root / candidate.path, root / previous.path,
                                  root / reward.path if reward else None, prompts, config,
                                  should_stop=reporter.should_stop)
    except StopRequested:
        raise JobCancelled() from None
    candidate.metrics = {**candidate.metrics, **{f"eval_{k}": v for k, v in report.items()}}
    candidate.save(update_fields=["metrics"])
    reporter.on_step({"step": 1, "total_steps": 1, **report})
    return {"evaluation": report, "candidate": candidate.pk}
