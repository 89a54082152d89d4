"""Agreement figures against examples computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import pytest

from annotate.selectors.agreement import judgements, krippendorff_alpha_nominal
from annotate.selectors.stats import project_stats
from annotate.selectors.training import borda_groups
from annotate.services.leases import task_lease_next, task_skip
from annotate.services.rankings import ranking_submit

from .conftest import response_ids


def test_judgements_per_pair():
    assert judgements([[1], [2, 3]]) == {(1, 2): 1, (1, 3): 1, (2, 3): 0}
    assert judgements([[3], [1], [2]]) == {(1, 2): 1, (1, 3): -1, (2, 3): -1}


def test_alpha_perfect_agreement_is_one():
    # o = {++: 2, 00: 2, --: 2}; no disagreement -> alpha 1.
    assert krippendorff_alpha_nominal([[1, 1], [0, 0], [-1, -1]]) == pytest.approx(1.0)


def test_alpha_with_three_coders_and_a_missing_value():
    # unit 1 (m=3): o++ += 1, o+- += 1, o-+ += 1; unit 2: o++ += 2; unit 3: o-- += 2.
    # n+ = 4, n- = 3, n = 7; alpha = 1 - (n-1) * 2 / (2 * 4 * 3) = 1 - 12/24 = 0.5
    assert krippendorff_alpha_nominal([[1, 1, -1], [1, 1], [-1, -1], [1]]) == pytest.approx(0.5)


def test_alpha_undefined_without_variation_or_pairs():
    assert krippendorff_alpha_nominal([[1, 1], [1, 1]]) is None
    assert krippendorff_alpha_nominal([[1], [0]]) is None


def test_borda_consensus():
    # Score = beaten minus beaten-by, summed: 1 -> 2 + 0 = 2, 2 -> 0 + 2 = 2, 3 -> -2 - 2 = -4.
    assert borda_groups([[[1], [2], [3]], [[2], [1], [3]]]) == [[1, 2], [3]]
    assert borda_groups([[[1], [2, 3]]]) == [[1], [2, 3]]


@pytest.mark.sqlite
@pytest.mark.django_db
def test_project_stats_by_hand(make_project, make_tasks, make_user):
    project = make_project(responses_per_task=3, rankings_per_task=3)
    [t1] = make_tasks(project, 1, responses=3)
    [t2] = make_tasks(project, 1, responses=3, gold_index=0)
    r1, r2, r3 = response_ids(t1)
    s1, s2, s3 = response_ids(t2)
    a, b, c = make_user("a"), make_user("b"), make_user("c")

    def rank(user, task, groups, time_ms, flags=()):
        lease = task_lease_next(project=project, annotator=user)
        assert lease.task_id == task.pk
        ranking_submit(task_id=task.pk, lease_id=lease.pk, annotator=user, groups=groups, time_spent_ms=time_ms,
                       flags=flags)

    rank(a, t1, [[r1], [r2], [r3]], 1000, ["unsafe"])
    rank(b, t1, [[r1], [r3], [r2]], 500)
    rank(c, t1, [[r3], [r2], [r1]], 4000)
    rank(a, t2, [[s1], [s2, s3]], 3000)
    rank(b, t2, [[s1], [s2], [s3]], 700)
    lease = task_lease_next(project=project, annotator=c)
    task_skip(task_id=t2.pk, lease_id=lease.pk, annotator=c, reason="too long")

    stats = project_stats(project=project)
    by_name = {row["username"]: row for row in stats["annotators"]}
    # Judgements (pairs by id): t1 a(+,+,+) b(+,+,-) c(-,-,-); t2 a(+,+,0) b(+,+,+).
    # a: t1 vs b 2/3, vs c 0/3; t2 vs b 2/3 -> 4/9.  b: 2/3 + 1/3 + 2/3 -> 5/9.  c: 0/3 + 1/3 -> 1/6.
    assert (by_name["a"]["agreement"]["agreed"], by_name["a"]["agreement"]["compared"]) == (4, 9)
    assert (by_name["b"]["agreement"]["agreed"], by_name["b"]["agreement"]["compared"]) == (5, 9)
    assert by_name["c"]["agreement"]["rate"] == pytest.approx(1 / 6)
    assert stats["agreement"]["pairwise_rate"] == pytest.approx(10 / 24)
    # Units: t1 [+,+,-], [+,+,-], [+,-,-]; t2 [+,+], [+,+], [0,+].
    # o++ = 1+1+0+2+2 = 6, o+- = o-+ = 3, o-- = 1, o+0 = o0+ = 1; n+ = 10, n- = 4, n0 = 1, n = 15.
    # alpha = 1 - 14 * 8 / (2 * (10*4 + 10*1 + 4*1)) = 1 - 112/108 = -1/27
    assert stats["agreement"]["krippendorff_alpha"] == pytest.approx(-1 / 27)
    assert stats["agreement"]["units"] == 6
    assert by_name["a"]["gold"] == {"attempted": 1, "correct": 1, "accuracy": 1.0}
    assert by_name["c"]["gold"]["accuracy"] is None
    assert (by_name["a"]["median_time_ms"], by_name["b"]["median_time_ms"]) == (2000, 600)
    assert by_name["c"]["skips"] == 1 and stats["skips"] == 1
    assert by_name["a"]["flags"] == {"unsafe": 1} and stats["flags"] == {"unsafe": 1}
    assert stats["rankings"] == 5 and stats["median_time_ms"] == 1000
