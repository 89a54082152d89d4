from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training jobs and rounds"

    def ready(self) -> None:
        from . import worker_signals  # noqa: F401  (a Celery worker's heartbeat and housekeeping)
