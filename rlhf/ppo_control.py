"""PPO's run-time controls: the KL coefficient's controller and the alarms for a broken run."""

from __future__ import annotations

from typing import Any


class KLController:
    """Fixed beta, or the adaptive proportional controller of Ziegler et al. towards a KL target."""

    def __init__(self, coef: float, target: float | None, horizon: int):
        self.coef, self.target, self.horizon = coef, target, horizon

    def update(self, kl: float, n_samples: int) -> None:
        if self.target is None:
            return
        error = max(-0.2, min(0.2, kl / self.target - 1))
        self.coef *= 1 + error * n_samples / self.horizon


def alarms_for(m: dict[str, Any], first: dict[str, Any] | None, config: Any) -> list[str]:
    """Named warnings for the signs of a broken run listed in the checklist."""
    alarms = []
    if m["kl"] > config.kl_alarm:
        alarms.append("kl_spike")
    if m["ratio_max"] > 10:
        alarms.append("ratio_explosion")
    if first and m["response_length"] < 0.25 * first["response_length"]:
        alarms.append("length_collapse")
    if first and m["entropy"] < 0.1 * first["entropy"]:
        alarms.append("entropy_collapse")
    if m["distinct_token_ratio"] < 0.1:
        alarms.append("repetition")
    return alarms
