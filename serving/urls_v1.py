"""/v1/…: the OpenAI-compatible model API (config/urls.py mounts it at "v1/")."""

from django.urls import path, re_path

from . import views_v1

urlpatterns = [
    path("models", views_v1.models_list, name="v1-models"),
    path("models/<str:model>", views_v1.model_detail, name="v1-model"),
    path("chat/completions", views_v1.chat_completions, name="v1-chat-completions"),
    path("completions", views_v1.completions, name="v1-completions"),
    # Anything else under /v1 answers 404 in OpenAI's shape, not the HTML page.
    re_path(r"^(?P<rest>.*)$", views_v1.unknown_endpoint, name="v1-unknown"),
]
