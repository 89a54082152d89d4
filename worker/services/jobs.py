"""Training job writes: launch (validate, freeze the data, enqueue on commit) and the log lines a
job records. How jobs end and start again is in lifecycle.py; running one is in job_runner.py."""

from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.utils import timezone

from annotate.models import Project, Prompt, Round
from annotate.selectors.training import demonstration_ids, pair_ids
from config.errors import ApplicationError, NotFound

from ..models import JobLog, ModelVersion, TrainingJob
from ..stages import config_validate, planned_steps
from .models import default_model_version

log = logging.getLogger(__name__)


def _model_input(*, project: Project, kind: str, given: int | None, label: str) -> ModelVersion | None:
    if given is not None:
        version = ModelVersion.objects.filter(pk=given).first()
        if version is None:
            raise ApplicationError(f"inputs.{label}: model version {given} does not exist", code="invalid_inputs",
                                   details={label: "not found"})
        if version.kind != kind:
            raise ApplicationError(f"inputs.{label}: model version {given} is a {version.kind} model, "
                                   f"not a {kind} model", code="invalid_inputs", details={label: "wrong kind"})
        return version
    if kind == ModelVersion.Kind.POLICY:
        return (ModelVersion.objects.filter(project=project, kind="policy", promoted=True).first()
                or default_model_version())
    # "The newest reward model" is the newest one not archived (an archived one stays usable by id).
    return ModelVersion.objects.filter(project=project, kind="reward", archived_at__isnull=True).order_by("-id").first()


def _prompt_ids(*, project: Project, given) -> list[int]:
    """inputs.prompt_ids: a non-empty list of ids of this project's prompts, checked at launch."""
    if not isinstance(given, list) or not given or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in given):
        raise ApplicationError("inputs.prompt_ids must be a non-empty list of prompt ids", code="invalid_inputs",
                               details={"prompt_ids": "not a list of integers"})
    ids = list(dict.fromkeys(given))
    found = set(Prompt.objects.filter(project=project, pk__in=ids).values_list("id", flat=True))
    missing = [i for i in ids if i not in found]
    if missing:
        raise ApplicationError(f"inputs.prompt_ids: {missing[:10]} are not prompts of project {project.pk}",
                               code="invalid_inputs", details={"prompt_ids": missing[:100]})
    return ids


def _snapshot(*, project: Project, kind: str, inputs: dict) -> dict:
    """Freeze exactly which rows the job trains on, so a rerun sees the same data."""
    if kind == "sft":
        ids = demonstration_ids(project=project)
        if not ids:
            raise ApplicationError("the project has no demonstrations to fine-tune on", code="no_data")
        return {"demonstration_ids": ids}
    if kind in ("reward_model", "dpo"):
        ids = pair_ids(project=project)
        if not ids:
            raise ApplicationError("the project has no ranked pairs to train on", code="no_data")
        return {"pair_ids": ids}
    if kind == "ppo":
        ids = list(Prompt.objects.filter(project=project).order_by("id").values_list("id", flat=True))
        if not ids:
            raise ApplicationError("the project has no prompts for PPO rollouts", code="no_data")
        return {"prompt_ids": ids}
    # generate and evaluate: the prompts were chosen by the round (or given explicitly)
    if inputs.get("prompt_ids") is None:
        raise ApplicationError(f"a {kind} job needs inputs.prompt_ids", code="invalid_inputs",
                               details={"prompt_ids": "missing"})
    return {"prompt_ids": _prompt_ids(project=project, given=inputs["prompt_ids"])}


