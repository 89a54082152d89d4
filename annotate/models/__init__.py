"""Annotation data, split by what it describes; import models from here."""

from .projects import Project, Prompt, Round, prompt_content_hash
from .rankings import Demonstration, Pair, Ranking
from .tasks import Lease, RankingTask, Response, TaskResponse
from .tokens import ApiToken

__all__ = [
    "ApiToken",
    "Demonstration",
    "Lease",
    "Pair",
    "Project",
    "Prompt",
    "Ranking",
    "RankingTask",
    "Response",
    "Round",
    "TaskResponse",
    "prompt_content_hash",
]
