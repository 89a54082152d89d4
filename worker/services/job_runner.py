"""Running one job on a worker: claim it (once), run its stage with progress reporting, a
heartbeat, cancellation and a wall-time limit, register the model version it produced, and end it
through lifecycle.job_finish."""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from pathlib import Path

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connections, transaction
from django.utils import timezone

from ..models import JobMetric, ModelVersion, TrainingJob, WorkerHeartbeat
from ..stages import build_config, planned_steps, stage_function
from .jobs import job_log
from .lifecycle import job_finish

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5.0
DB_OUTAGE_SECONDS = 120.0  # how long a running job waits out a database restart before it gives up


def _persist(write):
    """Run a database write of a running job, waiting out a database that restarts or blinks
    (reconnecting between tries) instead of losing the job's training to one failed INSERT."""
    deadline = time.monotonic() + DB_OUTAGE_SECONDS
    delay = 0.5
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.1f s", str(exc).strip().splitlines()[0], delay)
            connections.close_all()
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class JobCancelled(Exception):
    pass


class JobReporter:
    """The on_step / on_stage / should_stop callbacks a stage gets: writes progress, metrics and
    heartbeats, and answers "stop?" from the cancel flag (read at most once a second, so a fast
    loop does not hammer the database) and from the job's wall-time limit.

    Progress is {step, total, eta_seconds, eta_basis, stage}, kept here and written whole: the
    runner says the stage and the total before the model loads, so the page has both from the
    job's first second. Until a step has been timed the ETA comes from the project's last finished
    job of the same kind (eta_basis "earlier job"); after that from this run's own pace."""

    def __init__(self, job: TrainingJob):
        self.job = job
        self.started = time.monotonic()
        self.limit = job.time_limit_seconds or settings.RLHF_JOB_TIME_LIMIT_SECONDS
        self._last_cancel_check = 0.0
        self._cancel = False
        self.timed_out = False
        self.steps = 0
        self.first_step: int | None = None
        self.work_started: float | None = None  # when the first stage after loading began
        previous = job.progress or {}
        self.progress = {"step": previous.get("step") or 0, "total": previous.get("total"),
                         "eta_seconds": None, "eta_basis": None, "stage": previous.get("stage") or "starting"}
        self._prior_pace: float | None | bool = False  # False: not looked up yet

    def _seconds_per_step(self) -> float | None:
        """Wall time per step of the project's last succeeded job of this kind (None without one)."""
        if self._prior_pace is False:
            earlier = (TrainingJob.objects.filter(project_id=self.job.project_id, kind=self.job.kind,
                                                  state=TrainingJob.State.SUCCEEDED,
                                                  started_at__isnull=False, finished_at__isnull=False)
                       .exclude(pk=self.job.pk).order_by("-finished_at").first())
            total = (earlier.progress or {}).get("total") if earlier else None
            self._prior_pace = ((earlier.finished_at - earlier.started_at).total_seconds() / total
                                if earlier and isinstance(total, int | float) and total > 0 else None)
        return self._prior_pace

    def _estimate_from_earlier(self) -> None:
        total, step = self.progress["total"], self.progress["step"] or 0
        pace = self._seconds_per_step() if total else None
        if pace is not None:
            self.progress["eta_seconds"] = round(pace * max(total - step, 0), 1)
            self.progress["eta_basis"] = "earlier job"

    def _write(self) -> None:
        progress = dict(self.progress)
        _persist(lambda: TrainingJob.objects.filter(pk=self.job.pk).update(progress=progress,
                                                                           heartbeat_at=timezone.now()))

    def on_step(self, metrics: dict) -> None:
        self.steps += 1
        step = int(metrics.get("step", self.steps))
        if self.first_step is None:
            # A resumed run starts after its last saved step; points an earlier run reported past
            # that step are replaced by the ones this run reports, so the series stays one line.
            self.first_step = step
            _persist(lambda: JobMetric.objects.filter(job=self.job, step__gte=step).delete())
        total = (metrics.get("total_steps") or metrics.get("total") or metrics.get("total_iterations")
                 or self.progress["total"])
        now = time.monotonic()
        elapsed = now - (self.work_started or self.started)
        done = step - self.first_step + 1
        eta = (elapsed / done) * (total - step) if total and done > 0 else None
        values = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        samples = metrics.get("samples")
        self.progress.update(step=step, total=total, eta_seconds=round(eta, 1) if eta is not None else None,
                             eta_basis="this run" if eta is not None else None,
                             stage=metrics.get("stage") or self.progress["stage"])
        progress = dict(self.progress)

        def write() -> None:
            with transaction.atomic():
                if samples:  # PPO's sample responses go to the log, not the numeric series
                    shown = samples[:4] if isinstance(samples, list) else samples
                    job_log(job=self.job, message=f"step {step} samples: {shown}"[:4000])
                JobMetric.objects.create(job=self.job, step=step, values=values)
                TrainingJob.objects.filter(pk=self.job.pk).update(progress=progress, heartbeat_at=timezone.now())
                for alarm in metrics.get("alarms") or []:
                    job_log(job=self.job, level="WARNING", message=f"step {step}: {alarm}")

        _persist(write)

    def stage(self, label: str, total: int | None = None) -> None:
        """Say what the job is doing now (loading model, generating, scoring, updating, training,
        evaluating, saving) and, when known, how many steps it will take."""
        if label == self.progress["stage"] and (total is None or total == self.progress["total"]):
            return  # a PPO iteration says "generating" every time; one write is enough
        if self.work_started is None and label != "loading model":
            self.work_started = time.monotonic()
        self.progress["stage"] = label
        if total is not None:
            self.progress["total"] = total
        if self.progress["eta_basis"] != "this run":
            self._estimate_from_earlier()
        self._write()

    def on_stage(self, label: str) -> None:
        """The stage callback rlhf's training functions take."""
        self.stage(label)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.timed_out and now - self.started > self.limit:
            self.timed_out = True
        if not self._cancel and now - self._last_cancel_check >= 1.0:
            self._last_cancel_check = now
            self._cancel = _persist(
                lambda: TrainingJob.objects.filter(pk=self.job.pk, cancel_requested=True).exists())
        return self._cancel or self.timed_out


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
        WorkerHeartbeat.objects.filter(hostname=hostname).update(current_job_id=job.pk, idle_since=None)
        job_log(job=job, message=f"started on {hostname}" + (f" (run {job.attempts})" if job.attempts > 1 else ""))
    return job


