"""docker-compose.yml describes the production stack (no Docker engine here: parse and check)."""

from pathlib import Path

import yaml

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _command(name: str) -> str:
    cmd = SERVICES[name]["command"]
    return " ".join(cmd) if isinstance(cmd, list) else cmd


def test_the_stack_has_its_services():
    assert {"postgres", "redis", "web", "worker-gpu", "worker-default"} <= set(SERVICES)


def test_every_service_has_a_healthcheck():
    for name, service in SERVICES.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"


def test_web_runs_gunicorn_and_workers_consume_their_queues():
    assert "gunicorn config.wsgi" in _command("web")
    assert "-Q gpu" in _command("worker-gpu") and "--pool solo" in _command("worker-gpu")
    assert "-Q default" in _command("worker-default")


def test_gpu_worker_reserves_an_nvidia_device():
    devices = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_app_services_share_database_broker_and_artifacts():
    envs = [SERVICES[name]["environment"] for name in ("web", "worker-gpu", "worker-default")]
    for key in ("DATABASE_URL", "CELERY_BROKER_URL", "RLHF_ARTIFACTS_ROOT", "DJANGO_SECRET_KEY"):
        assert len({env[key] for env in envs}) == 1, key
    assert envs[0]["DATABASE_URL"].startswith("postgres://") and "@postgres:" in envs[0]["DATABASE_URL"]
    assert envs[0]["CELERY_BROKER_URL"].startswith("redis://redis:")
    for name in ("web", "worker-gpu", "worker-default"):
        assert "artifacts:/artifacts" in SERVICES[name]["volumes"]
    assert {"pgdata", "artifacts"} <= set(COMPOSE["volumes"])
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]


def test_app_services_wait_for_healthy_database_and_broker():
    for name in ("web", "worker-gpu", "worker-default"):
        deps = SERVICES[name]["depends_on"]
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy"


def test_no_fixed_database_password():
    # Issue #15: the password comes from the operator's .env, and the stack refuses to start without one.
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    url = SERVICES["web"]["environment"]["DATABASE_URL"]
    assert url == "postgres://rlhf:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}@postgres:5432/rlhf"


def test_the_tls_proxy_settings_are_passed_through():
    env = SERVICES["web"]["environment"]
    assert {"RLHF_HTTPS", "RLHF_PROXY_SSL_HEADER", "RLHF_CLIENT_IP_HEADER"} <= set(env)
