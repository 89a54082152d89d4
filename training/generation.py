"""The round generator: sample N candidates per prompt from a policy with the shared sampler and
turn them into ranking tasks that carry each response's lineage.

Where an inference engine serves the policy (RLHF_SERVING_ENGINE vllm or external), the responses
come from it (serving.engine_sampling maps the sampling settings exactly, seeds per prompt); else,
or while none can be reached, from the in-process sampler, and the job's log says why.

Resumable by construction: a prompt's task is created as soon as its responses are sampled, and a
relaunched job skips the prompts that already have their task. A cancel is seen between tokens
(in-process) or within a second (engine: its requests are hung up, which aborts them); the tasks
made before it are kept (they are complete tasks), the batch in flight is dropped."""

from __future__ import annotations

import dataclasses
import time

from django.conf import settings

from annotate.models import Prompt, RankingTask
from annotate.services.tasks import tasks_create
from registry.models import ModelVersion

from .kinds import build_config
from .models import TrainingJob
from .reporter import JobCancelled, JobReporter
from .services.jobs import job_log

ENGINE_CHUNK = 64  # prompts sent to the engine at once: its own scheduler batches them
ENGINE_WAIT_S = 600  # longest a job waits for the policy's engine to finish starting


def run_generate(job: TrainingJob, reporter: JobReporter) -> dict:
    from rlhf.models import load_policy, load_tokenizer

    policy = ModelVersion.objects.get(pk=job.inputs["policy"])
    n = int(job.config.get("responses_per_prompt", 2))
    # A step is one sampled response: the total is prompts × responses from the first second.
    reporter.stage("loading model", total=len(job.inputs["prompt_ids"]) * n)
    sampling = build_config("generate", job.config)
    route = _engine_route(job, policy, reporter)
    if route is not None:
        model, tokenizer = None, load_tokenizer(settings.ARTIFACTS_ROOT / policy.path)
        batch = max(ENGINE_CHUNK, int(job.config.get("batch_size", 8)))
    else:
        model, tokenizer = load_policy(settings.ARTIFACTS_ROOT / policy.path)
        batch = int(job.config.get("batch_size", 8))
    by_id = {p.pk: p for p in Prompt.objects.filter(pk__in=job.inputs["prompt_ids"])}
    prompts = [by_id[i] for i in job.inputs["prompt_ids"] if i in by_id]
    lineage_sampling = {k: v for k, v in dataclasses.asdict(sampling).items()
                        if k in ("strategy", "temperature", "top_k", "top_p", "seed", "max_new_tokens")}
    round_obj = job.round
    done = _prompts_done(job)
    created = len(done)
    reporter.stage("generating")
    position = {p.pk: i for i, p in enumerate(prompts)}
    for start in range(0, len(prompts), batch):
        chunk = [p for p in prompts[start:start + batch] if p.pk not in done]
        if not chunk:
            continue
        if route is not None:
            outputs = _sample_on_engine(route, tokenizer, chunk, [position[p.pk] for p in chunk], sampling, n,
                                        reporter)
        else:
            outputs = _sample_in_process(model, tokenizer, chunk, start, sampling, n, reporter)
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


def _sample_in_process(model, tokenizer, chunk: list[Prompt], start: int, sampling, n: int,
                       reporter: JobReporter) -> list:
    from rlhf.callbacks import StopRequested
    from rlhf.sampling import generate

    # A different seed per batch keeps the run reproducible without repeating samples (and a
    # resumed run samples a batch as the first run would have).
    config = dataclasses.replace(sampling, seed=None if sampling.seed is None else sampling.seed + start)
    try:
        return generate(model, tokenizer, [p.as_messages() for p in chunk], config, n=n,
                        should_stop=reporter.should_stop)
    except StopRequested:
        raise JobCancelled() from None


def _sample_on_engine(route, tokenizer, chunk: list[Prompt], positions: list[int], sampling, n: int,
                      reporter: JobReporter) -> list:
    from rlhf.tokenization import encode_prompt
    from serving.engine_sampling import EngineCancelled, engine_generate

    ids = [encode_prompt(tokenizer, p.as_messages()) for p in chunk]
    try:
        return engine_generate(route, ids, sampling, n, positions=positions, should_stop=reporter.should_stop)
    except EngineCancelled:
        raise JobCancelled() from None


def _engine_route(job: TrainingJob, policy: ModelVersion, reporter: JobReporter):
    """The engine serving `policy`, or None (then the in-process sampler runs; the log says why).
    A managed engine that is starting (or asked for on demand) is waited for."""
    from serving.engine_choice import TRANSFORMERS, serving_engine
    from serving.engines import engine_route
    from serving.errors import OpenAIError
    from serving.resolve import ServedModel

    choice = serving_engine()
    if choice.name == TRANSFORMERS:
        return None
    served = ServedModel(requested=str(policy.pk), version_id=policy.pk, name=policy.name,
                         path=str(settings.ARTIFACTS_ROOT / policy.path),
                         project_slug=policy.project.slug if policy.project_id else None)
    deadline = time.monotonic() + ENGINE_WAIT_S
    waiting = False
    while True:
        try:
            route = engine_route(served)
            job_log(job=job, message=f"sampling on the {choice.name} engine at {route.openai_url}")
            return route
        except OpenAIError as exc:
            if exc.code in ("engine_starting", "model_loading") and time.monotonic() < deadline:
                if not waiting:
                    waiting = True
                    reporter.stage("waiting for the engine")
                    job_log(job=job, message=f"waiting for the {choice.name} engine: {exc.message}")
                if reporter.should_stop():
                    raise JobCancelled() from None
                time.sleep(2)
                continue
            job_log(job=job, level="WARNING", message=f"the {choice.name} engine cannot serve model version "
                                                      f"{policy.pk} ({exc.message}); sampling in-process instead")
            return None


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
