"""URLs of worker."""

urlpatterns: list = []
