"""Every environment variable the service reads, in one place, with its default.

Settings import from here; nothing else in the code base reads os.environ. A bad value stops
the process with one line naming the variable and what is expected.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


class ConfigError(SystemExit):
    """A wrong environment variable: exits with one clear line instead of a traceback."""

    def __init__(self, message: str):
        super().__init__(f"configuration error: {message}")


def _str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


def _int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


@dataclass(frozen=True)
class Env:
    """The documented variables (README, "Configuration")."""

    data_dir: Path  # RLHF_DATA_DIR: SQLite database, embedded broker, model artifacts
    artifacts_root: Path  # RLHF_ARTIFACTS_ROOT: model checkpoints (HF directories)
    database_url: str  # DATABASE_URL: sqlite:///… (default) or postgres://…
    broker_url: str  # CELERY_BROKER_URL: filesystem:// (default, embedded) or redis://…
    result_backend: str  # CELERY_RESULT_BACKEND: empty = no results stored (jobs use the DB)
    secret_key: str  # DJANGO_SECRET_KEY
    debug: bool  # DJANGO_DEBUG
    allowed_hosts: list[str]  # DJANGO_ALLOWED_HOSTS, comma separated
    csrf_trusted_origins: list[str]  # DJANGO_CSRF_TRUSTED_ORIGINS, comma separated
    lease_seconds: int  # RLHF_LEASE_SECONDS: how long an annotator holds a task
    worker_stale_seconds: int  # RLHF_WORKER_STALE_SECONDS: a worker unseen this long is gone
    job_stale_seconds: int  # RLHF_JOB_STALE_SECONDS: a running job silent this long lost its worker
    job_max_attempts: int  # RLHF_JOB_MAX_ATTEMPTS: runs of a job, automatic resumes after a lost worker included
    job_time_limit_seconds: int  # RLHF_JOB_TIME_LIMIT_SECONDS: default wall-time limit of a job
    default_model_name: str  # RLHF_DEFAULT_MODEL: name of the bundled base model version
    log_level: str  # RLHF_LOG_LEVEL
    cache_url: str  # CACHE_URL: empty = file cache in the data folder; redis://… to share across hosts
    api_rate_limit: int  # RLHF_API_RATE_LIMIT: model API requests per minute per key (0 = unlimited)
    serving_engine: str  # RLHF_SERVING_ENGINE: auto | vllm | transformers | external (what answers /v1 and rounds)
    serving_engine_max: int  # RLHF_SERVING_ENGINE_MAX: managed vLLM processes at once (the memory budget)
    serving_engine_dtype: str  # RLHF_SERVING_ENGINE_DTYPE: dtype of managed vLLM engines
    serving_engine_kv_gib: int  # RLHF_SERVING_ENGINE_KV_GIB: KV cache per managed engine on CPU (VLLM_CPU_KVCACHE_SPACE)
    serving_engine_max_model_len: int  # RLHF_SERVING_ENGINE_MAX_MODEL_LEN: context of managed engines
    serving_engine_drain_seconds: int  # RLHF_SERVING_ENGINE_DRAIN_SECONDS: longest a replaced engine finishes its requests
    serving_engine_idle_seconds: int  # RLHF_SERVING_ENGINE_IDLE_SECONDS: an on-demand (not promoted) engine unused this long stops
    serving_engine_url: str  # RLHF_SERVING_ENGINE_URL: external OpenAI-compatible engine (vLLM) for /v1
    serving_engine_model: str  # RLHF_SERVING_ENGINE_MODEL: model name the engine serves (default: checkpoint path)
    serving_engine_api_key: str  # RLHF_SERVING_ENGINE_API_KEY: bearer key for that engine
    serving_max_tokens: int  # RLHF_SERVING_MAX_TOKENS: cap on max_tokens per request
    serving_max_n: int  # RLHF_SERVING_MAX_N: cap on n per request
    serving_max_choices: int  # RLHF_SERVING_MAX_CHOICES: cap on prompts x n per request
    serving_max_batch: int  # RLHF_SERVING_MAX_BATCH: requests batched into one generate call
    serving_batch_wait_ms: int  # RLHF_SERVING_BATCH_WAIT_MS: how long a decode waits for more requests
    serving_cache_size: int  # RLHF_SERVING_CACHE_SIZE: model versions kept loaded per process
    serving_device: str  # RLHF_SERVING_DEVICE: torch device for serving (empty: cuda if present, else cpu)
    admin_username: str  # RLHF_ADMIN_USERNAME: account `make run` creates
    admin_password: str  # RLHF_ADMIN_PASSWORD: empty = generate one, print it, keep it in the data folder
    bind: str  # RLHF_BIND: address `make run` serves on
    max_body_bytes: int  # RLHF_MAX_BODY_BYTES: largest request body outside imports (413 beyond)
    import_max_bytes: int  # RLHF_IMPORT_MAX_BYTES: largest import file (413 beyond)
    import_batch_lines: int  # RLHF_IMPORT_BATCH_LINES: lines written per transaction by an import
    lease_max_seconds: int  # RLHF_LEASE_MAX_SECONDS: longest a lease lives, heartbeats included
    demonstration_max_chars: int  # RLHF_DEMONSTRATION_MAX_CHARS: longest demonstration text
    demonstrations_per_hour: int  # RLHF_DEMONSTRATIONS_PER_HOUR: per annotator (0 = unlimited)
    auth_fail_limit: int  # RLHF_AUTH_FAIL_LIMIT: failed authentications per client address per window
    login_fail_limit: int  # RLHF_LOGIN_FAIL_LIMIT: failed password sign-ins per username per window
    auth_fail_window_seconds: int  # RLHF_AUTH_FAIL_WINDOW_SECONDS: the window of both limits
    client_ip_header: str  # RLHF_CLIENT_IP_HEADER: header the proxy puts the client address in
    token_max_age_days: int  # RLHF_TOKEN_MAX_AGE_DAYS: API tokens expire this long after creation
    https: bool  # RLHF_HTTPS: served over TLS (secure cookies, HSTS, redirect to https)
    proxy_ssl_header: str  # RLHF_PROXY_SSL_HEADER: header a TLS proxy sets to "https" (e.g. X-Forwarded-Proto)
    hsts_seconds: int  # RLHF_HSTS_SECONDS: Strict-Transport-Security max-age when RLHF_HTTPS is on


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _str(name, default).strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def _list(name: str, default: str) -> list[str]:
    return [item.strip() for item in _str(name, default).split(",") if item.strip()]


def _check_url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme not in schemes:
        raise ConfigError(
            f"{name}={value!r} is not understood; it must start with one of "
            + ", ".join(f"{s}://" for s in schemes)
        )
    return value


def load() -> Env:
    data_dir = Path(_str("RLHF_DATA_DIR", str(BASE_DIR / "data"))).resolve()
    artifacts_root = Path(_str("RLHF_ARTIFACTS_ROOT", str(data_dir / "artifacts"))).resolve()
    database_url = _check_url(
        "DATABASE_URL",
        _str("DATABASE_URL", f"sqlite:///{data_dir / 'db.sqlite3'}"),
        ("sqlite", "postgres", "postgresql", "pgsql"),
    )
    broker_url = _check_url(
        "CELERY_BROKER_URL",
        _str("CELERY_BROKER_URL", "filesystem://"),
        ("filesystem", "redis", "rediss", "memory"),
    )
    result_backend = _str("CELERY_RESULT_BACKEND", "")
    if result_backend:
        _check_url("CELERY_RESULT_BACKEND", result_backend, ("redis", "rediss"))
    debug = _bool("DJANGO_DEBUG", False)
    secret_key = _str("DJANGO_SECRET_KEY", "")
    if not secret_key:
        # The embedded default keeps a generated key in the data folder so sessions survive
        # restarts; production sets DJANGO_SECRET_KEY.
        secret_key = _local_secret(data_dir)
    return Env(
        data_dir=data_dir,
        artifacts_root=artifacts_root,
        database_url=database_url,
        broker_url=broker_url,
        result_backend=result_backend,
        secret_key=secret_key,
        debug=debug,
        allowed_hosts=_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver"),
        csrf_trusted_origins=_list("DJANGO_CSRF_TRUSTED_ORIGINS", ""),
        lease_seconds=_int("RLHF_LEASE_SECONDS", 600, minimum=5),
        worker_stale_seconds=_int("RLHF_WORKER_STALE_SECONDS", 15, minimum=2),
        job_stale_seconds=_int("RLHF_JOB_STALE_SECONDS", 60, minimum=5),
        job_max_attempts=_int("RLHF_JOB_MAX_ATTEMPTS", 2, minimum=1),
        job_time_limit_seconds=_int("RLHF_JOB_TIME_LIMIT_SECONDS", 6 * 3600, minimum=10),
        default_model_name=_str("RLHF_DEFAULT_MODEL", "SmolLM2-135M-Instruct"),
        log_level=_str("RLHF_LOG_LEVEL", "INFO").upper(),
        cache_url=_check_url("CACHE_URL", _str("CACHE_URL", ""), ("redis", "rediss"))
        if _str("CACHE_URL", "") else "",
        api_rate_limit=_int("RLHF_API_RATE_LIMIT", 120, minimum=0),
        serving_engine=_choice("RLHF_SERVING_ENGINE", "auto", ("auto", "vllm", "transformers", "external")),
        serving_engine_max=_int("RLHF_SERVING_ENGINE_MAX", 2, minimum=1),
        serving_engine_dtype=_choice("RLHF_SERVING_ENGINE_DTYPE", "float32", ("float32", "bfloat16", "float16", "auto")),
        serving_engine_kv_gib=_int("RLHF_SERVING_ENGINE_KV_GIB", 2, minimum=1),
        serving_engine_max_model_len=_int("RLHF_SERVING_ENGINE_MAX_MODEL_LEN", 2048, minimum=16),
        serving_engine_drain_seconds=_int("RLHF_SERVING_ENGINE_DRAIN_SECONDS", 120, minimum=0),
        serving_engine_idle_seconds=_int("RLHF_SERVING_ENGINE_IDLE_SECONDS", 900, minimum=10),
        serving_engine_url=_check_url("RLHF_SERVING_ENGINE_URL", _str("RLHF_SERVING_ENGINE_URL", ""),
                                      ("http", "https")) if _str("RLHF_SERVING_ENGINE_URL", "") else "",
        serving_engine_model=_str("RLHF_SERVING_ENGINE_MODEL", ""),
        serving_engine_api_key=_str("RLHF_SERVING_ENGINE_API_KEY", ""),
        serving_max_tokens=_int("RLHF_SERVING_MAX_TOKENS", 2048, minimum=1),
        serving_max_n=_int("RLHF_SERVING_MAX_N", 16, minimum=1),
        serving_max_choices=_int("RLHF_SERVING_MAX_CHOICES", 16, minimum=1),
        serving_max_batch=_int("RLHF_SERVING_MAX_BATCH", 8, minimum=1),
        serving_batch_wait_ms=_int("RLHF_SERVING_BATCH_WAIT_MS", 50, minimum=0),
        serving_cache_size=_int("RLHF_SERVING_CACHE_SIZE", 2, minimum=1),
        serving_device=_str("RLHF_SERVING_DEVICE", ""),
        admin_username=_str("RLHF_ADMIN_USERNAME", "admin"),
        admin_password=_str("RLHF_ADMIN_PASSWORD", ""),
        bind=_str("RLHF_BIND", "127.0.0.1:8000"),
        max_body_bytes=_int("RLHF_MAX_BODY_BYTES", 2 * 1024 * 1024, minimum=1024),
        import_max_bytes=_int("RLHF_IMPORT_MAX_BYTES", 200 * 1024 * 1024, minimum=1024),
        import_batch_lines=_int("RLHF_IMPORT_BATCH_LINES", 100, minimum=1),
        lease_max_seconds=_int("RLHF_LEASE_MAX_SECONDS", 3600, minimum=5),
        demonstration_max_chars=_int("RLHF_DEMONSTRATION_MAX_CHARS", 20_000, minimum=1),
        demonstrations_per_hour=_int("RLHF_DEMONSTRATIONS_PER_HOUR", 120, minimum=0),
        auth_fail_limit=_int("RLHF_AUTH_FAIL_LIMIT", 20, minimum=0),
        login_fail_limit=_int("RLHF_LOGIN_FAIL_LIMIT", 10, minimum=0),
        auth_fail_window_seconds=_int("RLHF_AUTH_FAIL_WINDOW_SECONDS", 300, minimum=1),
        client_ip_header=_str("RLHF_CLIENT_IP_HEADER", "").strip(),
        token_max_age_days=_int("RLHF_TOKEN_MAX_AGE_DAYS", 90, minimum=1),
        https=_bool("RLHF_HTTPS", False),
        proxy_ssl_header=_str("RLHF_PROXY_SSL_HEADER", "").strip(),
        hsts_seconds=_int("RLHF_HSTS_SECONDS", 31_536_000, minimum=0),
    )


def _local_secret(data_dir: Path) -> str:
    import secrets

    path = data_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        path.write_text(key)
        path.chmod(0o600)
        return key
    except OSError as exc:
        print(f"configuration error: cannot write {path}: {exc}", file=sys.stderr)
        raise ConfigError(f"RLHF_DATA_DIR={data_dir} is not writable; set RLHF_DATA_DIR") from None
