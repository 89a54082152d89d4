"""PPO rollouts sampled by a vLLM server instead of the in-process sampler.

The policy trains as a LoRA adapter; before each iteration's rollout the adapter is saved and
loaded into the engine under a new name (a reused name can be served from stale prefix-cache
blocks, vllm#42125), the previous one unloaded. The engine samples every response with its own
seed (one request per response, sent together so the engine batches them); the trainer then
recomputes the old log-probs on its own weights (the ratio and KL must come from the weights it
updates), and the engine's own log-probs of the sampled tokens are kept to report how far the two
disagree ("engine_logprob_gap": ~1e-5 in fp32, ~1e-2 in bf16; a gap that grows means the engine
is not sampling from the weights being trained).

The engine is a server this process starts (`rollout_engine_url` unset: vLLM from the engine
virtualenv on the starting policy, with runtime LoRA loading, stopped at the end), or one already
running (`rollout_engine_url`): started with `--enable-lora`, a `--max-lora-rank` at least the
adapter's, `--logprobs-mode processed_logprobs`, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and able to
read this run's output folder (the adapters are written beside it).
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from rlhf.sampling import SamplingConfig, TokenBatch, left_pad

ENGINE_TIMEOUT_S = 900.0  # a cold vLLM start on a busy CPU takes minutes
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM accepts for --max-lora-rank


def engine_options_error(options: dict) -> str | None:
    """Why `rollout_engine_options` cannot configure an engine (unknown keys), or None."""
    from enginectl.engine_process import EngineConfig

    allowed = {f.name for f in fields(EngineConfig)} - {"model", "served_model_name", "enable_lora", "max_lora_rank",
                                                        "python", "log_path"}
    unknown = sorted(set(options) - allowed)
    return f"unknown rollout_engine_options {unknown}; allowed: {sorted(allowed)}" if unknown else None


class EngineRollouts:
    """Samples rollouts of the adapter being trained on a vLLM server. `close()` stops a server it
    started and removes the adapters it wrote."""

    def __init__(self, base_dir: str | Path, work_parent: Path, *, url: str | None, lora_rank: int,
                 max_length: int, precision: str, options: dict | None = None, run: str | None = None,
                 is_main: bool = True):
        self.run = run or secrets.token_hex(4)
        self.is_main = is_main  # only the main rank writes and loads adapters; every rank samples
        work_parent.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=".rollout-adapters-", dir=work_parent))
        self.loaded: str | None = None
        self.process = None
        self.timings: dict[str, float] = {}
        if url is None:
            from enginectl.engine_process import EngineConfig, EngineProcess

            rank = next((r for r in LORA_RANKS if r >= lora_rank), lora_rank)
            opts = {"dtype": "bfloat16" if precision == "bf16" else "float32", "max_model_len": max_length,
                    **(options or {})}
            opts["extra_args"] = [*opts.get("extra_args", []), "--logprobs-mode", "processed_logprobs"]
            self.process = EngineProcess(EngineConfig(model=str(base_dir), served_model_name=f"ppo-base-{self.run}",
                                                      enable_lora=True, max_lora_rank=rank,
                                                      log_path=self.work / "vllm.log", **opts))
            try:
                self.ready_after_s = self.process.start_and_wait(ENGINE_TIMEOUT_S)
            except Exception:
                self.close()
                raise
            url = self.process.base_url
        self.url = url.rstrip("/").removesuffix("/v1")

    # ---- HTTP ----
    def _post(self, path: str, body: dict, timeout: float = 600.0) -> str:
        req = urllib.request.Request(f"{self.url}{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"rollout engine {self.url}{path} answered {exc.code}: "
                               f"{exc.read().decode(errors='replace')[:500]}") from exc
        except OSError as exc:
            raise RuntimeError(f"rollout engine {self.url} unreachable ({path}): {exc}") from exc

    # ---- weights ----
    def sync(self, peft_model: Any, iteration: int) -> None:
        """Save the adapter as it is now and make the engine sample from it (a new name each time)."""
        t0 = time.perf_counter()
        name = f"ppo-{self.run}-{iteration}"
        previous, self.loaded = self.loaded, name
        if not self.is_main:
            return
        path = self.work / name
        peft_model.save_pretrained(str(path))
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        if previous is not None:
            self._post("/v1/unload_lora_adapter", {"lora_name": previous})
            shutil.rmtree(self.work / previous, ignore_errors=True)
        self.timings["time_sync_s"] = time.perf_counter() - t0

    # ---- sampling ----
    def sample(self, prompt_ids: list[list[int]], sampling: SamplingConfig, *, seed: int | None, pad_id: int,
               eos_ids: list[int]) -> tuple[TokenBatch, torch.Tensor]:
        """One response per prompt row (rows may repeat a prompt): (the batch in the sampler's layout
        with zero log-probs, the engine's log-probs [B, T] of the sampled tokens)."""
        if self.loaded is None:
            raise RuntimeError("sync() the adapter before sampling")
        base_seed = seed if seed is not None else secrets.randbits(31)

        def one(i: int) -> dict:
            body = {"model": self.loaded, "prompt": prompt_ids[i], "max_tokens": sampling.max_new_tokens,
                    "temperature": sampling.temperature, "top_p": 1.0, "top_k": -1, "seed": (base_seed + i) % 2**31,
                    "stop_token_ids": list(eos_ids), "logprobs": 0, "return_token_ids": True,
                    "skip_special_tokens": False}
            return json.loads(self._post("/v1/completions", body))["choices"][0]

        with ThreadPoolExecutor(max_workers=min(32, len(prompt_ids))) as pool:
            choices = list(pool.map(one, range(len(prompt_ids))))
        rows, engine_lps, ended = [], [], []
        for c in choices:
            ids = list(c["token_ids"])
            lps = [0.0 if x is None else float(x) for x in (c.get("logprobs") or {}).get("token_logprobs", [])]
            stopped = bool(ids) and ids[-1] in eos_ids
            rows.append(ids)
            engine_lps.append(lps[:len(ids)] + [0.0] * (len(ids) - len(lps)))
            ended.append(stopped)
        width = max(1, max(len(r) for r in rows))
        response = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        engine = torch.zeros((len(rows), width))
        for i, (ids, lps) in enumerate(zip(rows, engine_lps, strict=True)):
            response[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, :len(ids)] = 1
            engine[i, :len(ids)] = torch.tensor(lps)
        p_ids, p_mask = left_pad(prompt_ids, pad_id)
        batch = TokenBatch(prompt_ids=p_ids, prompt_mask=p_mask, response_ids=response, response_mask=mask,
                           logprobs=torch.zeros((len(rows), width)), ended_with_eos=torch.tensor(ended))
        return batch, engine

    def close(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        shutil.rmtree(self.work, ignore_errors=True)
