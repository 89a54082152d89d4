"""Does the loop learn what annotators meant? One round through the real service, measured
against a known preference rule (bench/preference_rules.py).

The service runs in this process on a scratch data folder (SQLite, the embedded settings): the
bundled SmolLM2-135M-Instruct is imported and promoted through the API, training prompts are
imported, a round's generate job samples the candidates, simulated annotators (careful ones who
follow the rule with label noise, and one careless one) lease and rank every task through the same
REST endpoints the ranking page calls (Django's test client), then a reward-model job, a PPO job
and a DPO job run with the DEFAULT configs (or --config overrides) through the service's own job
runner (training/runner.py), exactly as a worker runs them.

Measured on held-out prompts the service never saw: the reward model's accuracy against the rule
(pairs of base-policy samples the rule orders), and for each new policy versus the base: the share
of paired samples (same prompt, same seed) the rule prefers, the rule's own mean score before and
after, KL(new || base) and response length. Also the RM job's own held-out accuracy (against the
noisy labels, split by prompt) and the wall time of every stage.

    .venv/bin/python bench/learning.py --rule list
    .venv/bin/python bench/learning.py --rule numbers --noise 0.2 --prompts 48 --responses 4 --stages rm,ppo
    .venv/bin/python bench/learning.py --rule calm --config 'ppo={"iterations": 30}' --json /tmp/calm.json
    .venv/bin/python bench/learning.py --list-rules
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.preference_rules import RULES, Rule, annotators, preference, prompt_set  # noqa: E402

ADMIN_PASSWORD = "learning-bench-admin"
# "ppo-rule": a PPO job rewarded by the rule itself (a verifiable scorer, as a job config can name
# one), not by the reward model: how far PPO's defaults move the policy when the reward is right,
# so a small move can be put down to the reward model or to the RL stage.
POLICY_STAGES = ("ppo", "dpo", "ppo-rule")
RULE_SCORER = "learning-bench-rule"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rule", choices=sorted(RULES), help="the preference the simulated annotators follow")
    ap.add_argument("--list-rules", action="store_true", help="print the rules and exit")
    ap.add_argument("--noise", type=float, default=0.2, help="share of tasks a careful annotator ranks at random")
    ap.add_argument("--annotators", type=int, default=3, help="careful annotators")
    ap.add_argument("--careless", type=int, default=1, help="annotators who rank every task at random")
    ap.add_argument("--prompts", type=int, default=48, help="training prompts (one task each)")
    ap.add_argument("--heldout", type=int, default=16, help="held-out prompts for the measurements")
    ap.add_argument("--responses", type=int, default=4, help="responses per task")
    ap.add_argument("--k", type=int, default=1, help="rankings per task")
    ap.add_argument("--eval-samples", type=int, default=2, help="samples per held-out prompt and policy")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="generation length (default: the generate job's default)")
    ap.add_argument("--stages", default="rm,ppo,dpo", help="comma list of rm, ppo, dpo (rm is needed by ppo), "
                    "ppo-rule (PPO rewarded by the rule itself, no reward model)")
    ap.add_argument("--config", action="append", default=[], metavar="KIND=JSON",
                    help="override a job config, e.g. 'ppo={\"iterations\": 30}' (kinds: generate, rm, ppo, dpo)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=str(REPO / "data/artifacts/base/SmolLM2-135M-Instruct"))
    ap.add_argument("--candidates", help="cache file of the generated candidates and the base policy's held-out "
                    "samples (JSON): written when missing, else imported through the API instead of a generate job "
                    "(the candidates do not depend on the rule, so runs on several rules can share them)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch data folder")
    args = ap.parse_args()
    if args.list_rules:
        for rule in RULES.values():
            print(f"{rule.name:<16}{rule.kind:<9}{rule.help}")
        raise SystemExit(0)
    if not args.rule:
        ap.error("--rule is required")
    if not (Path(args.model) / "config.json").is_file():
        raise SystemExit(f"{args.model} is not a model directory; run `make run` once (it converts the bundled model)")
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if "ppo" in args.stages and "rm" not in args.stages:
        ap.error("ppo needs the rm stage")
    overrides = {}
    for item in args.config:
        kind, _, raw = item.partition("=")
        overrides[{"rm": "reward_model"}.get(kind, kind)] = json.loads(raw)
    args.overrides = overrides
    return args


def start_service(scratch: Path) -> None:
    """The embedded default, in this process, on a scratch folder."""
    os.environ.update({"RLHF_DATA_DIR": str(scratch), "DATABASE_URL": f"sqlite:///{scratch}/db.sqlite3",
                       "CELERY_BROKER_URL": "filesystem://", "RLHF_ADMIN_PASSWORD": ADMIN_PASSWORD,
                       "DJANGO_ALLOWED_HOSTS": "testserver,localhost", "RLHF_LOG_LEVEL": "WARNING",
                       "DJANGO_SETTINGS_MODULE": "config.settings", "TRANSFORMERS_VERBOSITY": "error",
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("bootstrap", "--skip-model", stdout=open(os.devnull, "w"))


class Api:
    """JSON calls through Django's test client: the same URL routing, views, auth and error shape
    as over HTTP, without a socket."""

    def __init__(self, token: str | None = None):
        from django.test import Client

        self.client = Client(HTTP_AUTHORIZATION=f"Token {token}") if token else Client()

    def call(self, method: str, path: str, body=None, ctype="application/json", expect=(200, 201, 202, 204)):
        data = body if isinstance(body, bytes | str) or body is None else json.dumps(body)
        response = getattr(self.client, method.lower())(path, data=data, content_type=ctype)
        payload = response.json() if response.content else None
        if response.status_code not in expect:
            raise SystemExit(f"{method} {path} -> {response.status_code}: {payload}")
        return response.status_code, payload

    @staticmethod
    def sign_in(username: str, password: str) -> Api:
        _, body = Api().call("POST", "/api/auth/token", {"username": username, "password": password})
        return Api(body["token"])


def run_job(admin: Api, project_id: int, kind: str, config: dict, inputs: dict | None = None) -> dict:
    """Launch through the API, run it with the worker's runner in this process, return the job."""
    _, job = admin.call("POST", f"/api/projects/{project_id}/jobs", {"kind": kind, "config": config,
                                                                    "inputs": inputs or {}})
    return finish_job(admin, job["id"])


