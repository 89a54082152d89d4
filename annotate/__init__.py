"""Annotation: projects, prompts, responses, ranking tasks, leases, rankings and pairs,
demonstrations, agreement, import/export, roles. Never imports torch or rlhf."""
