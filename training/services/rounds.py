"""Rounds: choose prompts, generate candidates with the promoted policy, and, for a round that runs
itself, train the reward model, then PPO or DPO, evaluate, and promote (or wait for an admin).

The round's stage is a column moved by annotate's round_transition; each stage after annotating is
one job. When a job ends, lifecycle.job_finish calls `round_job_finished`, which starts the next
stage's job or fails the round with the reason; a failed round is retried from the stage it failed
in (its job is relaunched and resumes)."""

from __future__ import annotations

import logging
import random

from django.db import transaction

from annotate.models import Project, Prompt, Round
from annotate.selectors.projects import round_is_complete
from annotate.services.projects import round_create, round_transition, round_update
from config.errors import ApplicationError
from registry.models import ModelVersion
from registry.services import model_version_promote

from ..evaluation import evaluation_prompt_ids
from ..kinds import config_validate
from ..models import TrainingJob
from .jobs import job_log, training_job_launch

log = logging.getLogger(__name__)
S = Round.Status
AUTO_DEFAULTS = {"enabled": False, "algorithm": "ppo", "require_approval": False,
                 "reward_model": {}, "policy": {}, "evaluation": {}, "eval_prompts": 8}
# The stages of a self-running round that one job runs.
JOB_STAGES = (S.REWARD_MODEL, S.POLICY, S.EVALUATING)


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
    config_validate("evaluate", auto_settings["evaluation"])
    ids = _choose_prompts(project, prompts)
    with transaction.atomic():
        round_obj = round_create(project=project, status=S.DRAFT, settings={
            "prompts": prompts if prompts is not None else "unused", "responses_per_prompt": n,
            "sampling": {k: v for k, v in config.items() if k not in ("responses_per_prompt", "batch_size")},
            "auto": auto_settings})
        job = training_job_launch(project=project, kind="generate", config=config,
                                  inputs={"prompt_ids": ids}, user=user, round=round_obj)
        round_update(round=round_obj, generate_job_id=job.pk)
        round_transition(round=round_obj, to=S.GENERATING, job_id=job.pk)
    return round_obj, job


def _auto(round_obj: Round) -> dict:
    return {**AUTO_DEFAULTS, **(round_obj.settings.get("auto") or {})}


def _stage_model(round_obj: Round, kind: str) -> ModelVersion | None:
    """The model the round's latest successful `kind` job produced."""
    job = round_obj.jobs.filter(kind=kind, state="succeeded").order_by("-id").first()
    return ModelVersion.objects.filter(pk=(job.outputs or {}).get("model_version")).first() if job else None


def round_stage_launch(round_obj: Round, stage: str) -> TrainingJob:
    """Start the job that runs `stage` of a self-running round and move the round there."""
    auto, project = _auto(round_obj), round_obj.project
    if stage == S.REWARD_MODEL:
        job = training_job_launch(project=project, kind="reward_model", config=auto["reward_model"],
                                  round=round_obj)
    elif stage == S.POLICY:
        reward = _stage_model(round_obj, "reward_model")
        if auto["algorithm"] == "ppo" and reward is None:
            raise ApplicationError("the round has no trained reward model for PPO", code="no_reward_model")
        job = training_job_launch(project=project, kind=auto["algorithm"], config=auto["policy"],
                                  inputs={"reward_model": reward.pk} if auto["algorithm"] == "ppo" else {},
                                  round=round_obj)
    elif stage == S.EVALUATING:
        policy_job = round_obj.jobs.filter(kind__in=("ppo", "dpo"), state="succeeded").order_by("-id").first()
        candidate = ModelVersion.objects.get(pk=policy_job.outputs["model_version"])
        reward = _stage_model(round_obj, "reward_model")
        job = training_job_launch(project=project, kind="evaluate", config=auto["evaluation"], round=round_obj,
                                  inputs={"candidate": candidate.pk, "policy": policy_job.inputs["policy"],
                                          "reward_model": reward.pk if reward else None,
                                          "prompt_ids": evaluation_prompt_ids(
                                              project=project, n_prompts=int(auto["eval_prompts"]))})
    else:
        raise ValueError(f"no job runs stage {stage}")
    round_transition(round=round_obj, to=stage, job_id=job.pk)
    return job