def finish_job(admin: Api, job_id: int) -> dict:
    from training.runner import job_run

    started = time.monotonic()
    state = job_run(job_id=job_id, hostname="learning-bench")
    _, job = admin.call("GET", f"/api/jobs/{job_id}")
    if state != "succeeded":
        raise SystemExit(f"job {job_id} ({job['kind']}) {state}: {job.get('error')}")
    job["wall_s"] = time.monotonic() - started
    return job


def cache_key(args, gen_config: dict) -> dict:
    """What the candidates depend on (the training prompts are the first --prompts of the set)."""
    return {"prompts": args.prompts, "responses": args.responses, "seed": args.seed, "generate": gen_config,
            "model": args.model}


def heldout_key(args) -> dict:
    return {"heldout": args.heldout, "eval_samples": args.eval_samples}


def load_cache(args, gen_config: dict) -> dict:
    if not args.candidates or not Path(args.candidates).is_file():
        return {"key": cache_key(args, gen_config)}
    cache = json.loads(Path(args.candidates).read_text())
    if cache["key"] != cache_key(args, gen_config):
        raise SystemExit(f"{args.candidates} was made with other settings: {cache['key']}")
    return cache


def save_cache(args, cache: dict) -> None:
    if args.candidates:
        Path(args.candidates).write_text(json.dumps(cache))


