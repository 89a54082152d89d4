"""The next-task query keeps its shape: open tasks in id order from the queue index, and each
candidate checked against the annotator's leases with one probe, never by reading all of them."""

from __future__ import annotations

import pytest
from django.db import connection

from annotate.services import queue_sql
from annotate.services.leases import task_lease_next
from annotate.services.rankings import ranking_submit

pytestmark = pytest.mark.django_db


def test_the_claim_checks_each_candidate_instead_of_joining_the_annotators_history(
        make_project, make_tasks, make_user):
    if connection.vendor != "postgresql":
        pytest.skip("the plan is PostgreSQL's")
    project = make_project(rankings_per_task=2)
    make_tasks(project, 60)
    veteran = make_user("veteran")
    for _ in range(40):  # a history of leases for the planner to be tempted by
        lease = task_lease_next(project=project, annotator=veteran)
        ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=veteran,
                       groups=[[r] for r in lease.shown_order])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE annotate_lease")
        cursor.execute("ANALYZE annotate_rankingtask")
        cursor.execute("EXPLAIN " + queue_sql.OPEN_FOR_ANNOTATOR, [project.pk, veteran.pk])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Anti Join" not in plan and "SubPlan" in plan, plan
    assert "task_open_queue" in plan, plan
