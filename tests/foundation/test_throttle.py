"""Counters and throttles (issue #15, items 5 and 6): atomic counting on every cache backend under
concurrent threads, failed authentication counted per client address on /api and /v1, password
guessing throttled by username and by address on /api/auth/token and the login page."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.cache import cache
from django.test import Client, override_settings

from config.throttle import client_address, counter_hit, counter_peek

REDIS_URL = "redis://127.0.0.1:6379/10"


def _redis_up() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


BACKENDS = {
    "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "throttle-test"},
    "file": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache"},
    "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
              "KEY_PREFIX": "throttle-test"},
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    config = dict(BACKENDS[request.param])
    if request.param == "file":
        config["LOCATION"] = str(tmp_path / "cache")
    if request.param == "redis" and not _redis_up():
        pytest.skip("no Redis at " + REDIS_URL)
    with override_settings(CACHES={"default": config}):
        cache.clear()
        yield request.param
        cache.clear()


def test_counting_is_atomic_under_concurrent_threads(backend):
    name = f"race-{backend}"
    with ThreadPoolExecutor(32) as pool:
        counts = list(pool.map(lambda _: counter_hit(name, window_seconds=600).count, range(300)))
    # Each event got its own number: no two threads read the same count.
    assert sorted(counts) == list(range(1, 301))
    assert counter_peek(name, window_seconds=600).count == 300


def test_v1_rate_limit_lets_exactly_the_limit_through_concurrently(backend, settings):
    from worker.serving.errors import OpenAIError
    from worker.serving.ratelimit import rate_limit_hit

    settings.RLHF_API_RATE_LIMIT = 120

    def one(_):
        try:
            rate_limit_hit(rate_key=f"race-{backend}")
            return True
        except OpenAIError as exc:
            assert exc.status == 429
            return False

    with ThreadPoolExecutor(32) as pool:
        passed = sum(pool.map(one, range(200)))
    assert passed == 120


def test_windows_are_separate():
    assert counter_hit("w", window_seconds=60, now=0).count == 1
    assert counter_hit("w", window_seconds=60, now=59).count == 2
    fresh = counter_hit("w", window_seconds=60, now=60)
    assert fresh.count == 1 and fresh.retry_after == 60


def test_client_address_behind_a_proxy(rf, settings):
    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    assert client_address(request) == "10.0.0.1"
    settings.RLHF_CLIENT_IP_HEADER = "X-Forwarded-For"
    # The last address is the one our proxy wrote; the first is what the client claimed.
    assert client_address(request) == "203.0.113.9"


# --- failed authentication per address -------------------------------------------------------


@pytest.fixture
def limits(settings):
    settings.RLHF_AUTH_FAIL_LIMIT = 5
    settings.RLHF_LOGIN_FAIL_LIMIT = 3
    settings.RLHF_AUTH_FAIL_WINDOW_SECONDS = 300
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return settings


def _assert_throttled(response):
    assert response.status_code == 429, response.content
    assert int(response["Retry-After"]) > 0
    return response


@pytest.mark.django_db
@pytest.mark.sqlite
def test_wrong_api_tokens_are_counted_per_address(limits, django_user_model):
    from annotate.services.users import token_obtain

    user = django_user_model.objects.create_user("tok-user", password="right-password-1")
    good = token_obtain(username="tok-user", password="right-password-1")
    attacker = Client(REMOTE_ADDR="192.0.2.66")
    codes = [attacker.get("/api/me", HTTP_AUTHORIZATION=f"Token wrong{i}").status_code for i in range(5)]
    assert codes == [401] * 5
    blocked = _assert_throttled(attacker.get("/api/me", HTTP_AUTHORIZATION="Token wrong-again"))
    body = blocked.json()
    assert set(body) == {"error"} and body["error"]["code"] == "too_many_failed_attempts"
    # Refused before the lookup: a good token from the blocked address waits too...
    _assert_throttled(attacker.get("/api/me", HTTP_AUTHORIZATION=f"Token {good}"))
    # ...while other addresses are not affected.
    other = Client(REMOTE_ADDR="192.0.2.7")
    assert other.get("/api/me", HTTP_AUTHORIZATION=f"Token {good}").json()["username"] == user.username
    assert other.get("/api/me", HTTP_AUTHORIZATION="Token wrong").status_code == 401


@pytest.mark.django_db
@pytest.mark.sqlite
def test_wrong_v1_keys_are_counted_per_address(limits):
    attacker = Client(REMOTE_ADDR="192.0.2.66")
    codes = [attacker.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer rlhf-guess{i}").status_code for i in range(5)]
    assert codes == [401] * 5
    blocked = _assert_throttled(attacker.get("/v1/models", HTTP_AUTHORIZATION="Bearer rlhf-guess"))
    # /v1 keeps OpenAI's error shape.
    assert set(blocked.json()["error"]) == {"message", "type", "param", "code"}
    assert Client(REMOTE_ADDR="192.0.2.7").get("/v1/models", HTTP_AUTHORIZATION="Bearer x").status_code == 401


# --- password guessing -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.sqlite
def test_token_endpoint_throttles_guesses_by_username(limits, django_user_model):
    django_user_model.objects.create_user("victim", password="right-password-1")
    for i in range(3):
        client = Client(REMOTE_ADDR=f"198.51.100.{i}")  # a different address each time
        assert client.post("/api/auth/token", {"username": "victim", "password": f"guess{i}"},
                           content_type="application/json").status_code == 400
    # The username has used its failures, whatever the address; even the right password waits.
    fresh = Client(REMOTE_ADDR="198.51.100.200")
    response = _assert_throttled(fresh.post("/api/auth/token", {"username": "victim", "password": "right-password-1"},
                                            content_type="application/json"))
    assert response.json()["error"]["code"] == "too_many_failed_attempts"
    django_user_model.objects.create_user("bystander", password="right-password-1")
    assert fresh.post("/api/auth/token", {"username": "bystander", "password": "right-password-1"},
                      content_type="application/json").status_code == 200


@pytest.mark.django_db
@pytest.mark.sqlite
def test_token_endpoint_throttles_guesses_by_address(limits, django_user_model):
    limits.RLHF_LOGIN_FAIL_LIMIT = 100
    client = Client(REMOTE_ADDR="198.51.100.9")
    for i in range(5):  # a different username each time
        assert client.post("/api/auth/token", {"username": f"user{i}", "password": "x"},
                           content_type="application/json").status_code == 400
    _assert_throttled(client.post("/api/auth/token", {"username": "user9", "password": "x"},
                                  content_type="application/json"))


@pytest.mark.django_db
@pytest.mark.sqlite
def test_login_page_throttles_guesses(limits, django_user_model):
    django_user_model.objects.create_user("victim", password="right-password-1")
    client = Client(REMOTE_ADDR="198.51.100.10")
    for i in range(3):
        response = client.post("/login", {"username": "victim", "password": f"guess{i}"})
        assert response.status_code == 200 and b"do not match" in response.content
    response = _assert_throttled(client.post("/login", {"username": "victim", "password": "right-password-1"}))
    assert b"Too many failed sign-ins" in response.content and b"app.css" in response.content
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
@pytest.mark.sqlite
def test_the_django_admin_login_goes_through_the_throttled_page(limits, django_user_model):
    django_user_model.objects.create_superuser("root", password="right-password-1")
    client = Client(REMOTE_ADDR="198.51.100.11")
    response = client.post("/django-admin/login/?next=/django-admin/", {"username": "root", "password": "guess"})
    assert response.status_code == 302 and response["Location"] == "/login?next=/django-admin/"
    assert "_auth_user_id" not in client.session  # no password was checked there
    for i in range(3):
        client.post("/login", {"username": "root", "password": f"guess{i}"})
    _assert_throttled(client.post("/login?next=/django-admin/", {"username": "root", "password": "right-password-1"}))
