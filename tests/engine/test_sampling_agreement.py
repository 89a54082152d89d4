"""One meaning per sampling setting: our top-k / top-p filters (rlhf.sampling) keep the same token
sets as vLLM's own implementation (vllm.v1.sample.ops.topk_topp_sampler, the PyTorch path its CPU
sampler runs) on the same logits, temperature applied first on both sides as both samplers do.

vLLM runs in its own virtualenv, so its filter is called in a subprocess there on logits sent as
JSON; nothing is started but that interpreter. Greedy parity on a real model is in
test_vllm_engine.py (test_greedy_equals_our_greedy_decode)."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest
import torch

from enginectl.engine_process import engine_python
from rlhf.sampling import apply_temperature, top_k_filter, top_p_filter
from tests.engine.fixtures import require_engine_venv

pytestmark = [pytest.mark.slow, pytest.mark.engine]

VLLM_FILTER = textwrap.dedent('''
    import json, sys, torch
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch
    cases = json.load(sys.stdin)
    out = []
    for case in cases:
        logits = torch.tensor(case["logits"], dtype=torch.float32) / case["temperature"]
        b = logits.shape[0]
        k = torch.full((b,), case["k"], dtype=torch.long) if case["k"] else None
        p = torch.full((b,), case["p"], dtype=torch.float32) if case["p"] is not None else None
        kept = apply_top_k_top_p_pytorch(logits.clone(), k, p, allow_cpu_sync=True) > -float("inf")
        out.append(kept.tolist())
    json.dump(out, sys.stdout)
''')

VOCAB = 4096


def logit_rows() -> torch.Tensor:
    """Rows shaped like a language model's: peaked, flat, heavy-tailed, and a near-tie at the top."""
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(VOCAB, generator=g) * 4, torch.randn(VOCAB, generator=g) * 0.5,
            torch.distributions.Gumbel(0.0, 2.0).sample((VOCAB,)), torch.randn(VOCAB, generator=g) * 8]
    rows[3][:2] = rows[3].max() + torch.tensor([1.0, 1.0 - 1e-3])  # two tokens almost tied first
    return torch.stack(rows)


CASES = [{"k": k, "p": None, "temperature": t} for k in (1, 5, 50, 1000) for t in (0.7, 1.0)] + \
        [{"k": 0, "p": p, "temperature": t} for p in (0.1, 0.5, 0.9, 0.95, 0.999) for t in (0.7, 1.0, 1.3)]


def vllm_kept(logits: torch.Tensor) -> list[torch.Tensor]:
    cases = [{**c, "logits": logits.tolist()} for c in CASES]
    done = subprocess.run([str(engine_python()), "-c", VLLM_FILTER], input=json.dumps(cases), capture_output=True,
                          text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                                                       "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.tensor(kept) for kept in json.loads(done.stdout)]


def ours_kept(logits: torch.Tensor, case: dict) -> torch.Tensor:
    scaled = apply_temperature(logits.float(), case["temperature"])
    filtered = top_k_filter(scaled, case["k"]) if case["k"] else top_p_filter(scaled, case["p"])
    return filtered > -float("inf")


def test_top_k_and_top_p_keep_the_same_tokens_as_vllm():
    require_engine_venv()
    logits = logit_rows()
    theirs = vllm_kept(logits)
    differences = []
    for case, kept in zip(CASES, theirs, strict=True):
        mine = ours_kept(logits, case)
        for row in range(logits.shape[0]):
            if not torch.equal(mine[row], kept[row]):
                extra = (mine[row] & ~kept[row]).sum().item()
                missing = (kept[row] & ~mine[row]).sum().item()
                differences.append(f"{case | {'row': row}}: ours keeps {extra} more, {missing} fewer")
    assert differences == [], "\n".join(differences)
    # The cases mean something: top-p 0.9 keeps more than one token and fewer than all.
    sizes = [int(k[0].sum()) for c, k in zip(CASES, theirs, strict=True) if c["p"] == 0.9]
    assert all(1 < s < VOCAB for s in sizes)