def _beat(job_id: int, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            close_old_connections()
            TrainingJob.objects.filter(pk=job_id, state="running").update(heartbeat_at=timezone.now())
        except Exception as exc:  # the database may blink; the next beat retries
            log.warning("job heartbeat failed: %s", exc)


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
        if reporter.timed_out and not reporter._cancel:
            why = (f"wall-time limit of {reporter.limit} s reached; relaunch the job to continue from its last "
                   "saved state")
            _persist(lambda: job_finish(job_id=job.pk, state=TrainingJob.State.FAILED, error=why))
            return "failed"
        _persist(lambda: job_finish(job_id=job.pk, state=TrainingJob.State.CANCELLED,
                                    message="cancelled; relaunch the job to continue from its last saved state"))
        return "cancelled"
    except Exception as exc:
        trace, error = traceback.format_exc()[-8000:], f"{type(exc).__name__}: {exc}"
        _persist(lambda: job_log(job=job, level="ERROR", message=trace))
        _persist(lambda: job_finish(job_id=job.pk, state=TrainingJob.State.FAILED, error=error))
        raise
    finally:
        stop.set()
    _persist(lambda: job_finish(job_id=job.pk, state=TrainingJob.State.SUCCEEDED, outputs=outputs,
                                message=f"succeeded: {_outcome_text(outputs)}"))
    return "succeeded"


def _outcome_text(outputs: dict) -> str:
    """The job's last log line, for people: what it made and a few final numbers, not a raw dict."""
    parts = []
    if outputs.get("model_version"):
        parts.append(f"model version #{outputs['model_version']}")
    if outputs.get("examples") is not None:
        parts.append(f"from {outputs['examples']} examples")
    if outputs.get("tasks") is not None:
        parts.append(f"{outputs['tasks']} tasks, {outputs.get('responses', 0)} responses")
    if outputs.get("candidate"):
        parts.append(f"evaluated model version #{outputs['candidate']}")
    numbers = outputs.get("metrics") or outputs.get("evaluation") or {}
    shown = [f"{k} {v:.4g}" for k, v in numbers.items()
             if isinstance(v, float) and k in ("loss", "eval_loss", "eval_accuracy", "reward", "kl", "win_rate",
                                                 "mean_reward", "objective")]
    return ", ".join(parts) + (f"; {', '.join(shown)}" if shown else "") if parts or shown else "done"


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
    from rlhf.checkpoints import METRICS_FILE

    policy = ModelVersion.objects.get(pk=job.inputs["policy"])
    out_dir, rel = _artifact_dir(job)
    if (out_dir / "config.json").is_file():
        # An earlier run saved the model and died before registering it: register what it saved.
        job_log(job=job, message=f"{rel} already holds this job's finished model; registering it")
        metrics = json.loads((out_dir / METRICS_FILE).read_text()) if (out_dir / METRICS_FILE).is_file() else {}
    else:
        config = build_config(job.kind, job.config)
        reporter.stage("loading model", total=planned_steps(job.kind, job.config, len(data)))
        train = stage_function(job.kind)
        job_log(job=job, message=f"{job.kind}: {len(data)} examples, base {policy.name} (#{policy.pk})")
        result = train(config, data, _path(policy), out_dir=out_dir, on_step=reporter.on_step,
                       should_stop=reporter.should_stop, on_stage=reporter.on_stage, **(extra_inputs or {}))
        if result.cancelled:
            raise JobCancelled()
        metrics = result.metrics
        _record_final_eval(job, result)
    parents = [policy]
    if job.kind == "ppo" and job.inputs.get("reward_model"):
        parents.append(ModelVersion.objects.get(pk=job.inputs["reward_model"]))
    version = _persist(lambda: model_version_register(job=job, kind=kind_out, rel=rel, parents=parents,
                                                      metrics=metrics))
    return {"model_version": version.pk, "metrics": _jsonable(metrics), "examples": len(data)}


def _record_final_eval(job: TrainingJob, result) -> None:
    """The held-out numbers of the evaluation that ends a stage become the last point of their series
    (a reward model's held-out accuracy is charted even when it was only measured at the end)."""
    last = result.history[-1] if result.history else {}
    final = {k: v for k, v in (result.metrics or {}).items()
             if k.startswith("eval_") and isinstance(v, int | float) and not isinstance(v, bool) and k not in last}
    if final and "step" in last:
        _persist(lambda: JobMetric.objects.create(job=job, step=int(last["step"]), values=final))


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


def _run_evaluate(job: TrainingJob, reporter: JobReporter) -> dict:
    from .evaluation import evaluation_run

    return evaluation_run(job=job, reporter=reporter, cancelled=JobCancelled)


RUNNERS = {"sft": _run_sft, "reward_model": _run_reward, "dpo": _run_dpo, "ppo": _run_ppo,
           "generate": _run_generate, "evaluate": _run_evaluate}
