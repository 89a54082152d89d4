"""URLs of annotate."""

urlpatterns: list = []
