"""worker's JSON API: training jobs, the model registry, rounds."""
