"""Rounds: choose prompts, generate candidates with the promoted policy, and, for a round that
runs itself, train the reward model, then PPO or DPO, evaluate, and promote (or wait for an admin)."""

from __future__ import annotations

import logging
import random

from django.db import transaction

from annotate.models import Project, Prompt, Round
from annotate.selectors.projects import round_is_complete
from annotate.services.projects import round_create, round_update
from config.errors import ApplicationError

from ..models import ModelVersion, TrainingJob
from ..stages import config_validate
from .jobs import job_log, training_job_launch

log = logging.getLogger(__name__)
AUTO_DEFAULTS = {"enabled": False, "algorithm": "ppo", "require_approval": False,
                 "reward_model": {}, "policy": {}, "eval_prompts": 8}


def _choose_prompts(project: Project, spec) -> list[int]:
    prompts = Prompt.objects.filter(project=project)
    if spec in (None, "unused"):
        ids = list(prompts.filter(tasks__isnull=True).order_by("id").values_list("id", flat=True))
    elif isinstance(spec, list):
        if not spec or not all(isinstance(i, int) and not isinstance(i, bool) for i in spec):
            raise ApplicationError("prompts must be a non-empty list of prompt ids", code="invalid_round")
        found = set(prompts.filter(pk__in=spec).values_list("id", flat=True))
        missing = [i for i in spec if i not in found]
        if missing:
            raise ApplicationError(f"prompts not in this project: {missing[:20]}", code="invalid_round",
                                   details={"missing": missing})
        ids = list(dict.fromkeys(spec))
    elif isinstance(spec, dict) and set(spec) == {"sample"}:
        n = spec["sample"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ApplicationError("prompts.sample must be a positive integer", code="invalid_round")
        all_ids = list(prompts.values_list("id", flat=True))
        ids = sorted(random.sample(all_ids, min(n, len(all_ids))))
    else:
        raise ApplicationError('prompts must be "unused", a list of ids, or {"sample": n}', code="invalid_round")
    if not ids:
        raise ApplicationError("no prompts to generate for (all prompts already have tasks?)", code="no_data")
    return ids


def round_start(*, project: Project, prompts=None, responses_per_prompt: int | None = None,
                sampling: dict | None = None, auto: dict | None = None, user=None) -> tuple[Round, TrainingJob]:
    """Create a round and its generate job on the project's promoted policy."""
    n = responses_per_prompt if responses_per_prompt is not None else project.responses_per_task
    config = config_validate("generate", {**(sampling or {}), "responses_per_prompt": n})
    # The project says how its rounds train and whether an admin signs off; a round may override.
    auto_settings = {**AUTO_DEFAULTS, "algorithm": project.policy_algorithm,
                     "require_approval": project.require_approval, **(auto or {})}
    if auto_settings["algorithm"] not in ("ppo", "dpo"):
        raise ApplicationError("auto.algorithm must be ppo or dpo", code="invalid_round")
    config_validate("reward_model", auto_settings["reward_model"])
    config_validate(auto_settings["algorithm"], auto_settings["policy"])
    ids = _choose_prompts(project, prompts)
    with transaction.atomic():
        round_obj = round_create(project=project, status=Round.Status.GENERATING, settings={
            "prompts": prompts if prompts is not None else "unused", "responses_per_prompt": n,
            "sampling": {k: v for k, v in config.items() if k not in ("responses_per_prompt", "batch_size")},
            "auto": {**auto_settings, "stage": "generating"}})
        job = training_job_launch(project=project, kind="generate", config=config,
                                  inputs={"prompt_ids": ids}, user=user, round=round_obj)
        round_update(round=round_obj, generate_job_id=job.pk)
    return round_obj, job


def _set_stage(round_obj: Round, stage: str, **extra) -> None:
    settings = dict(round_obj.settings)
    settings["auto"] = {**settings.get("auto", {}), "stage": stage, **extra}
    round_update(round=round_obj, settings=settings)


def rounds_advance() -> list[int]:
    """Start the reward model of every self-running round whose tasks have their k rankings."""
    started = []
    for round_obj in Round.objects.filter(status=Round.Status.ANNOTATING):
        auto = round_obj.settings.get("auto") or {}
        if not auto.get("enabled") or auto.get("stage") not in ("generating", "annotating"):
            continue
        if not round_is_complete(round_obj):
            continue
        with transaction.atomic():
            locked = Round.objects.select_for_update().get(pk=round_obj.pk)
            if (locked.settings.get("auto") or {}).get("stage") not in ("generating", "annotating"):
                continue
            job = training_job_launch(project=locked.project, kind="reward_model", config=auto["reward_model"],
                                      round=locked)
            _set_stage(locked, "reward_model", reward_job=job.pk)
        started.append(round_obj.pk)
    return started


def round_job_finished(*, job: TrainingJob) -> None:
    """Move a self-running round on when one of its jobs ends."""
    if job.round_id is None:
        return
    round_obj = Round.objects.get(pk=job.round_id)
    auto = round_obj.settings.get("auto") or {}
    if job.state != TrainingJob.State.SUCCEEDED:
        if job.kind == "generate" or auto.get("enabled"):
            round_update(round=round_obj, status=Round.Status.FAILED)
        return
    if not auto.get("enabled"):
        return
    if job.kind == "reward_model":
        policy_job = training_job_launch(project=job.project, kind=auto["algorithm"], config=auto["policy"],
                                         inputs={"reward_model": job.outputs["model_version"]}
                                         if auto["algorithm"] == "ppo" else {}, round=round_obj)
        _set_stage(round_obj, "policy", policy_job=policy_job.pk)
    elif job.kind in ("ppo", "dpo"):
        from .evaluation import policy_evaluate

        candidate = ModelVersion.objects.get(pk=job.outputs["model_version"])
        reward_id = (round_obj.settings.get("auto") or {}).get("reward_job")
        reward_job = TrainingJob.objects.filter(pk=reward_id).first()
        reward = ModelVersion.objects.filter(pk=(reward_job.outputs or {}).get("model_version")).first() \
            if reward_job else None
        previous = ModelVersion.objects.get(pk=job.inputs["policy"])
        report = policy_evaluate(candidate=candidate, previous=previous, reward=reward,
                                 n_prompts=int(auto.get("eval_prompts", 8)))
        candidate.metrics = {**candidate.metrics, **{f"eval_{k}": v for k, v in report.items()}}
        candidate.save(update_fields=["metrics"])
        job_log(job=job, message=f"evaluation: {report}")
        if auto.get("require_approval"):
            _set_stage(round_obj, "awaiting_approval", candidate=candidate.pk, evaluation=report)
        else:
            from .registry import model_version_promote

            model_version_promote(version=candidate)
            _set_stage(round_obj, "done", candidate=candidate.pk, evaluation=report)
            round_update(round=round_obj, status=Round.Status.CLOSED)


def round_candidate_promoted(*, version: ModelVersion) -> None:
    """An admin promoting the candidate a round waits on approves it: the round closes."""
    for round_obj in Round.objects.filter(project_id=version.project_id, status=Round.Status.ANNOTATING):
        auto = round_obj.settings.get("auto") or {}
        if auto.get("stage") == "awaiting_approval" and auto.get("candidate") == version.pk:
            _set_stage(round_obj, "done", approved=True)
            round_update(round=round_obj, status=Round.Status.CLOSED)
