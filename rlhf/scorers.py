"""Verifiable rewards: scorers that check a response (text in, float out) and can replace the reward
model in PPO, with built-ins and a registry so a job config can name one ({"scorer": "numeric"})."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from rlhf.tokenization import Prompt


@runtime_checkable
class Scorer(Protocol):
    """score(prompt, response, reference) -> float; higher is better (built-ins give 0.0 or 1.0)."""

    def __call__(self, prompt: Prompt, response: str, reference: str | None) -> float: ...


def normalise_text(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .!")


class ExactMatch:
    """1.0 when the response equals the reference, ignoring case, spacing and final punctuation."""

    def __call__(self, prompt: Prompt, response: str, reference: str | None) -> float:
        return float(reference is not None and normalise_text(response) == normalise_text(reference))


NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_number(text: str) -> float | None:
    """The last number in text (answers usually end with it); thousands separators allowed."""
    found = NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


class NumericAnswer:
    """1.0 when the last number in the response equals the reference's number (within tolerance)."""

    def __init__(self, tolerance: float = 1e-6):
        self.tolerance = tolerance

    def __call__(self, prompt: Prompt, response: str, reference: str | None) -> float:
        got, want = parse_number(response), parse_number(reference or "")
        return float(got is not None and want is not None and abs(got - want) <= self.tolerance)


class RegexMatch:
    """1.0 when the pattern is found in the response; without a fixed pattern the prompt's
    reference is the pattern."""

    def __init__(self, pattern: str | None = None, flags: int = re.IGNORECASE):
        self.flags = flags
        self.pattern = re.compile(pattern, flags) if pattern is not None else None

    def __call__(self, prompt: Prompt, response: str, reference: str | None) -> float:
        pattern = self.pattern or (re.compile(reference, self.flags) if reference else None)
        return float(pattern is not None and pattern.search(response) is not None)


class Contains:
    """1.0 when the response contains the given text (or the reference), ignoring case."""

    def __init__(self, text: str | None = None):
        self.text = text

    def __call__(self, prompt: Prompt, response: str, reference: str | None) -> float:
        needle = self.text if self.text is not None else reference
        return float(bool(needle) and needle.casefold() in response.casefold())


SCORERS: dict[str, Callable[..., Scorer]] = {
    "exact_match": ExactMatch,
    "numeric": NumericAnswer,
    "regex": RegexMatch,
    "contains": Contains,
}


def register_scorer(name: str, factory: Callable[..., Scorer]) -> None:
    SCORERS[name] = factory


def get_scorer(spec: str | dict[str, Any] | Scorer) -> Scorer:
    """A scorer from a name ("numeric"), a dict ({"scorer": "regex", "pattern": "^yes"}; "name"
    works too) or an object that already is one."""
    if isinstance(spec, str):
        spec = {"scorer": spec}
    if isinstance(spec, dict):
        options = dict(spec)
        name = options.pop("scorer", None) or options.pop("name", None)
        if name not in SCORERS:
            raise ValueError(f"unknown scorer {name!r}; known: {', '.join(sorted(SCORERS))}")
        return SCORERS[name](**options)
    if callable(spec):
        return spec
    raise TypeError(f"a scorer must be a name, a dict or a callable, got {type(spec).__name__}")
