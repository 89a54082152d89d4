"""worker's models: the registry (model versions, worker heartbeats), training jobs, API keys."""

from .jobs import JobLog, JobMetric, TrainingJob
from .keys import APIKey
from .registry import ModelPromotion, ModelVersion, WorkerHeartbeat

__all__ = ["APIKey", "JobLog", "JobMetric", "ModelPromotion", "ModelVersion", "TrainingJob", "WorkerHeartbeat"]
