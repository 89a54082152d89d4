"""What each job kind freezes at launch (in the web process): the model versions it starts from and
the exact ids of the rows it will read, so a rerun or a resume sees the same data; and, for the
training kinds, how a worker reads those rows back. A snapshot takes the project, the validated
config and the requested inputs and returns the job's inputs; a reader takes the job."""

from __future__ import annotations

from annotate.models import Project, Prompt
from annotate.selectors.training import demonstration_ids, demonstrations_rows, pair_ids, training_pairs
from config.errors import ApplicationError
from registry.models import ModelVersion
from registry.services import default_model_version


def model_input(*, project: Project, kind: str, given: int | None, label: str) -> ModelVersion | None:
    """The model version inputs.<label> names (checked: it exists and is of the right kind), or the
    project's default: its promoted policy (else the base model), its newest reward model."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int):
            raise ApplicationError(f"inputs.{label} must be a model version id", code="invalid_inputs",
                                   details={label: "not an integer"})
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


def _policy(project: Project, inputs: dict) -> dict:
    policy = model_input(project=project, kind="policy", given=inputs.get("policy"), label="policy")
    if policy is None:
        raise ApplicationError("no policy to start from: promote one or import a base model", code="no_policy")
    return {"policy": policy.pk}


def prompt_ids_check(*, project: Project, given) -> list[int]:
    """inputs.prompt_ids: a non-empty list of ids of this project's prompts."""
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


def demonstrations(*, project: Project, config: dict, inputs: dict) -> dict:
    policy = _policy(project, inputs)
    ids = demonstration_ids(project=project)
    if not ids:
        raise ApplicationError("the project has no demonstrations to fine-tune on", code="no_data")
    return {**policy, "demonstration_ids": ids}


def pairs(*, project: Project, config: dict, inputs: dict) -> dict:
    policy = _policy(project, inputs)
    ids = pair_ids(project=project)
    if not ids:
        raise ApplicationError("the project has no ranked pairs to train on", code="no_data")
    return {**policy, "pair_ids": ids}


def ppo_prompts(*, project: Project, config: dict, inputs: dict) -> dict:
    out = _policy(project, inputs)
    reward = model_input(project=project, kind="reward", given=inputs.get("reward_model"), label="reward_model")
    if reward is None and not config.get("scorer"):
        raise ApplicationError("PPO needs a reward model (train one first) or a verifiable scorer (config.scorer)",
                               code="no_reward_model")
    out["reward_model"] = reward.pk if reward is not None and not config.get("scorer") else None
    ids = list(Prompt.objects.filter(project=project).order_by("id").values_list("id", flat=True))
    if not ids:
        raise ApplicationError("the project has no prompts for PPO rollouts", code="no_data")
    return {**out, "prompt_ids": ids}


def _given_prompts(project: Project, inputs: dict, kind: str) -> list[int]:
    if inputs.get("prompt_ids") is None:
        raise ApplicationError(f"a {kind} job needs inputs.prompt_ids", code="invalid_inputs",
                               details={"prompt_ids": "missing"})
    return prompt_ids_check(project=project, given=inputs["prompt_ids"])


def given_prompts(*, project: Project, config: dict, inputs: dict) -> dict:
    policy = _policy(project, inputs)
    return {**policy, "prompt_ids": _given_prompts(project, inputs, "generate")}


def evaluation(*, project: Project, config: dict, inputs: dict) -> dict:
    if inputs.get("candidate") is None:
        raise ApplicationError("an evaluate job needs inputs.candidate (a policy version id)", code="invalid_inputs",
                               details={"candidate": "missing"})
    candidate = model_input(project=project, kind="policy", given=inputs["candidate"], label="candidate")
    reward = model_input(project=project, kind="reward", given=inputs.get("reward_model"), label="reward_model")
    return {**_policy(project, inputs), "candidate": candidate.pk, "reward_model": reward.pk if reward else None,
            "prompt_ids": _given_prompts(project, inputs, "evaluate")}


def read_demonstrations(job) -> list[dict]:
    return list(demonstrations_rows(project=job.project, ids=job.inputs["demonstration_ids"]))


def read_pairs(job) -> list[dict]:
    return list(training_pairs(project=job.project, ids=job.inputs["pair_ids"]))


def read_prompts(job) -> list[dict]:
    ids = job.inputs["prompt_ids"]
    by_id = {p.pk: p for p in Prompt.objects.filter(pk__in=ids)}
    return [{"prompt": by_id[i].messages or by_id[i].text, "reference": by_id[i].reference, "prompt_id": i}
            for i in ids if i in by_id]
