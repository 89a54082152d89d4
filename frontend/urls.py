"""URLs of frontend."""

urlpatterns: list = []
