"""Running one job on a worker: claim it (once), run its stage with progress reporting and a
heartbeat, register the model version it produced, record failure on the job row."""

from __future__ import annotations

import logging
import threading
import traceback
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from ..models import ModelVersion, TrainingJob
from ..stages import build_config, stage_function
from .jobs import JobReporter, job_log
from .rounds import round_job_finished

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5.0


class JobCancelled(Exception):
    pass


def _claim(job_id: int, hostname: str) -> TrainingJob | None:
    """queued -> running, exactly once: a redelivered message finds the job no longer queued."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            log.warning("job %s does not exist; message dropped", job_id)
            return None
        if job.state != TrainingJob.State.QUEUED:
            job_log(job=job, message=f"message for job in state {job.state} ignored by {hostname}")
            return None
        now = timezone.now()
        job.state = TrainingJob.State.RUNNING
        job.started_at = job.heartbeat_at = now
        job.worker_hostname = hostname
        job.attempts += 1
        job.save(update_fields=["state", "started_at", "heartbeat_at", "worker_hostname", "attempts"])
        job_log(job=job, message=f"started on {hostname}")
    return job


def _beat(job_id: int, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            close_old_connections()
            TrainingJob.objects.filter(pk=job_id, state="running").update(heartbeat_at=timezone.now())
        except Exception as exc:  # the database may blink; the next beat retries
            log.warning("job heartbeat failed: %s", exc)


def _finish(job: TrainingJob, state: str, *, outputs: dict | None = None, error: str = "") -> None:
    TrainingJob.objects.filter(pk=job.pk).update(state=state, outputs=outputs or job.outputs, error=error,
                                                 finished_at=timezone.now(), heartbeat_at=timezone.now())


def job_run(*, job_id: int, hostname: str) -> str:
    job = _claim(job_id, hostname)
    if job is None:
        return "ignored"
    stop = threading.Event()
    threading.Thread(target=_beat, args=(job.pk, stop), daemon=True, name=f"job-{job.pk}-heartbeat").start()
    reporter = JobReporter(job)
    try:
        outputs = RUNNERS[job.kind](job, reporter)
    except JobCancelled:
        _finish(job, TrainingJob.State.CANCELLED)
        job_log(job=job, message="cancelled")
        return "cancelled"
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        _finish(job, TrainingJob.State.FAILED, error=message)
        job_log(job=job, level="ERROR", message=traceback.format_exc()[-8000:])
        round_job_finished(job=TrainingJob.objects.get(pk=job.pk))
        raise
    finally:
        stop.set()
    _finish(job, TrainingJob.State.SUCCEEDED, outputs=outputs)
    job_log(job=job, message=f"succeeded: {outputs}")
    round_job_finished(job=TrainingJob.objects.get(pk=job.pk))
    return "succeeded"


def _artifact_dir(job: TrainingJob) -> tuple[Path, str]:
    rel = f"jobs/{job.pk:06d}-{job.kind}"
    return settings.ARTIFACTS_ROOT / rel, rel


def _path(version: ModelVersion) -> str:
    return str(settings.ARTIFACTS_ROOT / version.path)


def model_version_register(*, job: TrainingJob, kind: str, rel: str, parents: list[ModelVersion],
                           metrics: dict) -> ModelVersion:
    with transaction.atomic():
        version = ModelVersion.objects.create(
            name=f"{job.project.slug}-{job.kind}-{job.pk}", kind=kind, path=rel, source=f"job:{job.pk}",
            project=job.project, job=job, metrics=_jsonable(metrics),
        )
        version.parents.set(parents)
    return version


def _jsonable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool | type(None))}


def _run_stage(job: TrainingJob, reporter: JobReporter, data, *, kind_out: str, extra_inputs=None) -> dict:
    policy = ModelVersion.objects.get(pk=job.inputs["policy"])
    out_dir, rel = _artifact_dir(job)
    config = build_config(job.kind, job.config)
    train = stage_function(job.kind)
    job_log(job=job, message=f"{job.kind}: {len(data)} examples, base {policy.name} (#{policy.pk})")
    args = extra_inputs or {}
    result = train(config, data, _path(policy), out_dir=out_dir, on_step=reporter.on_step,
                   should_stop=reporter.should_stop, **args)
    if result.cancelled:
        raise JobCancelled()
    parents = [policy]
    if job.kind == "ppo" and job.inputs.get("reward_model"):
        parents.append(ModelVersion.objects.get(pk=job.inputs["reward_model"]))
    version = model_version_register(job=job, kind=kind_out, rel=rel, parents=parents, metrics=result.metrics)
    return {"model_version": version.pk, "metrics": _jsonable(result.metrics), "examples": len(data)}


def _run_sft(job: TrainingJob, reporter: JobReporter) -> dict:
    from annotate.selectors.training import demonstrations_rows

    rows = list(demonstrations_rows(project=job.project, ids=job.inputs["demonstration_ids"]))
    return _run_stage(job, reporter, rows, kind_out="policy")


def _pair_rows(job: TrainingJob) -> list[dict]:
    from annotate.selectors.training import pairs_rows

    rows = []
    for row in pairs_rows(project=job.project, ids=job.inputs["pair_ids"]):
        # The ids let the stage hold out whole prompts and count annotators' consensus. The stored
        # margin is groups apart (>= 1); the stage gets groups apart - 1, so adjacent responses,
        # the weakest preference, carry no margin.
        margin = row.get("margin")
        rows.append({"prompt": row["prompt"], "chosen": _text(row["chosen"]), "rejected": _text(row["rejected"]),
                     "margin": max(0, margin - 1) if margin is not None else None,
                     "prompt_id": row["prompt_id"], "task_id": row["task"], "annotator": row["annotator"],
                     "chosen_id": row["chosen_id"], "rejected_id": row["rejected_id"]})
    return rows


def _text(value) -> str:
    """Conversational exports carry completions as [{role, content}]; the stages take the text."""
    if isinstance(value, list):
        return "".join(m.get("content", "") for m in value)
    return value


def _run_reward(job: TrainingJob, reporter: JobReporter) -> dict:
    return _run_stage(job, reporter, _pair_rows(job), kind_out="reward")


def _run_dpo(job: TrainingJob, reporter: JobReporter) -> dict:
    return _run_stage(job, reporter, _pair_rows(job), kind_out="policy")


def _prompt_rows(ids: list[int]) -> list[dict]:
    from annotate.models import Prompt

    by_id = {p.pk: p for p in Prompt.objects.filter(pk__in=ids)}
    return [{"prompt": by_id[i].messages or by_id[i].text, "reference": by_id[i].reference, "prompt_id": i}
            for i in ids if i in by_id]


def _run_ppo(job: TrainingJob, reporter: JobReporter) -> dict:
    rows = _prompt_rows(job.inputs["prompt_ids"])
    reward_id = job.inputs.get("reward_model")
    extra: dict = {"reward_model": _path(ModelVersion.objects.get(pk=reward_id)) if reward_id else None}
    if job.config.get("scorer"):
        extra["scorer"] = job.config["scorer"]  # a name or {name, ...}; rlhf builds the scorer
    return _run_stage(job, reporter, rows, kind_out="policy", extra_inputs=extra)


def _run_generate(job: TrainingJob, reporter: JobReporter) -> dict:
    from .generation import round_generate

    return round_generate(job=job, reporter=reporter, cancelled=JobCancelled)


RUNNERS = {"sft": _run_sft, "reward_model": _run_reward, "dpo": _run_dpo, "ppo": _run_ppo,
           "generate": _run_generate}
