"""The OpenAI-compatible model API (/v1) and its API keys: per-process model cache, request
parsing, key and session auth, rate limit, OpenAI's error shape, optional proxy to vLLM."""