def _fail(round_obj: Round, reason: str) -> None:
    round_transition(round=round_obj, to=S.FAILED, reason=reason)


def rounds_advance() -> list[int]:
    """Start the reward model of every self-running round whose tasks have their k rankings."""
    started = []
    for round_obj in Round.objects.filter(status=S.ANNOTATING):
        if not _auto(round_obj)["enabled"] or not round_is_complete(round_obj):
            continue
        with transaction.atomic():
            locked = Round.objects.select_for_update().get(pk=round_obj.pk)
            if locked.status != S.ANNOTATING:
                continue
            try:
                with transaction.atomic():
                    round_stage_launch(locked, S.REWARD_MODEL)
            except ApplicationError as exc:
                _fail(locked, f"could not start the reward model: {exc.message}")
                continue
        started.append(round_obj.pk)
    return started


def round_job_finished(*, job: TrainingJob) -> None:
    """Move the job's round on when the job that runs its current stage ends (called by
    lifecycle.job_finish, inside its transaction)."""
    if job.round_id is None:
        return
    round_obj = Round.objects.select_for_update().get(pk=job.round_id)
    if round_obj.stage_job_id != job.pk or round_obj.status in (S.FAILED, S.CLOSED):
        return  # not the job of the current stage (an earlier run, an extra job launched by hand)
    if job.state != TrainingJob.State.SUCCEEDED:
        what = f"{job.kind} job #{job.pk} {job.state}"
        _fail(round_obj, f"{what}: {job.error}" if job.error else what)
        return
    if job.kind == "generate":
        round_transition(round=round_obj, to=S.ANNOTATING, job_id=None)
        return
    auto = _auto(round_obj)
    if not auto["enabled"]:
        return
    if job.kind == "evaluate":
        _evaluated(round_obj, job, auto)
        return
    next_stage = {S.REWARD_MODEL: S.POLICY, S.POLICY: S.EVALUATING}[round_obj.status]
    try:
        with transaction.atomic():
            round_stage_launch(round_obj, next_stage)
    except (ApplicationError, ModelVersion.DoesNotExist, KeyError) as exc:
        message = exc.message if isinstance(exc, ApplicationError) else str(exc)
        _fail(round_obj, f"could not start the {next_stage.replace('_', ' ')} stage: {message}")


def _evaluated(round_obj: Round, job: TrainingJob, auto: dict) -> None:
    candidate = ModelVersion.objects.get(pk=job.outputs["candidate"])
    settings = dict(round_obj.settings)
    settings["auto"] = {**settings.get("auto", {}), "candidate": candidate.pk,
                        "evaluation": job.outputs.get("evaluation")}
    round_update(round=round_obj, settings=settings)
    if auto["require_approval"]:
        round_transition(round=round_obj, to=S.AWAITING_APPROVAL, job_id=None)
        return
    model_version_promote(version=candidate)
    job_log(job=job, message=f"promoted model version #{candidate.pk}")
    round_transition(round=round_obj, to=S.CLOSED, job_id=None)


def round_job_requeued(*, job: TrainingJob) -> None:
    """A relaunched job takes its failed round back to the stage it runs."""
    if job.round_id is None:
        return
    round_obj = Round.objects.select_for_update().get(pk=job.round_id)
    if round_obj.status == S.FAILED and round_obj.stage_job_id == job.pk:
        round_transition(round=round_obj, to=round_obj.failed_stage, job_id=job.pk)


@transaction.atomic
def policy_promote(*, version: ModelVersion, project: Project | None = None, user=None) -> ModelVersion:
    """Promote a policy (the registry's rule) and, when it is the candidate a round waits on, that
    is the admin's approval: the round closes."""
    version = model_version_promote(version=version, project=project, user=user)
    round_candidate_promoted(version=version)
    return version


def round_candidate_promoted(*, version: ModelVersion) -> None:
    """An admin promoting the candidate a round waits on approves it: the round closes."""
    for round_obj in Round.objects.filter(project_id=version.project_id, status=S.AWAITING_APPROVAL):
        if (round_obj.settings.get("auto") or {}).get("candidate") == version.pk:
            settings = dict(round_obj.settings)
            settings["auto"] = {**settings.get("auto", {}), "approved": True}
            round_update(round=round_obj, settings=settings)
            round_transition(round=round_obj, to=S.CLOSED, job_id=None)
