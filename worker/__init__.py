"""Training jobs, the model registry, worker heartbeats and the serving side of the loop."""