def training_job_launch(*, project: Project, kind: str, config: dict | None = None, inputs: dict | None = None,
                        user=None, round: Round | None = None, time_limit_seconds: int | None = None) -> TrainingJob:
    """Validate, snapshot the data, create the job and enqueue it once the transaction commits."""
    clean_config = config_validate(kind, config or {})
    inputs = dict(inputs or {})
    unknown = set(inputs) - {"policy", "reward_model", "prompt_ids", "candidate"}
    if unknown:
        raise ApplicationError(f"unknown inputs: {', '.join(sorted(unknown))}", code="invalid_inputs",
                               details={k: "unknown" for k in unknown})
    for key in ("policy", "reward_model", "candidate"):
        if inputs.get(key) is not None and (isinstance(inputs[key], bool) or not isinstance(inputs[key], int)):
            raise ApplicationError(f"inputs.{key} must be a model version id", code="invalid_inputs",
                                   details={key: "not an integer"})
    policy = _model_input(project=project, kind="policy", given=inputs.get("policy"), label="policy")
    if policy is None:
        raise ApplicationError("no policy to start from: promote one or import a base model", code="no_policy")
    resolved: dict = {"policy": policy.id}
    if kind == "ppo":
        reward = _model_input(project=project, kind="reward", given=inputs.get("reward_model"),
                              label="reward_model")
        if reward is None and not clean_config.get("scorer"):
            raise ApplicationError("PPO needs a reward model (train one first) or a verifiable scorer "
                                   "(config.scorer)", code="no_reward_model")
        resolved["reward_model"] = reward.id if reward is not None and not clean_config.get("scorer") else None
    if kind == "evaluate":
        candidate = _model_input(project=project, kind="policy", given=inputs.get("candidate"), label="candidate")
        if inputs.get("candidate") is None:
            raise ApplicationError("an evaluate job needs inputs.candidate (a policy version id)",
                                   code="invalid_inputs", details={"candidate": "missing"})
        resolved["candidate"] = candidate.id
        reward = _model_input(project=project, kind="reward", given=inputs.get("reward_model"),
                              label="reward_model")
        resolved["reward_model"] = reward.id if reward else None
    if kind in ("generate", "evaluate"):
        resolved["prompt_ids"] = inputs.get("prompt_ids")
    resolved.update(_snapshot(project=project, kind=kind, inputs=resolved))
    with transaction.atomic():
        job = TrainingJob.objects.create(project=project, kind=kind, config=clean_config, inputs=resolved,
                                         created_by=user if getattr(user, "is_authenticated", False) else None,
                                         round=round, time_limit_seconds=time_limit_seconds,
                                         progress={"step": 0, "total": _planned(kind, clean_config, resolved),
                                                   "eta_seconds": None, "stage": "queued"})
        job.output_path = f"jobs/{job.pk:06d}-{kind}-{uuid.uuid4().hex[:8]}"
        job.save(update_fields=["output_path"])
        job_log(job=job, message=f"queued {kind} job on policy #{policy.id}")
        transaction.on_commit(lambda: enqueue(job.id))
    return job


def _planned(kind: str, config: dict, inputs: dict) -> int | None:
    """The job's step total, shown from the moment it is queued."""
    ids = next((inputs[k] for k in ("pair_ids", "demonstration_ids", "prompt_ids") if isinstance(inputs.get(k), list)),
               [])
    return planned_steps(kind, config, len(ids))


def enqueue(job_id: int) -> None:
    """Publish the job's message on the gpu queue (call it on commit). A broker that is down does
    not lose the job: it stays queued and the housekeeping publishes it again."""
    from ..tasks import run_job

    TrainingJob.objects.filter(pk=job_id).update(enqueued_at=timezone.now())
    try:
        result = run_job.apply_async(args=[job_id], queue="gpu", retry=False)
    except Exception as exc:  # broker unreachable: log it; jobs_republish_lost sends it later
        log.warning("could not publish job %s: %s", job_id, exc)
        TrainingJob.objects.filter(pk=job_id).update(enqueued_at=None)
        JobLog.objects.create(job_id=job_id, level="WARNING",
                              message=f"the broker did not take the job's message ({exc}); it is sent again "
                                      "once a worker is idle")
        return
    TrainingJob.objects.filter(pk=job_id).update(celery_task_id=result.id or "")


def training_job_get(*, job_id: int) -> TrainingJob:
    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


def job_log(*, job: TrainingJob, message: str, level: str = "INFO") -> None:
    JobLog.objects.create(job=job, level=level, message=message[:10000])
