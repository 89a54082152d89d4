"""Which prompt writing mode shows an annotator next."""

from __future__ import annotations

from ..models import Demonstration, Project, Prompt


def prompt_to_write(*, project: Project, annotator, wanted: int | None = None, after: int | None = None) -> Prompt | None:
    """The prompt asked for (`wanted`, if it is the project's), else the first prompt of the project
    the annotator has not written for, after `after` if given ("another prompt"), wrapping round."""
    if wanted is not None:
        prompt = Prompt.objects.filter(project=project, pk=wanted).first()
        if prompt is not None:
            return prompt
    done = Demonstration.objects.filter(annotator=annotator, project=project).values("prompt_id")
    todo = Prompt.objects.filter(project=project).exclude(pk__in=done).order_by("id")
    return (todo.filter(pk__gt=after).first() if after is not None else None) or todo.first()
