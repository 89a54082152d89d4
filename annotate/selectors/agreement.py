"""Agreement between annotators, from the pairwise judgements their rankings imply.

A ranking of a task judges every pair of its responses (a, b), a < b by id: +1 when a is
ranked above b, -1 when below, 0 when tied. Annotators are compared on those judgements.
The project coefficient is Krippendorff's alpha for nominal data over these judgements: each
(task, response pair) is a unit, each annotator who ranked the task gives it one value, and
units with a single value drop out, which is how alpha handles missing data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from itertools import combinations

Judgement = int  # +1, -1 or 0


def judgements(groups: list[list[int]]) -> dict[tuple[int, int], Judgement]:
    place = {rid: i for i, group in enumerate(groups) for rid in group}
    out = {}
    for a, b in combinations(sorted(place), 2):
        out[(a, b)] = (place[a] < place[b]) - (place[a] > place[b])
    return out


def krippendorff_alpha_nominal(units: Iterable[list]) -> float | None:
    """Alpha = 1 - D_o / D_e from the coincidence matrix; None when undefined (fewer than two
    values in all, or all values identical so no disagreement is possible)."""
    coincidence: dict[tuple, float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, j in ((i, j) for i in range(m) for j in range(m) if i != j):
            coincidence[(values[i], values[j])] += 1.0 / (m - 1)
    totals: dict = defaultdict(float)
    for (c, _), weight in coincidence.items():
        totals[c] += weight
    n = sum(totals.values())
    if n <= 1:
        return None
    observed = sum(w for (c, k), w in coincidence.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k) / (n - 1)
    if expected == 0:
        return None
    return 1.0 - observed / expected


def agreement_by_annotator(tasks: dict[int, dict[int, list[list[int]]]]) -> dict[int, tuple[int, int]]:
    """annotator -> (agreeing comparisons, comparisons) with every other annotator of the same
    tasks, one comparison per response pair and other annotator."""
    agreed: dict[int, int] = defaultdict(int)
    compared: dict[int, int] = defaultdict(int)
    for by_annotator in tasks.values():
        if len(by_annotator) < 2:
            continue
        judged = {a: judgements(g) for a, g in by_annotator.items()}
        for a, mine in judged.items():
            for b, theirs in judged.items():
                if a == b:
                    continue
                for pair, value in mine.items():
                    if pair in theirs:
                        compared[a] += 1
                        agreed[a] += value == theirs[pair]
    return {a: (agreed[a], compared[a]) for a in compared}


def alpha_units(tasks: dict[int, dict[int, list[list[int]]]]) -> list[list[Judgement]]:
    units = []
    for by_annotator in tasks.values():
        per_pair: dict[tuple[int, int], list[Judgement]] = defaultdict(list)
        for groups in by_annotator.values():
            for pair, value in judgements(groups).items():
                per_pair[pair].append(value)
        units.extend(per_pair.values())
    return units
