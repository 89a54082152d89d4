"""The training stages by name, each declared once: its config class and its train function. The CLI
(`python -m rlhf <stage>`) and the service's job kinds (training/kinds.py) both read this table, so
a stage's config is built and checked the same way wherever it is run."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    config: str  # "module:Class" of the config dataclass
    train: str  # "module:function": train(config, data, start_dir, out_dir, on_step=, should_stop=, ...)
    data: str  # what its JSONL rows are: demonstrations | pairs | prompts

    def config_class(self) -> type:
        return _load(self.config)

    def train_function(self) -> Any:
        return _load(self.train)


def _load(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


STAGES: dict[str, Stage] = {
    "sft": Stage("rlhf.sft:SFTConfig", "rlhf.sft:train_sft", "demonstrations"),
    "reward": Stage("rlhf.reward:RewardConfig", "rlhf.reward:train_reward_model", "pairs"),
    "ppo": Stage("rlhf.ppo:PPOConfig", "rlhf.ppo:train_ppo", "prompts"),
    "dpo": Stage("rlhf.dpo:DPOConfig", "rlhf.dpo:train_dpo", "pairs"),
}
