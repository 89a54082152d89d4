"""The training kinds on a worker (SFT, reward model, PPO, DPO): read the frozen rows, run the rlhf
stage in the job's own directory (where a relaunch finds its resumable state), register the model."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings

from registry.models import ModelVersion
from registry.services import jsonable, model_version_register

from .kinds import build_config, job_kind, planned_steps
from .launched import is_launched, run_launched
from .models import JobMetric, TrainingJob
from .reporter import JobCancelled, JobReporter, persist
from .services.jobs import job_log


def _artifact_dir(job: TrainingJob) -> tuple[Path, str]:
    """The job's own output directory: the same on every run of the job (that is how a relaunch
    finds its resumable state); what a crashed earlier run left half-written is removed first."""
    from rlhf.checkpoints import remove_partials

    rel = job.output_path or f"jobs/{job.pk:06d}-{job.kind}"
    if ModelVersion.objects.filter(path=rel).exists():
        raise RuntimeError(f"{rel} already holds a registered model version; it is never written again")
    remove_partials(settings.ARTIFACTS_ROOT / rel)
    return settings.ARTIFACTS_ROOT / rel, rel


def _path(version: ModelVersion) -> str:
    return str(settings.ARTIFACTS_ROOT / version.path)


def run_training(job: TrainingJob, reporter: JobReporter) -> dict:
    """Run a training kind: its rlhf stage on its frozen rows from its starting policy (and, for
    PPO, the reward model or scorer), then register the checkpoint with its parents. When an earlier
    run saved the model and died before registering it, only the registration is left to do."""
    from rlhf.checkpoints import METRICS_FILE

    spec = job_kind(job.kind)
    policy = ModelVersion.objects.get(pk=job.inputs["policy"])
    reward = ModelVersion.objects.filter(pk=job.inputs.get("reward_model")).first()
    out_dir, rel = _artifact_dir(job)
    data = spec.reader()(job)
    if (out_dir / "config.json").is_file():
        job_log(job=job, message=f"{rel} already holds this job's finished model; registering it")
        metrics = json.loads((out_dir / METRICS_FILE).read_text()) if (out_dir / METRICS_FILE).is_file() else {}
    else:
        extra: dict = {}
        if "reward_model" in spec.inputs:
            extra["reward_model"] = _path(reward) if reward is not None else None
        if "scorer" in spec.extra and job.config.get("scorer"):
            extra["scorer"] = job.config["scorer"]  # a name or {name, ...}; rlhf builds the scorer
        reporter.stage("loading model", total=planned_steps(job.kind, job.config, len(data)))
        job_log(job=job, message=f"{job.kind}: {len(data)} examples, base {policy.name} (#{policy.pk})")
        if is_launched(job.config):  # several processes: an accelerate launch the worker follows
            metrics = run_launched(job, reporter, data=data, policy_dir=_path(policy), out_dir=out_dir, extra=extra)
            _record_final_eval(job, metrics, _last_step(job))
        else:
            result = spec.stage()(build_config(job.kind, job.config), data, _path(policy), out_dir=out_dir,
                                  on_step=reporter.on_step, should_stop=reporter.should_stop,
                                  on_stage=reporter.on_stage, **extra)
            if result.cancelled:
                raise JobCancelled()
            metrics = result.metrics
            _record_final_eval(job, metrics, result.history[-1] if result.history else {})
    parents = [policy] + ([reward] if reward is not None else [])
    version = persist(lambda: model_version_register(job=job, kind=spec.produces, rel=rel, parents=parents,
                                                     metrics=metrics))
    return {"model_version": version.pk, "metrics": jsonable(metrics), "examples": len(data)}


def _last_step(job: TrainingJob) -> dict:
    row = JobMetric.objects.filter(job=job).order_by("-step", "-id").first()
    return {"step": row.step, **row.values} if row else {}


def _record_final_eval(job: TrainingJob, metrics: dict, last: dict) -> None:
    """The held-out numbers of the evaluation that ends a stage become the last point of their series
    (a reward model's held-out accuracy is charted even when it was only measured at the end)."""
    final = {k: v for k, v in (metrics or {}).items()
             if k.startswith("eval_") and isinstance(v, int | float) and not isinstance(v, bool) and k not in last}
    if final and "step" in last:
        persist(lambda: JobMetric.objects.create(job=job, step=int(last["step"]), values=final))
