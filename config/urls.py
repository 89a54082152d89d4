"""URL map: /api/… (annotate, worker), /v1/… (model API), /healthz, pages."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny

from worker.health import healthz

from . import converters  # noqa: F401  (registers <id:…>)

# Django's own error answers, in the shape of the surface asked (config/errors.py).
handler400 = "config.errors.bad_request"
handler403 = "config.errors.permission_denied"
handler404 = "config.errors.page_not_found"
handler500 = "config.errors.server_error"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # The Django admin signs in through our login page, which throttles password guessing;
    # its own login form would not.
    path("django-admin/login/", RedirectView.as_view(url="/login", query_string=True), name="django-admin-login"),
    path("django-admin/", admin.site.urls),
    # The API's description is public, as with any published API; its data is not.
    path("api/schema", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="schema"),
    # The split view serves Swagger UI's start-up script as its own request: no inline script.
    path("api/docs", SpectacularSwaggerSplitView.as_view(url_name="schema", permission_classes=[AllowAny],
                                                         template_name="frontend/swagger_ui.html"),
         name="api-docs"),
    path("api/", include("annotate.urls")),
    path("api/", include("worker.urls")),
    path("v1/", include("worker.serving.urls_v1")),
    path("api/", include("worker.serving.urls_api")),
    path("", include("frontend.urls")),
]
