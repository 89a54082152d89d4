"""URLs of the browser pages (mounted at the site root, after /api and /v1)."""

from django.urls import path

from config import converters  # noqa: F401  (registers <id:…>)

from . import views

app_name = "frontend"

urlpatterns = [
    path("login", views.LoginView.as_view(), name="login"),
    path("logout", views.LogoutView.as_view(), name="logout"),
    path("", views.home, name="home"),
    path("projects/<id:project_id>/rank", views.rank, name="rank"),
    path("projects/<id:project_id>/write", views.write, name="write"),
    path("manage/projects", views.manage_projects, name="manage_projects"),
    path("manage/projects/<id:project_id>", views.manage_project, name="manage_project"),
    path("manage/annotators", views.manage_annotators, name="manage_annotators"),
    path("manage/jobs", views.manage_jobs, name="manage_jobs"),
    path("manage/jobs/<id:job_id>", views.manage_job, name="manage_job"),
    path("manage/models", views.manage_models, name="manage_models"),
    path("manage/keys", views.manage_keys, name="manage_keys"),
    path("playground", views.playground, name="playground"),
    path("tokens", views.tokens, name="tokens"),
]