def candidates_of(project_id: int) -> list[dict]:
    """The generated tasks as import lines (prompt + responses with their lineage)."""
    from annotate.models import RankingTask

    rows = []
    for task in RankingTask.objects.filter(project_id=project_id).select_related("prompt").order_by("id"):
        rows.append({"prompt": task.prompt.text, "responses": [
            {"text": r.text, "model_name": r.model_name, "sampling": r.sampling}
            for r in (tr.response for tr in task.task_responses.select_related("response").order_by("position"))]})
    return rows


def annotate(project_id: int, rule: Rule, args) -> dict:
    """Every simulated annotator asks for tasks in turn until none is left for anyone."""
    team = annotators(rule, careful=args.annotators, noise=args.noise, careless=args.careless, seed=args.seed)
    admin = Api.sign_in("admin", ADMIN_PASSWORD)
    clients = []
    for person in team:
        admin.call("POST", "/api/users", {"username": person.username, "password": person.username + "-pass",
                                          "role": "annotator"})
        clients.append((person, Api.sign_in(person.username, person.username + "-pass")))
    active, pairs = list(clients), 0
    while active:
        for person, api in list(active):
            status, body = api.call("POST", f"/api/projects/{project_id}/tasks/next")
            if status == 204:
                active.remove((person, api))
                continue
            ranking = person.rank(body["task"]["responses"])
            api.call("POST", f"/api/tasks/{body['task']['id']}/rankings",
                     {"lease": body["lease"]["id"], "ranking": ranking})
            sizes = [len(g) for g in ranking]
            pairs += sum(a * b for i, a in enumerate(sizes) for b in sizes[i + 1:])
    return {"rankings": sum(p.ranked for p, _ in clients), "random_rankings": sum(p.random_ranked for p, _ in clients),
            "pairs": pairs}


def register_rule_scorer(rule: Rule) -> str:
    """The rule as a verifiable scorer of this process (the worker runs in it too): its name."""
    from rlhf.scorers import register_scorer

    register_scorer(RULE_SCORER, lambda: lambda prompt, response, reference: rule.score(response))
    return RULE_SCORER


def evaluate(artifacts: Path, base_path: str, policies: dict[str, str], reward_path: str | None,
             prompts: list[str], rule: Rule, args, max_new_tokens: int, cache: dict) -> dict:
    """The measurements on held-out prompts (see the module docstring). The base policy's samples
    come from the cache when it has them (they are the same for every rule), else go into it."""
    import torch

    from rlhf.evaluation import sequence_logprob
    from rlhf.models import load_policy, load_reward_model
    from rlhf.sampling import Generation, SamplingConfig, generate

    sampling = SamplingConfig(strategy="multinomial", temperature=1.0, max_new_tokens=max_new_tokens,
                              seed=args.seed + 1000)
    flat = [p for p in prompts for _ in range(args.eval_samples)]

    def sample(path: str):
        model, tok = load_policy(artifacts / path)
        return model, tok, [g for gens in generate(model, tok, prompts, sampling, n=args.eval_samples, wrap_plain=True)
                            for g in gens]

    if cache.get("heldout_base", {}).get("key") == heldout_key(args):
        base_model, base_tok = load_policy(artifacts / base_path)
        base = [Generation(**g) for g in cache["heldout_base"]["samples"]]
    else:
        base_model, base_tok, base = sample(base_path)
        cache["heldout_base"] = {"key": heldout_key(args), "samples": [dataclasses.asdict(g) for g in base]}
    texts = [g.text for g in base]  # with every policy's samples after them, in the same prompt order
    out: dict = {"base": {"rule_mean": _mean([rule.score(g.text) for g in base]),
                          "length": _mean([g.completion_tokens for g in base])}}
    for name, path in policies.items():
        model, tok, new = sample(path)
        kls = [sequence_logprob(model, tok, p, g.token_ids, 1.0) - sequence_logprob(base_model, base_tok, p, g.token_ids, 1.0)
               for p, g in zip(flat, new, strict=True)]
        texts += [g.text for g in new]
        out[name] = {"rule_mean": _mean([rule.score(g.text) for g in new]),
                     "rule_prefers_new": _mean([preference(rule, a.text, b.text) for a, b in zip(new, base, strict=True)]),
                     "kl": _mean(kls), "length": _mean([g.completion_tokens for g in new]),
                     "example": new[0].text[:200]}
        del model
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    out["base"]["example"] = base[0].text[:200]
    if reward_path:
        out.update(rm_against_rule(load_reward_model(artifacts / reward_path), rule,
                                   flat * (1 + len(policies)), texts))
    return out


