"""Reads of worker's data shaped for the API: metric series by name."""

from __future__ import annotations

from .models import JobMetric, TrainingJob


def job_metric_series(*, job: TrainingJob, after_step: int | None = None) -> dict[str, list[list[float]]]:
    """{name: [[step, value], ...]} in step order; `after_step` gives only newer points (polling)."""
    rows = JobMetric.objects.filter(job=job).order_by("step", "id")
    if after_step is not None:
        rows = rows.filter(step__gt=after_step)
    series: dict[str, list[list[float]]] = {}
    for step, values in rows.values_list("step", "values"):
        for name, value in values.items():
            if name in ("step", "total_steps"):
                continue
            series.setdefault(name, []).append([step, value])
    return series
