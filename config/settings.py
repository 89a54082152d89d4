"""Django settings. Every value comes from config.env (the environment, read in one place);
production differs from the embedded default only by environment variables."""

from __future__ import annotations

import dj_database_url

from . import env as _env

ENV = _env.load()
BASE_DIR = _env.BASE_DIR
DATA_DIR = ENV.data_dir
ARTIFACTS_ROOT = ENV.artifacts_root

SECRET_KEY = ENV.secret_key
DEBUG = ENV.debug
ALLOWED_HOSTS = ENV.allowed_hosts
CSRF_TRUSTED_ORIGINS = ENV.csrf_trusted_origins

# Behind a TLS proxy (README, "Production behind a TLS proxy"): RLHF_PROXY_SSL_HEADER names the
# header the proxy sets to "https"; RLHF_HTTPS makes cookies secure, sends HSTS and redirects
# plain http (except /healthz, which the proxy and compose probe over http).
if ENV.proxy_ssl_header:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + ENV.proxy_ssl_header.upper().replace("-", "_"), "https")
if ENV.https:
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = ENV.hsts_seconds
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "annotate",
    "training",
    "registry",
    "serving",
    "ops",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database(url: str) -> dict:
    db = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    if db["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers run beside one writer; IMMEDIATE takes the write lock when a
        # transaction starts, so two processes handing out leases serialise instead of failing
        # with "database is locked" half way through.
        db["ENGINE"] = "config.sqlite_backend"  # queues writers on a file lock; see its docstring
        db.pop("CONN_HEALTH_CHECKS", None)
        db["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    return db


DATABASES = {"default": _database(ENV.database_url)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"  # collectstatic output (images); WhiteNoise serves it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
LOGIN_URL = "/login"
CSRF_FAILURE_VIEW = "config.errors.csrf_failure"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "annotate.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser", "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    # JSON only: DRF's browsable pages would answer a browser's errors as HTML (/api/docs is the
    # interactive reference).
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "RLHF service API",
    "DESCRIPTION": "Annotation, training jobs, model registry and the OpenAI-compatible model API.",
    "VERSION": "0.1.0",
    # Swagger UI from our vendored copy (frontend/static/frontend/vendor/swagger-ui), not a CDN.
    "SWAGGER_UI_DIST": "/static/frontend/vendor/swagger-ui",
    "SWAGGER_UI_FAVICON_HREF": "/static/frontend/vendor/swagger-ui/favicon-32x32.png",
    # /v1 is plain Django views (OpenAI's shape); its paths are described by hand.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "serving.schema.add_v1_paths"],
}

# Celery: the embedded default uses kombu's filesystem transport (no server to run);
# CELERY_BROKER_URL=redis://… switches to Redis with no code change.
CELERY_BROKER_URL = ENV.broker_url
CELERY_RESULT_BACKEND = ENV.result_backend or None
CELERY_TASK_IGNORE_RESULT = not ENV.result_backend
if ENV.broker_url.startswith("filesystem://"):
    _broker_dir = DATA_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        "polling_interval": 0.25,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}

# One cache all web processes share (rate limits, the model-swap signal): a file cache on one
# machine, Redis when CACHE_URL says so.
if ENV.cache_url:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": ENV.cache_url}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                          "LOCATION": str(DATA_DIR / "cache")}}
RLHF_API_RATE_LIMIT = ENV.api_rate_limit
RLHF_SERVING_ENGINE = ENV.serving_engine  # "auto" is resolved by serving.engine_choice
RLHF_SERVING_ENGINE_MAX = ENV.serving_engine_max
RLHF_SERVING_ENGINE_DTYPE = ENV.serving_engine_dtype
RLHF_SERVING_ENGINE_KV_GIB = ENV.serving_engine_kv_gib
RLHF_SERVING_ENGINE_MAX_MODEL_LEN = ENV.serving_engine_max_model_len
RLHF_SERVING_ENGINE_DRAIN_SECONDS = ENV.serving_engine_drain_seconds
RLHF_SERVING_ENGINE_IDLE_SECONDS = ENV.serving_engine_idle_seconds
RLHF_SERVING_ENGINE_URL = ENV.serving_engine_url
RLHF_SERVING_ENGINE_MODEL = ENV.serving_engine_model
RLHF_SERVING_ENGINE_API_KEY = ENV.serving_engine_api_key
RLHF_SERVING_MAX_TOKENS = ENV.serving_max_tokens
RLHF_SERVING_MAX_N = ENV.serving_max_n
RLHF_SERVING_MAX_CHOICES = ENV.serving_max_choices
RLHF_SERVING_MAX_BATCH = ENV.serving_max_batch
RLHF_SERVING_CACHE_SIZE = ENV.serving_cache_size
RLHF_SERVING_BATCH_WAIT_MS = ENV.serving_batch_wait_ms
RLHF_SERVING_DEVICE = ENV.serving_device

RLHF_LEASE_SECONDS = ENV.lease_seconds
RLHF_WORKER_STALE_SECONDS = ENV.worker_stale_seconds
RLHF_JOB_STALE_SECONDS = ENV.job_stale_seconds
RLHF_JOB_MAX_ATTEMPTS = ENV.job_max_attempts
RLHF_JOB_TIME_LIMIT_SECONDS = ENV.job_time_limit_seconds
RLHF_DEFAULT_MODEL = ENV.default_model_name
ENV_ADMIN_USERNAME = ENV.admin_username
ENV_ADMIN_PASSWORD = ENV.admin_password
RLHF_BIND = ENV.bind

# Limits against abuse and bad input (README, "Configuration").
DATA_UPLOAD_MAX_MEMORY_SIZE = ENV.max_body_bytes  # Django answers 413 beyond it (config/errors.py)
RLHF_IMPORT_MAX_BYTES = ENV.import_max_bytes
RLHF_IMPORT_BATCH_LINES = ENV.import_batch_lines
RLHF_LEASE_MAX_SECONDS = ENV.lease_max_seconds
RLHF_DEMONSTRATION_MAX_CHARS = ENV.demonstration_max_chars
RLHF_DEMONSTRATIONS_PER_HOUR = ENV.demonstrations_per_hour
RLHF_AUTH_FAIL_LIMIT = ENV.auth_fail_limit
RLHF_LOGIN_FAIL_LIMIT = ENV.login_fail_limit
RLHF_AUTH_FAIL_WINDOW_SECONDS = ENV.auth_fail_window_seconds
RLHF_CLIENT_IP_HEADER = ENV.client_ip_header
RLHF_TOKEN_MAX_AGE_DAYS = ENV.token_max_age_days

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": ENV.log_level},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
