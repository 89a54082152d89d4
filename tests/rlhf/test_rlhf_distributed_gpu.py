"""The sharded engines on GPUs (skipped without CUDA): SFT, the reward model and DPO under FSDP2 and
DeepSpeed ZeRO-3 through the shipped accelerate configs, on every GPU of the machine, give what one
process gives within bf16-free float noise, and save one plain HF checkpoint gathered on rank 0."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from rlhf_testkit import REPO, save_tiny_base

from rlhf.checkpoints import state_dir
from rlhf.launch import launch_command
from tests.rlhf.distributed_stages import STAGES
from tests.rlhf.test_rlhf_distributed import CFG, _data, _env, _weights

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.mark.parametrize("engine", ["fsdp", "zero3"])
def test_sharded_engines_train_every_supervised_stage(engine, tmp_path):
    if engine == "zero3":
        pytest.importorskip("deepspeed")
    processes = max(1, torch.cuda.device_count())
    base = save_tiny_base(tmp_path / "base")
    data = _data()
    cfg = {**CFG, "device": None}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"config": cfg, "data": data, "base": str(base), "out": str(tmp_path / engine)}))
    launched = subprocess.run(launch_command([str(REPO / "tests/rlhf/distributed_stages.py"), str(spec)],
                                             processes=processes, config=engine, module=None),
                              cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-4000:]
    for stage, (cls, train) in STAGES.items():
        one = train(cls(**cfg), data[stage], base, tmp_path / "one" / stage)
        out = tmp_path / engine / stage
        summary = json.loads((out / "data_summary.json").read_text())
        assert summary["processes"] == processes and summary["engine"] == ("fsdp" if engine == "fsdp" else "deepspeed")
        assert not state_dir(out).exists()
        metrics = json.loads((out / "metrics.json").read_text())
        for key in ("eval_loss", "eval_accuracy"):
            if key in one.metrics:
                assert metrics[key] == pytest.approx(one.metrics[key], rel=2e-2, abs=2e-2), (stage, key)
        a, b = _weights(stage, Path(one.out_dir)), _weights(stage, out)
        assert a.keys() == b.keys()
        for name, tensor in a.items():
            assert torch.allclose(tensor.float(), b[name].float(), atol=5e-3), (stage, name)
