"""Project statistics: agreement, gold accuracy, time per task, skips and flags, per annotator."""

from __future__ import annotations

from collections import Counter, defaultdict
from statistics import median

from django.contrib.auth import get_user_model
from django.db.models import Count

from ..models import Lease, Project, Ranking
from .agreement import agreement_by_annotator, alpha_units, krippendorff_alpha_nominal

ALPHA_METHOD = ("Krippendorff's alpha, nominal, over pairwise judgements (a above b, below, tied) of each "
                "response pair of each task; missing judgements are left out")


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def project_stats(*, project: Project) -> dict:
    tasks: dict[int, dict[int, list]] = defaultdict(dict)
    per = defaultdict(lambda: {"rankings": 0, "flags": Counter(), "times": [], "gold": [0, 0]})
    rows = Ranking.objects.live().filter(project=project).values_list(
        "task_id", "annotator_id", "groups", "flags", "time_spent_ms", "gold_correct")
    for task_id, annotator_id, groups, flags, time_ms, gold_correct in rows.iterator(chunk_size=5000):
        tasks[task_id][annotator_id] = groups
        me = per[annotator_id]
        me["rankings"] += 1
        me["flags"].update(flags)
        if time_ms is not None:
            me["times"].append(time_ms)
        if gold_correct is not None:
            me["gold"][0] += 1
            me["gold"][1] += int(gold_correct)
    skips = dict(Lease.objects.filter(project=project, status=Lease.Status.SKIPPED)
                 .values("annotator").annotate(n=Count("id")).values_list("annotator", "n"))
    agreement = agreement_by_annotator(tasks)
    ids = set(per) | set(skips)
    names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))

    annotators = []
    all_flags: Counter = Counter()
    all_times: list[int] = []
    gold_total = [0, 0]
    for uid in sorted(ids, key=lambda u: names.get(u, "")):
        me = per[uid] if uid in per else {"rankings": 0, "flags": Counter(), "times": [], "gold": [0, 0]}
        agreed, compared = agreement.get(uid, (0, 0))
        all_flags.update(me["flags"])
        all_times.extend(me["times"])
        gold_total[0] += me["gold"][0]
        gold_total[1] += me["gold"][1]
        annotators.append({
            "id": uid, "username": names.get(uid, ""), "rankings": me["rankings"], "skips": skips.get(uid, 0),
            "flags": dict(me["flags"]), "median_time_ms": median(me["times"]) if me["times"] else None,
            "gold": {"attempted": me["gold"][0], "correct": me["gold"][1],
                     "accuracy": _rate(me["gold"][1], me["gold"][0])},
            "agreement": {"compared": compared, "agreed": agreed, "rate": _rate(agreed, compared)},
        })
    units = alpha_units(tasks)
    total_agreed = sum(a for a, _ in agreement.values())
    total_compared = sum(c for _, c in agreement.values())
    return {
        "project": project.pk,
        "rankings": sum(me["rankings"] for me in per.values()),
        "tasks_ranked": len(tasks),
        "skips": sum(skips.values()),
        "flags": dict(all_flags),
        "median_time_ms": median(all_times) if all_times else None,
        "gold": {"attempted": gold_total[0], "correct": gold_total[1], "accuracy": _rate(gold_total[1], gold_total[0])},
        "agreement": {
            "krippendorff_alpha": krippendorff_alpha_nominal(units),
            "method": ALPHA_METHOD,
            "units": sum(1 for u in units if len(u) >= 2),
            "pairwise_rate": _rate(total_agreed, total_compared),
        },
        "annotators": annotators,
    }
