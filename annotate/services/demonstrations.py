"""Demonstrations: a human-written ideal response to a prompt, or an edit of a ranked response."""

from __future__ import annotations

from django.db import transaction

from config.errors import ApplicationError

from ..models import Demonstration, Prompt, Response


@transaction.atomic
def demonstration_create(*, prompt: Prompt, annotator, text: str,
                         based_on_response_id: int | None = None) -> Demonstration:
    """Store `text` as a human Response of `prompt` (lineage: its author and, for an edit, the
    response it improves) and make it a demonstration usable as SFT data."""
    if not isinstance(text, str) or not text.strip():
        raise ApplicationError("a demonstration needs a non-empty text", code="invalid_demonstration")
    parent = None
    if based_on_response_id is not None:
        parent = Response.objects.filter(pk=based_on_response_id).first()
        if parent is None or parent.prompt_id != prompt.pk:
            raise ApplicationError(f"response {based_on_response_id} is not a response to prompt {prompt.pk}",
                                   code="invalid_demonstration")
    response = Response.objects.create(prompt=prompt, text=text, source=Response.Source.HUMAN,
                                       parent_response=parent, author=annotator)
    return Demonstration.objects.create(project_id=prompt.project_id, prompt=prompt, response=response,
                                        annotator=annotator)
