"""Control of the inference engine (vLLM) from the outside: install checks, a managed server process."""
