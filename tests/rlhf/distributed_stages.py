"""Run by tests/rlhf/test_rlhf_distributed.py under `accelerate launch`: SFT, the reward model and
DPO one after another in the same processes (one launch instead of three, to keep the test short),
on the data and config the test gives in a JSON file. The stages run exactly as `python -m rlhf`
runs them; the test compares their outputs with the same stages run alone."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlhf.dpo import DPOConfig, train_dpo  # noqa: E402
from rlhf.reward import RewardConfig, train_reward_model  # noqa: E402
from rlhf.sft import SFTConfig, train_sft  # noqa: E402

STAGES = {"sft": (SFTConfig, train_sft), "reward": (RewardConfig, train_reward_model), "dpo": (DPOConfig, train_dpo)}


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    for name, (cls, train) in STAGES.items():
        train(cls(**spec["config"]), spec["data"][name], spec["base"], Path(spec["out"]) / name)


if __name__ == "__main__":
    main(sys.argv[1])
