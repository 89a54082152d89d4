"""URLs of the model registry API, mounted under /api/ by config/urls.py."""

from django.urls import path

from config import converters  # noqa: F401  (registers <id:…>)

from .api import views

urlpatterns = [
    path("models", views.ModelsView.as_view(), name="models"),
    path("models/import", views.ModelImportView.as_view(), name="model-import"),
    path("models/<id:model_id>", views.ModelDetailView.as_view(), name="model-detail"),
    path("models/<id:model_id>/promote", views.ModelPromoteView.as_view(), name="model-promote"),
    path("models/<id:model_id>/archive", views.ModelArchiveView.as_view(), name="model-archive"),
]
