"""How a stage talks to whoever runs it: a progress callback after every step, a stage callback
when it moves to another phase of its work, a stop question asked inside every loop, and the
exception a loop raises when the answer is yes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

OnStep = Callable[[dict[str, Any]], None]
ShouldStop = Callable[[], bool]
# Called with what the stage does now: "training", "evaluating", "generating", "scoring",
# "updating", "saving". Separate from on_step, which its callers count as one call per step.
OnStage = Callable[[str], None]


class StopRequested(Exception):
    """Raised inside a decode or update loop when `should_stop()` answered True; the stage turns it
    into a cancelled result (it is never an error)."""


def check_stop(should_stop: ShouldStop | None) -> None:
    if should_stop is not None and should_stop():
        raise StopRequested()


def stage_begins(on_stage: OnStage | None, label: str) -> None:
    if on_stage is not None:
        on_stage(label)
