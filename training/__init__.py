"""Training jobs and rounds: job kinds, launching, the runner and Celery tasks (on the workers), the round
state machine, and their API."""
