"""Tokenizers of served versions for /api/tokenize: the loaded model's when it is loaded, else the
tokenizer alone (a few MB, no weights), kept per version."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .engine import loaded_model_peek
from .errors import OpenAIError, bad_request
from .resolve import ServedModel

_tokenizers: OrderedDict[tuple[int, str], tuple[Any, threading.Lock]] = OrderedDict()
_lock = threading.Lock()
KEPT = 4


def token_pieces_of(served: ServedModel, text: str) -> list[dict]:
    from rlhf.tokenization import token_pieces

    return _with_tokenizer(served, lambda tokenizer: token_pieces(tokenizer, text))


def id_pieces_of(served: ServedModel, ids: list[int]) -> list[dict]:
    """The pieces of ids a model saw or produced (the playground's token view of an answer)."""
    from rlhf.tokenization import id_pieces

    def pieces(tokenizer: Any) -> list[dict]:
        size = len(tokenizer)
        bad = next((i for i in ids if not 0 <= i < size), None)
        if bad is not None:
            raise bad_request(f"Token id {bad} is not in this model's vocabulary (ids 0 to {size - 1}).",
                              param="ids")
        return id_pieces(tokenizer, ids)

    return _with_tokenizer(served, pieces)


def _with_tokenizer(served: ServedModel, use: Callable[[Any], Any]) -> Any:
    loaded = loaded_model_peek(served)
    if loaded is not None:
        return loaded.with_tokenizer(use)
    tokenizer, tok_lock = _tokenizer(served)
    with tok_lock:  # one thread at a time on a fast tokenizer
        return use(tokenizer)


def _tokenizer(served: ServedModel) -> tuple[Any, threading.Lock]:
    key = (served.version_id, served.path)
    with _lock:
        if key in _tokenizers:
            _tokenizers.move_to_end(key)
            return _tokenizers[key]
    from rlhf.models import load_tokenizer

    try:
        entry = (load_tokenizer(served.path), threading.Lock())
    except (OSError, ValueError) as exc:
        raise OpenAIError(f"The tokenizer of model version {served.version_id} cannot be loaded: {exc}",
                          status=503, code="model_unavailable") from exc
    with _lock:
        _tokenizers[key] = entry
        while len(_tokenizers) > KEPT:
            _tokenizers.popitem(last=False)
    return entry
