"""DPO on a tiny model, and the command line on JSONL files."""

from __future__ import annotations

import json

import pytest
from rlhf_testkit import keyword_pairs, save_tiny_base

from rlhf.cli import build_config, main, read_jsonl
from rlhf.dpo import DPOConfig, train_dpo
from rlhf.models import load_policy
from rlhf.sft import SFTConfig


def test_dpo_prefers_the_chosen_responses(tmp_path):
    base = save_tiny_base(tmp_path / "base")
    cfg = DPOConfig(learning_rate=2e-3, epochs=2, batch_size=16, beta=0.1, eval_fraction=0.2, precision="fp32",
                    device="cpu")
    seen = []
    result = train_dpo(cfg, keyword_pairs(120, 3), base, tmp_path / "dpo", on_step=seen.append)
    assert seen and {"reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward"} <= set(seen[0])
    assert result.metrics["eval_accuracy"] >= 0.8
    assert result.metrics["eval_margin"] > 0
    model, tok = load_policy(result.out_dir)
    assert tok.pad_token_id != tok.eos_token_id


def test_build_config_from_file_and_overrides(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"epochs": 3, "lora": {"r": 4}}))
    cfg = build_config(SFTConfig, str(path), ["learning_rate=0.5", "precision=fp32"])
    assert (cfg.epochs, cfg.learning_rate, cfg.precision, cfg.lora) == (3, 0.5, "fp32", {"r": 4})
    with pytest.raises(SystemExit, match="SFTConfig.nope: unknown field"):
        build_config(SFTConfig, None, ["nope=1"])
    with pytest.raises(SystemExit, match="SFTConfig.epochs: must be >= 1"):  # the job launcher's checks too
        build_config(SFTConfig, None, ["epochs=-3"])


def test_read_jsonl_reports_the_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{oops\n')
    with pytest.raises(SystemExit, match=r"x.jsonl:3"):
        read_jsonl(path)


def test_cli_sft_generate_tokenize(tmp_path, capsys):
    base = save_tiny_base(tmp_path / "base")
    data = tmp_path / "demos.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": "say yes", "response": "yes"}) for _ in range(8)))
    assert main(["sft", "--data", str(data), "--base", str(base), "--out", str(tmp_path / "sft"),
                 "--set", "precision=fp32", "--set", "batch_size=4", "--set", "eval_fraction=0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[0])["step"] == 1 and json.loads(lines[-1])["out_dir"] == str(tmp_path / "sft")
    assert main(["generate", "--model", str(tmp_path / "sft"), "--prompt", "hello", "--chat", "--n", "2",
                 "--max-new-tokens", "4", "--seed", "1"]) == 0
    gens = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(gens) == 2 and {"text", "token_ids", "finish_reason"} <= set(gens[0])
    assert main(["tokenize", "--model", str(base), "--text", "the cat"]) == 0
    pieces = json.loads(capsys.readouterr().out)
    assert "".join(p["piece"] for p in pieces) == "the cat"
    with pytest.raises(SystemExit, match="top_p"):
        main(["generate", "--model", str(base), "--prompt", "x", "--top-p", "2"])
