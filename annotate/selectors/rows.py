"""How prompts and responses look in exported and training rows (one schema per export)."""

from __future__ import annotations

from ..models import Project, Prompt, Response
from ..services.tasks import SAMPLING_KEYS

_FLOATS = {"temperature", "top_p"}


def is_conversational(project: Project) -> bool:
    """Chat prompts make the whole export conversational, so every row has the same types (a
    file mixing strings and message lists would not load as one dataset)."""
    return Prompt.objects.filter(project=project, messages__isnull=False).exists()


def prompt_value(prompt: Prompt, conversational: bool):
    return prompt.as_messages() if conversational else prompt.text


def completion_value(text: str, conversational: bool):
    return [{"role": "assistant", "content": text}] if conversational else text


def lineage(response: Response) -> dict:
    sampling = response.sampling or {}
    # Fixed keys and types: temperature 1 and 0.7 must both be floats for Arrow to load the file.
    fixed = {k: (float(sampling[k]) if k in _FLOATS and sampling.get(k) is not None else sampling.get(k))
             for k in SAMPLING_KEYS}
    return {"source": response.source, "model_version_id": response.model_version_id,
            "model_name": response.model_name, "sampling": fixed,
            "parent_response": response.parent_response_id}
