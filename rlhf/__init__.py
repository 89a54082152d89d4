"""The training library: tokenization, sampling, SFT, reward model, PPO, DPO, checkpoints.

Pure library: imports torch/transformers, never django, celery, annotate or worker; reads no
settings or environment. Everything arrives as arguments and config dataclasses.
"""
