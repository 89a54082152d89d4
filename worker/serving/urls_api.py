"""/api/… of the model API: keys and tokenize (config/urls.py mounts it at "api/")."""

from django.urls import path

from config import converters  # noqa: F401  (registers <id:…>)

from . import api_views

urlpatterns = [
    path("keys", api_views.KeysView.as_view(), name="api-keys"),
    path("keys/<id:key_id>", api_views.KeyDetailView.as_view(), name="api-key-detail"),
    path("tokenize", api_views.TokenizeView.as_view(), name="api-tokenize"),
]
