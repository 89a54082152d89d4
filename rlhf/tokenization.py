"""Tokenizers: the PAD != EOS fix, prompt formatting shared by every stage, token pieces for the
playground, and a byte-level BPE trainer for models trained from scratch."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Messages = list[dict[str, str]]
Prompt = str | Messages

# Tried in order when the tokenizer's PAD is missing or equals EOS. `<|endoftext|>` is in
# SmolLM2's vocabulary (as its UNK), so no new embedding row is needed there.
PAD_CANDIDATES = ("<|endoftext|>", "<|pad|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>")
NEW_PAD_TOKEN = "<|pad|>"

# ChatML, the format SmolLM2 uses, minus its fixed system line; given to from-scratch tokenizers so
# chat prompts work the same way on them.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def ensure_pad_token(tokenizer: Any, model: Any | None = None) -> int:
    """Give PAD its own token (never EOS) and return its id.

    With PAD == EOS the collators mask every EOS as padding, so SFT never teaches the model to
    stop and the reward model's last real token is hidden. Reuses an existing vocabulary entry when
    one fits; otherwise adds a token and, if `model` is given, grows its embeddings.
    """
    eos = tokenizer.eos_token
    if tokenizer.pad_token is not None and tokenizer.pad_token != eos:
        pad_id = tokenizer.pad_token_id
    else:
        vocab = tokenizer.get_vocab()
        chosen = next((t for t in PAD_CANDIDATES if t in vocab and t != eos), None)
        if chosen is not None:
            tokenizer.pad_token = chosen
        else:
            tokenizer.add_special_tokens({"pad_token": NEW_PAD_TOKEN})
        pad_id = tokenizer.pad_token_id
    if model is not None:
        _sync_model_pad(model, tokenizer, pad_id)
    return int(pad_id)


def _sync_model_pad(model: Any, tokenizer: Any, pad_id: int) -> None:
    embeddings = model.get_input_embeddings()
    if embeddings is not None and pad_id >= embeddings.num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = pad_id
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.pad_token_id = pad_id


def eos_token_ids(tokenizer: Any, model: Any | None = None) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS plus the model's generation EOS ids."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None) if model is not None else None
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    for i in [extra] if isinstance(extra, int) else (extra or []):
        if int(i) not in ids:
            ids.append(int(i))
    return ids


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer: Any, prompt: Prompt, *, wrap_plain: bool = False) -> str:
    """The exact prompt text a model sees, used identically by SFT, RM, PPO, DPO and generation.

    Messages go through the chat template with the generation prompt appended. A plain string is
    kept as raw text unless `wrap_plain`, which makes it a single user turn (what training stages do
    by default, so a dataset of plain strings still trains the chat format the service serves).
    """
    if isinstance(prompt, str):
        if not (wrap_plain and has_chat_template(tokenizer)):
            return prompt
        prompt = [{"role": "user", "content": prompt}]
    if not has_chat_template(tokenizer):
        # No template: join turns as plain text so chat data still works on from-scratch models.
        return "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant: "
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, prompt: Prompt, *, wrap_plain: bool = False) -> list[int]:
    """Token ids of the formatted prompt; templated text already holds its special tokens."""
    text = format_prompt(tokenizer, prompt, wrap_plain=wrap_plain)
    templated = not isinstance(prompt, str) or (wrap_plain and has_chat_template(tokenizer))
    return list(tokenizer(text, add_special_tokens=not templated)["input_ids"])


def encode_response(tokenizer: Any, response: str, *, add_eos: bool = True) -> list[int]:
    """Response ids, tokenized apart from the prompt exactly as generation produces them."""
    ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if add_eos and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def token_pieces(tokenizer: Any, text: str) -> list[dict[str, Any]]:
    """Each token of `text` as {"id", "piece", "token"}: piece is its readable text, token its
    vocabulary entry (byte-level BPE shows a leading space as "Ġ")."""
    return id_pieces(tokenizer, list(tokenizer(text, add_special_tokens=False)["input_ids"]))


def id_pieces(tokenizer: Any, ids: list[int]) -> list[dict[str, Any]]:
    """token_pieces of ids a model saw or produced (special tokens kept), so a token view shows
    those very ids instead of a new tokenization of their text."""
    raw = tokenizer.convert_ids_to_tokens(ids)
    return [
        {"id": int(i), "piece": tokenizer.decode([i], clean_up_tokenization_spaces=False), "token": t}
        for i, t in zip(ids, raw, strict=True)
    ]


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    eos_token: str = "<|im_end|>",
    pad_token: str = "<|endoftext|>",
    bos_token: str | None = "<|im_start|>",
    chat_template: str | None = CHATML_TEMPLATE,
) -> Any:
    """Train a byte-level BPE tokenizer (the `tokenizers` library) and wrap it for transformers.

    Byte-level means every string is encodable (no UNK), as in GPT-2 and SmolLM2. The result has
    PAD != EOS from the start and a ChatML template, so it plugs into every stage.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(special_tokens):
        raise ValueError(f"vocab_size must be at least {256 + len(special_tokens)} (256 bytes + "
                         f"{len(special_tokens)} special tokens), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos_token, pad_token=pad_token, bos_token=bos_token,
        unk_token=None,
    )
    if chat_template:
        wrapped.chat_template = chat_template
    return wrapped
