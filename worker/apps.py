from django.apps import AppConfig


class WorkerConfig(AppConfig):
    name = "worker"
    verbose_name = "Training and models"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (worker heartbeats)
