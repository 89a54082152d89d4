"""The model registry: model versions (Hugging Face directories under ARTIFACTS_ROOT), import, register,
promote and roll back, and the bundled base model."""
