"""Models: load a policy or reward model from a Hugging Face directory, the value head, and the
forward passes that turn a batch into per-token log-probs, values and reward scores."""

from __future__ import annotations

import contextlib
import copy
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


def is_adapter_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def _adapter_base(path: Path) -> tuple[str, str]:
    """(base model directory, peft task type) of a saved LoRA adapter."""
    from peft import PeftConfig

    cfg = PeftConfig.from_pretrained(str(path))
    return cfg.base_model_name_or_path, str(cfg.task_type)


def _merge_adapter(base_model: Any, path: Path) -> Any:
    from peft import PeftModel

    # peft loads an adapter frozen; the merged model is a plain model like any other.
    return PeftModel.from_pretrained(base_model, str(path)).merge_and_unload().requires_grad_(True)


def load_policy(path: str | Path, *, device: str | None = None, dtype: torch.dtype | None = None,
                eval_mode: bool = True) -> tuple[Any, Any]:
    """(causal LM, tokenizer) from a HF directory, a LoRA adapter directory (merged on load, on top
    of its base, itself possibly an adapter) or a hub id. PAD is made distinct from EOS on both."""
    from transformers import AutoModelForCausalLM

    path_obj = Path(path)
    if path_obj.is_dir() and is_adapter_dir(path_obj):
        base, _task = _adapter_base(path_obj)
        model = _merge_adapter(load_policy(base, device="cpu", dtype=dtype)[0], path_obj)
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


def _classifier_from_policy(policy: Any) -> Any:
    """A scalar-head classifier with the backbone weights of a causal LM (the head is new)."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(policy.config)
    config.num_labels = 1
    model = AutoModelForSequenceClassification.from_config(config, dtype=policy.dtype)
    prefix = model.base_model_prefix
    getattr(model, prefix).load_state_dict(getattr(policy, prefix).state_dict())
    init_score_head(model)
    return model


def _load_classifier(path: Path, dtype: torch.dtype | None) -> Any:
    """The scalar-head model of a directory: a saved reward model, a causal LM (fresh head), or a
    LoRA adapter of either (a reward adapter is merged over its base's classifier, a policy adapter
    gets a fresh head on its merged weights)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if path.is_dir() and is_adapter_dir(path):
        base, task = _adapter_base(path)
        if task == "SEQ_CLS":
            return _merge_adapter(_load_classifier(Path(base), dtype), path)
        return _classifier_from_policy(load_policy(path, device="cpu", dtype=dtype)[0])
    config = AutoConfig.from_pretrained(str(path))
    fresh = not any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=dtype)
    if fresh:
        init_score_head(model)
    return model


def load_reward_model(path: str | Path, *, device: str | None = None, dtype: torch.dtype | None = None,
                      eval_mode: bool = True) -> RewardModel:
    """A reward model from a directory we saved (merged or as a LoRA adapter), or a fresh scalar
    head on any causal LM directory (then the head is newly initialised and the stats are 0/1)."""
    model = _load_classifier(Path(path), dtype)
    tokenizer = load_tokenizer(path)
    ensure_pad_token(tokenizer, model)
    stats_file = Path(path) / REWARD_STATS_FILE
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    if "pooling" in stats:  # kept beside the stats too: an adapter directory has no config.json of its own
        set_score_pooling(model, stats["pooling"])
    model.to(resolve_device(device))
    model.train(not eval_mode)
    return RewardModel(model, tokenizer, float(stats.get("mean", 0.0)), float(stats.get("std", 1.0)))


def critic_from_reward_model(rm: RewardModel) -> Any:
    """A separate critic (the N+ choice) initialised from the reward model, with the score
    normalisation folded into its head: it starts out predicting (score - mean) / std, the units
    of the normalised scores PPO's returns are made of, not raw score units."""
    critic = copy.deepcopy(rm.model).float()
    _backbone, head = _backbone_and_head(critic)
    with torch.no_grad():
        head.weight.div_(rm.std)
        if head.bias is None:
            head.bias = nn.Parameter(torch.zeros(head.out_features, device=head.weight.device))
        head.bias.sub_(rm.mean).div_(rm.std)
    return critic


def frozen_copy(model: Any, precision: str) -> Any:
    """A no-grad copy for the reference policy, stored in bf16 when the run computes in bf16 (half
    the memory, and the autocast matmuls then skip a cast)."""
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    return frozen.to(torch.bfloat16) if precision == "bf16" else frozen


def _unwrapped(model: Any) -> Any:
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _backbone_and_head(model: Any) -> tuple[Any, Any]:
    base = _unwrapped(model)
    return getattr(base, base.base_model_prefix), base.score


