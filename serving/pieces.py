"""Tokenizers of served versions for /api/tokenize: the loaded model's when it is loaded, else the
tokenizer alone (a few MB, no weights), kept per version."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from .engine import loaded_model_peek
from .errors import OpenAIError
from .resolve import ServedModel

_tokenizers: OrderedDict[tuple[int, str], tuple[Any, threading.Lock]] = OrderedDict()
_lock = threading.Lock()
KEPT = 4


def token_pieces_of(served: ServedModel, text: str) -> list[dict]:
    loaded = loaded_model_peek(served)
    if loaded is not None:
        return loaded.pieces(text)
    tokenizer, tok_lock = _tokenizer(served)
    from rlhf.tokenization import token_pieces

    with tok_lock:  # one thread at a time on a fast tokenizer
        return token_pieces(tokenizer, text)


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
