"""URLs of worker's API, mounted under /api/ by config/urls.py."""

from django.urls import path

from config import converters  # noqa: F401  (registers <id:…>)

from .api import views

urlpatterns = [
    path("projects/<id:project_id>/jobs", views.ProjectJobsView.as_view(), name="project-jobs"),
    path("projects/<id:project_id>/rounds", views.ProjectRoundsView.as_view(), name="project-rounds"),
    path("jobs", views.JobsView.as_view(), name="jobs"),
    path("jobs/<id:job_id>", views.JobDetailView.as_view(), name="job-detail"),
    path("jobs/<id:job_id>/metrics", views.JobMetricsView.as_view(), name="job-metrics"),
    path("jobs/<id:job_id>/logs", views.JobLogsView.as_view(), name="job-logs"),
    path("jobs/<id:job_id>/cancel", views.JobCancelView.as_view(), name="job-cancel"),
    path("jobs/<id:job_id>/retry", views.JobRetryView.as_view(), name="job-retry"),
    path("rounds/<id:round_id>/retry", views.RoundRetryView.as_view(), name="round-retry"),
    path("models", views.ModelsView.as_view(), name="models"),
    path("models/import", views.ModelImportView.as_view(), name="model-import"),
    path("models/<id:model_id>", views.ModelDetailView.as_view(), name="model-detail"),
    path("models/<id:model_id>/promote", views.ModelPromoteView.as_view(), name="model-promote"),
    path("models/<id:model_id>/archive", views.ModelArchiveView.as_view(), name="model-archive"),
]
