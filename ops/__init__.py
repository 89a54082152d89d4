"""Running the service as a whole: one-time set-up (`bootstrap`), the process supervisor of the embedded
default (`run_service`), and /healthz."""