def fp32_head(head: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    """A scalar head in fp32 whatever the autocast or the weights' dtype: a score or value is a
    dot product over ~576 features, and bf16 (8 bits of mantissa) moves it by ~1%, as much as
    the preference margins being learned. [..., H] -> [...]."""
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        bias = head.bias.float() if head.bias is not None else None
        return nn.functional.linear(hidden.float(), head.weight.float(), bias).squeeze(-1)


def token_scores(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The scalar head at every position. ids, mask: [B, L] -> [B, L].

    We run backbone + head ourselves instead of the classifier's forward, which pools at the last
    token that differs from PAD: right for scoring only when PAD != EOS, and useless for values.
    """
    backbone, head = _backbone_and_head(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=positions_from_mask(attention_mask)).last_hidden_state  # [B, L, H]
    return fp32_head(head, hidden)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each right-padded row. mask: [B, L] -> [B]."""
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
    return (positions * attention_mask).argmax(-1)


SCORE_POOLINGS = ("last", "mean")


def score_pooling(model: Any) -> str:
    """How a reward model turns its per-token head into one score, as saved in its config
    (`rlhf_score_pooling`); models saved before the setting existed pool at the last token."""
    return getattr(_unwrapped(model).config, "rlhf_score_pooling", "last")


def set_score_pooling(model: Any, pooling: str) -> None:
    if pooling not in SCORE_POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(SCORE_POOLINGS)}, got {pooling!r}")
    _unwrapped(model).config.rlhf_score_pooling = pooling


def sequence_scores(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    prompt_lens: torch.Tensor | None = None) -> torch.Tensor:
    """Reward of each right-padded prompt+response -> [B]: the head at the last real token
    ("last"), or its mean over the response tokens, EOS included ("mean"; needs each row's
    prompt length [B])."""
    scores = token_scores(model, input_ids, attention_mask)  # [B, L]
    if score_pooling(model) == "last":
        return scores.gather(-1, last_token_index(attention_mask)[:, None]).squeeze(-1)
    if prompt_lens is None:
        raise ValueError("a reward model that pools over the response needs each row's prompt length")
    positions = torch.arange(input_ids.size(1), device=input_ids.device)
    response = (attention_mask.bool() & (positions[None, :] >= prompt_lens.to(input_ids.device)[:, None])).float()
    return (scores * response).sum(-1) / response.sum(-1).clamp(min=1.0)


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
        return out.logits[:, :-1], fp32_head(self.value_head, hidden)

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_len: int) -> torch.Tensor:
        """Values only [B, T]: the lm head runs on one position, not on T x vocabulary."""
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=positions_from_mask(attention_mask), output_hidden_states=True,
                          logits_to_keep=1)
        return fp32_head(self.value_head, out.hidden_states[-1][:, -(response_len + 1):-1])


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


def labelled_token_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          labels: torch.Tensor, ignore_index: int = -100
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits that carry a loss: (logits [N, V] fp32, targets [N], rows [N]) at the N positions
    that predict a labelled (response) token of right-padded rows. ids, mask, labels: [B, L].

    The lm head runs from the batch's first labelled position on (logits_to_keep), and only the N
    labelled positions are upcast to fp32, instead of a [B, L, V] fp32 copy of every prompt position.
    """
    target = labels[:, 1:]  # [B, L-1]: position t predicts token t+1
    keep = target != ignore_index
    cols = keep.any(0).nonzero()
    first = int(cols[0]) if cols.numel() else target.size(1) - 1
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=positions_from_mask(attention_mask), logits_to_keep=input_ids.size(1) - first)
    logits = out.logits[:, :-1]  # [B, L-1-first, V]
    sel = keep[:, first:]
    rows = torch.arange(input_ids.size(0), device=input_ids.device)[:, None].expand_as(sel)[sel]
    return logits[sel].float(), target[:, first:][sel], rows


@torch.no_grad()
def score_texts(reward: RewardModel, prompts: list[Any], responses: list[str], *, max_length: int,
                wrap_plain: bool = True, normalize: bool = False, batch_size: int = 16) -> torch.Tensor:
    """Reward-model scores [B] of prompt + response texts, formatted exactly as in reward-model
    training. Text, not ids, goes in: the reward model's tokenizer may differ from the policy's.
    normalize gives (score - mean) / std with the saved training statistics."""
    from rlhf.data import encode_pair_side, right_pad

    tok = reward.tokenizer
    device = next(reward.model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        encoded = [encode_pair_side(tok, p, r, max_length, wrap_plain)
                   for p, r in zip(prompts[start:start + batch_size], responses[start:start + batch_size], strict=True)]
        ids, mask = right_pad([e.input_ids for e in encoded], tok.pad_token_id)
        prompt_lens = torch.tensor([e.prompt_len for e in encoded], device=device)
        out.append(sequence_scores(reward.model, ids.to(device), mask.to(device), prompt_lens).float().cpu())
    scores = torch.cat(out) if out else torch.zeros(0)
    return (scores - reward.mean) / reward.std if normalize else scores
