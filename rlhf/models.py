"""Models: load a policy or reward model from a Hugging Face directory, the value head, and the
forward passes that turn a batch into per-token log-probs, values and reward scores."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf.sampling import positions_from_mask
from rlhf.tokenization import ensure_pad_token

PRECISIONS = ("fp32", "bf16", "fp16")
REWARD_STATS_FILE = "reward_stats.json"


def resolve_device(device: str | None = None) -> torch.device:
    """An explicit device, else the first GPU when there is one, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for forward passes; weights and optimizer state stay fp32.

    bf16 autocast measured ~1.6x faster than fp32 for training SmolLM2-135M on this project's
    AVX512-BF16 CPU, and it is the usual choice on GPUs, hence the stages' default.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    ensure_pad_token(tokenizer)
    return tokenizer


def _is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def load_policy(path: str | Path, *, device: str | None = None, dtype: torch.dtype | None = None,
                eval_mode: bool = True) -> tuple[Any, Any]:
    """(causal LM, tokenizer) from a HF directory, a LoRA adapter directory (merged on load) or a
    hub id. PAD is made distinct from EOS on both."""
    from transformers import AutoModelForCausalLM

    path_obj = Path(path)
    if path_obj.is_dir() and _is_adapter_dir(path_obj):
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(path_obj), dtype=dtype).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    tokenizer = load_tokenizer(path)
    ensure_pad_token(tokenizer, model)
    model.to(resolve_device(device))
    model.train(not eval_mode)
    return model, tokenizer


@dataclass
class RewardModel:
    model: Any  # AutoModelForSequenceClassification with num_labels=1
    tokenizer: Any
    mean: float = 0.0  # score mean on the training pairs, for normalisation in PPO
    std: float = 1.0  # score std on the training pairs


def init_score_head(model: Any) -> None:
    """Small head, as the checklist asks: normal(0, 1/sqrt(hidden+1)), bias 0."""
    head = model.score
    nn.init.normal_(head.weight, std=1.0 / math.sqrt(head.in_features + 1))
    if head.bias is not None:
        nn.init.zeros_(head.bias)


def load_reward_model(path: str | Path, *, device: str | None = None, dtype: torch.dtype | None = None,
                      eval_mode: bool = True) -> RewardModel:
    """A reward model from a directory we saved, or a fresh scalar head on any causal LM directory
    (then the head is newly initialised and the stats are 0/1)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(str(path))
    fresh = not any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=dtype)
    if fresh:
        init_score_head(model)
    tokenizer = load_tokenizer(path)
    ensure_pad_token(tokenizer, model)
    stats_file = Path(path) / REWARD_STATS_FILE
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    model.to(resolve_device(device))
    model.train(not eval_mode)
    return RewardModel(model, tokenizer, float(stats.get("mean", 0.0)), float(stats.get("std", 1.0)))


def _backbone_and_head(model: Any) -> tuple[Any, Any]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wrapper
    return getattr(base, base.base_model_prefix), base.score


def token_scores(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The scalar head at every position. ids, mask: [B, L] -> [B, L].

    We run backbone + head ourselves instead of the classifier's forward, which pools at the last
    token that differs from PAD: right for scoring only when PAD != EOS, and useless for values.
    """
    backbone, head = _backbone_and_head(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=positions_from_mask(attention_mask)).last_hidden_state  # [B, L, H]
    return head(hidden).squeeze(-1).float()


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each right-padded row. mask: [B, L] -> [B]."""
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
    return (positions * attention_mask).argmax(-1)


def sequence_scores(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Reward of each right-padded prompt+response: the head at its last real token. -> [B]."""
    scores = token_scores(model, input_ids, attention_mask)  # [B, L]
    return scores.gather(-1, last_token_index(attention_mask)[:, None]).squeeze(-1)


class PolicyWithValue(nn.Module):
    """A causal LM plus a scalar value head on its last hidden state: one forward pass gives both
    the policy's logits and the critic's values, half the compute of a separate value model."""

    def __init__(self, policy: Any):
        super().__init__()
        self.policy = policy
        hidden = policy.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1)
        # Zero init: values start at 0, so early advantages are just the (whitened) returns.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_len: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """[prompt | response] ids, mask: [B, L] -> (logits [B, T, V], values [B, T]) at the T
        positions that predict the response tokens; the lm head skips the prompt positions."""
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=positions_from_mask(attention_mask), output_hidden_states=True,
                          logits_to_keep=response_len + 1)
        hidden = out.hidden_states[-1][:, -(response_len + 1):-1]  # [B, T, H], after the final norm
        return out.logits[:, :-1], self.value_head(hidden).squeeze(-1).float()


def response_logprobs(logits: torch.Tensor, response_ids: torch.Tensor, temperature: float = 1.0
                      ) -> torch.Tensor:
    """Log-prob of each response token. logits: [B, T, V] at the positions that predict the
    response tokens [B, T] -> [B, T]. Divided by the sampling temperature, as the sampler was."""
    logp = (logits.float() / temperature).log_softmax(-1)
    return logp.gather(-1, response_ids[..., None]).squeeze(-1)


def policy_logits_for_response(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                               response_len: int) -> torch.Tensor:
    """Logits predicting the last `response_len` tokens of [prompt | response] rows: [B, T, V]."""
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=positions_from_mask(attention_mask), logits_to_keep=response_len + 1)
    return out.logits[:, :-1]
