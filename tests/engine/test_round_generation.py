"""Round generation on the engine: a generate job samples through the session's vLLM (policy A) with
the round's settings mapped exactly, greedy equal to our in-process decode, seeds repeatable, and a
cancel hangs the engine's requests up within a second or so."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.django_db]

QUESTIONS = ["hello world", "what is two plus two?", "the quick brown fox", "a reward model scores"]


@pytest.fixture
def served_policy(settings, engine, engine_artifacts):
    """A project whose promoted policy is A, served by the session's engine (an Engine row, as the
    supervisor writes it)."""
    from annotate.models import Project, Prompt
    from registry.models import ModelVersion
    from tests.serving.conftest import register_engine

    settings.RLHF_SERVING_ENGINE = "vllm"
    settings.ARTIFACTS_ROOT = engine_artifacts
    project = Project.objects.create(name="Gen", slug=f"gen-{uuid.uuid4().hex[:6]}")
    policy = ModelVersion.objects.create(name="policy-a", kind="policy", path="policies/a", source="test",
                                         project=project, promoted=True)
    register_engine(policy, engine)
    prompts = [Prompt.objects.create(project=project, text=q) for q in QUESTIONS]
    return project, policy, prompts


def run_job(project, prompts, config):
    from training.models import TrainingJob
    from training.runner import job_run
    from training.services.jobs import training_job_launch

    job = training_job_launch(project=project, kind="generate", inputs={"prompt_ids": [p.pk for p in prompts]},
                              config=config)
    assert job_run(job_id=job.pk, hostname="inline@test") == "succeeded", list(job.log_lines.values_list("message"))
    return TrainingJob.objects.get(pk=job.pk)


def texts(prompts) -> dict[int, list[str]]:
    return {p.pk: sorted(r.text for r in p.tasks.get().responses.all()) for p in prompts}


def test_greedy_round_on_the_engine_equals_the_in_process_decode(served_policy, engine_artifacts):
    from rlhf.models import load_policy
    from rlhf.sampling import SamplingConfig, generate

    project, policy, prompts = served_policy
    job = run_job(project, prompts, {"strategy": "greedy", "max_new_tokens": 16, "responses_per_prompt": 2})
    assert any("sampling on the vllm engine" in m for m in job.log_lines.values_list("message", flat=True))
    model, tokenizer = load_policy(engine_artifacts / "policies" / "a")
    ours = generate(model, tokenizer, [p.as_messages() for p in prompts],
                    SamplingConfig(strategy="greedy", max_new_tokens=16), n=1)
    for prompt, (mine,) in zip(prompts, ours, strict=True):
        responses = list(prompt.tasks.get().responses.all())
        assert [r.text for r in responses] == [mine.text or "(empty response)"] * 2, prompt.text
        assert all(r.model_version_id == policy.pk for r in responses)
        assert responses[0].sampling == {"strategy": "greedy", "temperature": 1.0, "top_k": 50, "top_p": 0.95,
                                         "seed": None, "max_new_tokens": 16, "finish_reason": mine.finish_reason}


def test_seeded_round_repeats_and_the_engine_honours_each_strategy(served_policy):
    project, _, prompts = served_policy
    config = {"strategy": "top_p", "top_p": 0.9, "temperature": 1.0, "seed": 11, "max_new_tokens": 12,
              "responses_per_prompt": 3}
    run_job(project, prompts, config)
    first = texts(prompts)
    for p in prompts:
        p.tasks.all().delete()
    run_job(project, prompts, config)
    assert texts(prompts) == first
    # n samples of one prompt are drawn with different seeds: they are not all the same text.
    assert any(len(set(v)) > 1 for v in first.values())


def test_cancel_hangs_up_the_engine_requests_within_seconds(served_policy, engine):
    from enginectl.engine_process import requests_in_flight
    from rlhf.sampling import SamplingConfig
    from serving.engine_sampling import EngineCancelled, engine_generate
    from serving.engines import EngineRoute
    from serving.resolve import ServedModel

    _, policy, _ = served_policy
    served = ServedModel("x", policy.pk, policy.name, "", None)
    route = EngineRoute(engine.openai_url, engine.config.served_model_name, served)
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    config = SamplingConfig(strategy="multinomial", max_new_tokens=480)
    start = time.monotonic()
    with pytest.raises(EngineCancelled):
        # 16 prompts x 4 samples x 480 tokens: far longer than the 1.5 s before the cancel.
        engine_generate(route, [[5, 6, 7, 8]] * 16, config, 4, should_stop=stop.is_set)
    assert time.monotonic() - start < 4
    deadline = time.monotonic() + 10
    while (requests_in_flight(engine.base_url) or 0) > 0:
        assert time.monotonic() < deadline, "the engine still runs the cancelled requests"
        time.sleep(0.2)
