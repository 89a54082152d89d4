"""Demonstrations: a human-written ideal response to a prompt, or an edit of a ranked response.

An annotator writes only for a prompt they were shown: one of a task they were handed (ranking
mode), or one the writing mode offered them, which it proves with a signed offer. Admins may
write for any prompt. Texts are capped at RLHF_DEMONSTRATION_MAX_CHARS.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.db import transaction

from config.errors import ApplicationError

from ..models import Demonstration, Lease, Prompt, Response
from ..roles import is_admin

OFFER_SALT = "annotate.prompt-offer"
OFFER_MAX_AGE_SECONDS = 7 * 24 * 3600  # a writing page left open for days still saves


def prompt_offer_make(*, prompt: Prompt, annotator) -> str:
    """The proof that writing mode showed `prompt` to `annotator`."""
    return signing.TimestampSigner(salt=OFFER_SALT).sign(f"{prompt.pk}:{annotator.pk}")


def _offered(offer: str | None, prompt: Prompt, annotator) -> bool:
    if not offer:
        return False
    try:
        value = signing.TimestampSigner(salt=OFFER_SALT).unsign(offer, max_age=OFFER_MAX_AGE_SECONDS)
    except signing.BadSignature:
        return False
    return value == f"{prompt.pk}:{annotator.pk}"


def _was_shown(prompt: Prompt, annotator, offer: str | None) -> bool:
    if is_admin(annotator) or _offered(offer, prompt, annotator):
        return True
    return Lease.objects.filter(annotator=annotator, task__prompt=prompt).exists()


@transaction.atomic
def demonstration_create(*, prompt: Prompt, annotator, text: str, based_on_response_id: int | None = None,
                         offer: str | None = None) -> Demonstration:
    """Store `text` as a human Response of `prompt` (lineage: its author and, for an edit, the
    response it improves) and make it a demonstration usable as SFT data."""
    if not isinstance(text, str) or not text.strip():
        raise ApplicationError("a demonstration needs a non-empty text", code="invalid_demonstration")
    limit = settings.RLHF_DEMONSTRATION_MAX_CHARS
    if len(text) > limit:
        raise ApplicationError(f"a demonstration is at most {limit} characters; this one has {len(text)}",
                               code="demonstration_too_long")
    if not _was_shown(prompt, annotator, offer):
        raise ApplicationError(f"prompt {prompt.pk} was never shown to you: write for a prompt of a task you "
                               "were given, or one the writing mode offers", code="prompt_not_shown", status=403)
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
