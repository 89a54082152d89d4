"""URLs of worker's API, mounted under /api/ by config/urls.py."""

from django.urls import path

from .api import views

urlpatterns = [
    path("projects/<int:project_id>/jobs", views.ProjectJobsView.as_view(), name="project-jobs"),
    path("projects/<int:project_id>/rounds", views.ProjectRoundsView.as_view(), name="project-rounds"),
    path("jobs", views.JobsView.as_view(), name="jobs"),
    path("jobs/<int:job_id>", views.JobDetailView.as_view(), name="job-detail"),
    path("jobs/<int:job_id>/metrics", views.JobMetricsView.as_view(), name="job-metrics"),
    path("jobs/<int:job_id>/logs", views.JobLogsView.as_view(), name="job-logs"),
    path("jobs/<int:job_id>/cancel", views.JobCancelView.as_view(), name="job-cancel"),
    path("jobs/<int:job_id>/retry", views.JobRetryView.as_view(), name="job-retry"),
    path("rounds/<int:round_id>/retry", views.RoundRetryView.as_view(), name="round-retry"),
    path("models", views.ModelsView.as_view(), name="models"),
    path("models/import", views.ModelImportView.as_view(), name="model-import"),
    path("models/<int:model_id>", views.ModelDetailView.as_view(), name="model-detail"),
    path("models/<int:model_id>/promote", views.ModelPromoteView.as_view(), name="model-promote"),
]