def rm_against_rule(reward, rule: Rule, prompts: list[str], texts: list[str]) -> dict:
    """Every pair of held-out samples of one prompt (from the base and the new policies) that the
    rule orders: the share the reward model orders the same way."""
    from rlhf.models import score_texts

    scores = score_texts(reward, prompts, texts, max_length=512).tolist()
    agree, n = 0.0, 0
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if prompts[i] != prompts[j] or (want := preference(rule, texts[i], texts[j])) == 0.5:
                continue
            got = 1.0 if scores[i] > scores[j] else 0.0 if scores[i] < scores[j] else 0.5
            agree, n = agree + (1.0 - abs(want - got)), n + 1
    return {"rm_rule_accuracy": agree / n if n else None, "rm_rule_pairs": n}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def main() -> None:
    args = parse_args()
    rule = RULES[args.rule]
    scratch = Path(tempfile.mkdtemp(prefix="rlhf-learning-"))
    times: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        start_service(scratch)
        from django.conf import settings

        admin = Api.sign_in("admin", ADMIN_PASSWORD)
        all_prompts = prompt_set(args.prompts + args.heldout, args.seed)
        train_prompts, heldout = all_prompts[:args.prompts], all_prompts[args.prompts:]
        _, project = admin.call("POST", "/api/projects", {
            "name": f"Learning bench: {rule.name}", "slug": "learning", "responses_per_task": args.responses,
            "rankings_per_task": args.k, "allow_ties": True, "guidelines": f"Prefer {rule.help}."})
        pid = project["id"]
        _, base = admin.call("POST", "/api/models/import", {"source": args.model, "name": "SmolLM2-135M-Instruct"})
        admin.call("POST", f"/api/models/{base['id']}/promote", {"project": pid})
        times["setup"] = time.monotonic() - t0

        gen_config = {"seed": args.seed, **args.overrides.get("generate", {})}
        if args.max_new_tokens:
            gen_config["max_new_tokens"] = args.max_new_tokens
        cache = load_cache(args, gen_config)
        gen_cached = bool(cache.get("candidates"))
        if cache.get("candidates"):
            lines = "\n".join(json.dumps(row) for row in cache["candidates"])
            admin.call("POST", f"/api/projects/{pid}/import", lines, "application/x-ndjson")
            times["generate"] = cache["generate_s"]  # as measured when the cache was made
            max_new_tokens = cache["max_new_tokens"]
        else:
            lines = "\n".join(json.dumps({"prompt": p}) for p in train_prompts)
            admin.call("POST", f"/api/projects/{pid}/import", lines, "application/x-ndjson")
            _, started = admin.call("POST", f"/api/projects/{pid}/rounds", {
                "prompts": "unused", "responses_per_prompt": args.responses, "sampling": gen_config})
            gen_job = finish_job(admin, started["job"]["id"])
            times["generate"] = gen_job["wall_s"]
            max_new_tokens = gen_job["config"]["max_new_tokens"]
            cache.update(candidates=candidates_of(pid), generate_s=gen_job["wall_s"], max_new_tokens=max_new_tokens)
            save_cache(args, cache)

        t = time.monotonic()
        labels = annotate(pid, rule, args)
        times["annotate"] = time.monotonic() - t

        jobs: dict[str, dict] = {}
        if "rm" in args.stages:
            jobs["rm"] = run_job(admin, pid, "reward_model", args.overrides.get("reward_model", {}))
            times["reward_model"] = jobs["rm"]["wall_s"]
        reward_id = jobs["rm"]["outputs"]["model_version"] if "rm" in jobs else None
        for stage in POLICY_STAGES:
            if stage in args.stages:
                kind = "ppo" if stage == "ppo-rule" else stage
                config, inputs = dict(args.overrides.get(kind, {})), {}
                if stage == "ppo":
                    inputs = {"reward_model": reward_id}
                elif stage == "ppo-rule":
                    config["scorer"] = register_rule_scorer(rule)
                jobs[stage] = run_job(admin, pid, kind, config, inputs)
                times[stage] = jobs[stage]["wall_s"]

        t = time.monotonic()
        _, models = admin.call("GET", "/api/models?archived=include")
        path_of = {m["id"]: m["path"] for m in models}
        policies = {k: path_of[j["outputs"]["model_version"]] for k, j in jobs.items() if k in POLICY_STAGES}
        measured = evaluate(settings.ARTIFACTS_ROOT, path_of[base["id"]], policies,
                            path_of[reward_id] if reward_id else None, heldout, rule, args, max_new_tokens, cache)
        save_cache(args, cache)
        times["evaluate (bench)"] = time.monotonic() - t
        times["round (generate..policy)"] = sum(times.get(k, 0.0) for k in
                                                ("generate", "annotate", "reward_model", "ppo"))
        result = {"rule": rule.name, "kind": rule.kind, "noise": args.noise, "prompts": args.prompts,
                  "heldout": args.heldout, "responses": args.responses, "k": args.k, "labels": labels,
                  "rm_job": {k: v for k, v in (jobs.get("rm", {}).get("outputs", {}).get("metrics") or {}).items()
                             if k.startswith(("eval_", "train_accuracy", "score_"))},
                  "jobs_config": {k: j["config"] for k, j in jobs.items()}, "measured": measured,
                  "seconds": times, "generate_cached": bool(args.candidates) and "generate_s" in cache and gen_cached,
                  "threads": os.environ.get("OMP_NUM_THREADS"), "load": os.getloadavg()}
        report(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    finally:
        if args.keep:
            print(f"scratch data folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def report(r: dict) -> None:
    m = r["measured"]
    print(f"\nrule {r['rule']} ({r['kind']}): {RULES[r['rule']].help}")
    print(f"{r['prompts']} prompts x {r['responses']} responses, k={r['k']}, noise {r['noise']:.0%}, "
          f"{r['labels']['rankings']} rankings ({r['labels']['random_rankings']} random), {r['labels']['pairs']} pairs; "
          f"held out {r['heldout']} prompts")
    rm = r["rm_job"]
    if "rm_rule_accuracy" in m:
        acc = m["rm_rule_accuracy"]
        print(f"reward model: accuracy vs the rule on held-out prompts {acc if acc is None else f'{acc:.3f}'} "
              f"({m['rm_rule_pairs']} pairs); job's held-out accuracy vs labels "
              f"{_fmt(rm.get('eval_accuracy'))}, consensus {_fmt(rm.get('eval_consensus_accuracy'))}")
    print(f"{'policy':<8}{'rule prefers new':>18}{'rule mean':>11}{'KL':>8}{'length':>8}")
    print(f"{'base':<8}{'':>18}{m['base']['rule_mean']:>11.3f}{'':>8}{m['base']['length']:>8.1f}")
    for name in POLICY_STAGES:
        if name in m:
            p = m[name]
            print(f"{name:<8}{p['rule_prefers_new']:>18.3f}{p['rule_mean']:>11.3f}{p['kl']:>8.3f}{p['length']:>8.1f}")
    print(("generate from the cache (its time as measured then); " if r["generate_cached"] else "")
          + "seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items())
          + f"  (OMP_NUM_THREADS={r['threads']}, load {r['load'][0]:.1f})")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
