"""Attacker-style probes against a running instance on loopback (issue #15): caps, throttles, one
error shape. Prints one line per probe: id, what was sent, what came back.

    python scripts/abuse_probes.py http://127.0.0.1:8899 --admin admin --password ... \
        [--data-dir /tmp/abuse-data] [--only P1,P2]

It creates users, projects and keys on the instance it is pointed at: never run it against one
whose data matters. Some probes need the service started with short leases
(RLHF_LEASE_SECONDS=5), as the README's probe table says.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

HUGE = "99999999999999999999"


class Probe:
    def __init__(self, base: str, admin: str, password: str, data_dir: Path | None):
        self.base, self.data_dir = base.rstrip("/"), data_dir
        self.admin_password = password
        self.admin = admin
        self.admin_token = self.token(admin, password)
        self.tag = uuid.uuid4().hex[:6]
        self.ann_name, self.ann_password = f"probe-{self.tag}", "probe-password-1"
        self.post("/api/users", self.admin_token, json={"username": self.ann_name, "password": self.ann_password})
        self.ann_token = self.token(self.ann_name, self.ann_password)
        r = self.post("/api/projects", self.admin_token, json={"name": f"probe {self.tag}", "rankings_per_task": 2})
        self.project = r.json()["id"]
        lines = "\n".join(json.dumps({"prompt": f"q{i} {self.tag}", "responses": [f"a{i}", f"b{i}"]})
                          for i in range(20))
        self.post(f"/api/projects/{self.project}/import", self.admin_token, data=lines.encode(),
                  headers={"Content-Type": "application/x-ndjson"})

    def url(self, path: str) -> str:
        return self.base + path

    def token(self, username: str, password: str) -> str:
        r = requests.post(self.url("/api/auth/token"), json={"username": username, "password": password})
        r.raise_for_status()
        return r.json()["token"]

    def post(self, path: str, token: str | None = None, **kw):
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Token {token}"
        return requests.post(self.url(path), headers=headers, timeout=600, **kw)

    def get(self, path: str, token: str | None = None, **kw):
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Token {token}"
        return requests.get(self.url(path), headers=headers, timeout=600, **kw)

    def api_key(self) -> str:
        return self.post("/api/keys", self.admin_token, json={"name": f"probe {self.tag}"}).json()["key"]


def show(r: requests.Response, n: int = 110) -> str:
    ctype = r.headers.get("Content-Type", "").split(";")[0]
    body = r.text.strip().replace("\n", " ")
    if ctype == "text/html":
        title = re.search(r"<title>(.*?)</title>", r.text, re.S)
        body = f"HTML page{': ' + title.group(1).strip() if title else ''}"
    return f"{r.status_code} {ctype} {body[:n]}"


def p_import_body_cap(p: Probe) -> str:
    body = b'{"prompt": "x"}\n' + b"not json\n" * (50 * 1024 * 1024 // 9)
    t = time.monotonic()
    r = p.post(f"/api/projects/{p.project}/import", p.admin_token, data=body,
               headers={"Content-Type": "application/x-ndjson"})
    return f"{show(r, 80)} after {time.monotonic() - t:.1f} s"


def p_import_blocks_writes(p: Probe) -> str:
    r = p.post("/api/projects", p.admin_token, json={"name": f"big {p.tag}"})
    big = r.json()["id"]
    lines = "\n".join(json.dumps({"prompt": f"big {i} {p.tag} " + "w" * 200, "responses": [f"a{i}", f"b{i}"]})
                      for i in range(20_000)).encode()
    latencies: list[float] = []
    done = threading.Event()

    def annotate():
        r = p.post(f"/api/projects/{p.project}/tasks/next", p.ann_token)
        lease = r.json()["lease"]["id"]
        while not done.is_set():
            t = time.monotonic()
            p.post(f"/api/leases/{lease}/heartbeat", p.ann_token)
            latencies.append(time.monotonic() - t)
            time.sleep(0.05)

    th = threading.Thread(target=annotate)
    th.start()
    time.sleep(0.5)
    t = time.monotonic()
    r = p.post(f"/api/projects/{big}/import", p.admin_token, data=lines, headers={"Content-Type": "application/x-ndjson"})
    took = time.monotonic() - t
    time.sleep(0.5)
    done.set()
    th.join()
    return (f"import {r.status_code} in {took:.1f} s; annotator heartbeats: {len(latencies)}, "
            f"slowest {max(latencies):.2f} s")


def p_lease_forever(p: Probe) -> str:
    # Needs RLHF_LEASE_SECONDS=5 on the server (and, after the fix, RLHF_LEASE_MAX_SECONDS=12).
    name = f"hb-{p.tag}"
    p.post("/api/users", p.admin_token, json={"username": name, "password": p.ann_password})
    tok = p.token(name, p.ann_password)
    r = p.post(f"/api/projects/{p.project}/tasks/next", tok)
    lease = r.json()["lease"]["id"]
    statuses = []
    start = time.monotonic()
    while time.monotonic() - start < 20:
        statuses.append(p.post(f"/api/leases/{lease}/heartbeat", tok))
        time.sleep(2)
    codes = [r.status_code for r in statuses]
    return f"heartbeats every 2 s for 20 s: {codes}; last: {show(statuses[-1], 90)}"


def p_demo_length(p: Probe) -> str:
    prompt = _shown_prompt(p)
    r = p.post(f"/api/prompts/{prompt}/demonstrations", p.ann_token, json={"text": "x" * 2_000_000})
    return show(r)


def p_demo_rate(p: Probe) -> str:
    prompt = _shown_prompt(p)
    codes = [p.post(f"/api/prompts/{prompt}/demonstrations", p.ann_token, json={"text": f"demo {i}"}).status_code
             for i in range(80)]
    return f"80 demonstrations at once: {codes.count(201)}x201, {codes.count(429)}x429"


def _shown_prompt(p: Probe) -> int:
    r = p.post(f"/api/projects/{p.project}/tasks/next", p.ann_token)
    return r.json()["task"]["prompt_id"]


def p_demo_unseen_prompt(p: Probe) -> str:
    other = p.post("/api/projects", p.admin_token, json={"name": f"hidden {p.tag}"}).json()["id"]
    p.post(f"/api/projects/{other}/import", p.admin_token, data=json.dumps({"prompt": "secret"}).encode(),
           headers={"Content-Type": "application/x-ndjson"})
    r = p.get(f"/api/projects/{other}", p.admin_token)
    # the prompt ids of a fresh project follow the last ones: take the newest prompt
    prompt = _max_prompt_id(p)
    r = p.post(f"/api/prompts/{prompt}/demonstrations", p.ann_token, json={"text": "never shown this"})
    return show(r)


def _max_prompt_id(p: Probe) -> int:
    with sqlite3.connect(p.data_dir / "db.sqlite3") as db:
        return db.execute("SELECT max(id) FROM annotate_prompt").fetchone()[0]


def p_v1_rate_race(p: Probe) -> str:
    key = p.api_key()
    with ThreadPoolExecutor(64) as pool:
        codes = list(pool.map(lambda _: requests.get(p.url("/v1/models"),
                                                    headers={"Authorization": f"Bearer {key}"}).status_code,
                              range(200)))
    return f"200 concurrent /v1/models, limit 120: {codes.count(200)} passed, {codes.count(429)}x429"


def p_v1_bad_keys(p: Probe) -> str:
    codes = [requests.get(p.url("/v1/models"), headers={"Authorization": f"Bearer rlhf-guess{i}"}).status_code
             for i in range(150)]
    return f"150 wrong keys from one address: {codes.count(401)}x401, {codes.count(429)}x429"


def p_api_bad_tokens(p: Probe) -> str:
    codes = [p.get("/api/me", f"guess{i:036d}").status_code for i in range(150)]
    return f"150 wrong API tokens from one address: {codes.count(401)}x401, {codes.count(429)}x429"


def p_token_guessing(p: Probe) -> str:
    rs = [requests.post(p.url("/api/auth/token"), json={"username": p.ann_name, "password": f"guess{i}"})
          for i in range(30)]
    codes = [r.status_code for r in rs]
    last = rs[-1]
    return (f"30 wrong passwords: {codes.count(400)}x400, {codes.count(429)}x429; "
            f"Retry-After={last.headers.get('Retry-After')}")


def p_login_guessing(p: Probe) -> str:
    s = requests.Session()
    s.get(p.url("/login"))
    codes = []
    for i in range(30):
        r = s.post(p.url("/login"), data={"username": p.ann_name, "password": f"guess{i}",
                                          "csrfmiddlewaretoken": s.cookies.get("csrftoken")},
                   headers={"Referer": p.url("/login")}, allow_redirects=False)
        codes.append(r.status_code)
    return f"30 wrong passwords on /login: {codes.count(200)}x200 (form again), {codes.count(429)}x429"


def p_token_stored_plain(p: Probe) -> str:
    with sqlite3.connect(p.data_dir / "db.sqlite3") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        found = []
        for table in tables:
            cols = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
            for col in cols:
                if db.execute(f'SELECT 1 FROM "{table}" WHERE CAST("{col}" AS TEXT) = ?', [p.ann_token]).fetchone():
                    found.append(f"{table}.{col}")
    return f"token found in plain text in: {found or 'nowhere'}"


def p_token_after_password_change(p: Probe) -> str:
    name = f"pw-{p.tag}"
    p.post("/api/users", p.admin_token, json={"username": name, "password": p.ann_password})
    tok = p.token(name, p.ann_password)
    subprocess.run([sys.executable, "manage.py", "shell", "-c",
                    "from django.contrib.auth import get_user_model as g; u=g().objects.get(username="
                    f"{name!r}); u.set_password('another-password-2'); u.save()"],
                   check=True, env=_env(p), capture_output=True)
    return "old token after password change: " + show(p.get("/api/me", tok), 60)


def _env(p: Probe) -> dict:
    import os

    return {**os.environ, "RLHF_DATA_DIR": str(p.data_dir)}


def p_token_list_revoke(p: Probe) -> str:
    r1 = p.get("/api/auth/tokens", p.ann_token)
    return "GET /api/auth/tokens: " + show(r1, 70)


def p_admin_deactivate(p: Probe) -> str:
    name = f"deact-{p.tag}"
    uid = p.post("/api/users", p.admin_token, json={"username": name, "password": p.ann_password}).json()["id"]
    tok = p.token(name, p.ann_password)
    r = requests.patch(p.url(f"/api/users/{uid}"), json={"is_active": False},
                       headers={"Authorization": f"Token {p.admin_token}"})
    return f"PATCH /api/users/{uid} is_active=false: {show(r, 60)}; their token then: {show(p.get('/api/me', tok), 50)}"


def p_huge_id_project(p: Probe) -> str:
    return show(p.get(f"/api/projects/{HUGE}", p.admin_token))


def p_huge_id_heartbeat(p: Probe) -> str:
    return show(p.post(f"/api/leases/{HUGE}/heartbeat", p.ann_token))


def p_huge_id_in_body(p: Probe) -> str:
    return show(p.post("/api/tasks/1/rankings", p.ann_token, json={"lease": int(HUGE), "ranking": [[1], [2]]}))


def p_huge_id_query(p: Probe) -> str:
    return show(p.post(f"/api/projects/{p.project}/import?round={HUGE}", p.admin_token, data=b'{"prompt":"x"}',
                       headers={"Content-Type": "application/x-ndjson"}))


def p_v1_big_body(p: Probe) -> str:
    key = p.api_key()
    body = json.dumps({"model": "latest", "messages": [{"role": "user", "content": "x" * 3 * 1024 * 1024}]})
    return show(requests.post(p.url("/v1/chat/completions"), data=body,
                              headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}))


def p_api_big_body(p: Probe) -> str:
    body = json.dumps({"name": "x" * 3 * 1024 * 1024})
    return show(p.post("/api/projects", p.admin_token, data=body, headers={"Content-Type": "application/json"}))


def p_api_deep_json(p: Probe) -> str:
    body = "[" * 100_000 + "]" * 100_000
    return show(p.post("/api/tasks/1/rankings", p.ann_token, data=body, headers={"Content-Type": "application/json"}))


def p_api_unknown_url(p: Probe) -> str:
    return show(p.get("/api/no-such-thing", p.admin_token))


def p_api_bad_host(p: Probe) -> str:
    return show(p.get("/api/projects", p.admin_token, headers={"Host": "evil.example"}))


def p_api_csrf(p: Probe) -> str:
    s = requests.Session()
    s.get(p.url("/login"))
    s.post(p.url("/login"), data={"username": p.admin, "password": p.admin_password,
                                  "csrfmiddlewaretoken": s.cookies.get("csrftoken")},
           headers={"Referer": p.url("/login")})
    return "session POST without CSRF token: " + show(s.post(p.url("/api/projects"), json={"name": "x"}))


def p_page_404(p: Probe) -> str:
    r = requests.get(p.url("/no-such-page"))
    styled = "app.css" in r.text
    return f"{show(r, 50)}; styled: {styled}"


def p_page_403(p: Probe) -> str:
    s = requests.Session()
    s.get(p.url("/login"))
    s.post(p.url("/login"), data={"username": p.ann_name, "password": p.ann_password,
                                  "csrfmiddlewaretoken": s.cookies.get("csrftoken")},
           headers={"Referer": p.url("/login")})
    r = s.get(p.url("/manage/projects"))
    return f"annotator opens /manage/projects: {show(r, 50)}; styled: {'app.css' in r.text}"


def p_healthz_paths(p: Probe) -> str:
    r = requests.get(p.url("/healthz"))
    leaks = sorted(set(re.findall(r"(/(?:tmp|work|home|var|srv|data)[\w./-]*)", r.text)))
    return f"anonymous /healthz {r.status_code}; absolute paths in it: {leaks or 'none'}"


def p_tokenize_paths(p: Probe) -> str:
    r = p.post("/api/tokenize", p.ann_token, json={"model": "latest", "text": "hi"})
    leaks = sorted(set(re.findall(r"(/(?:tmp|work|home|var|srv|data)[\w./-]*)", r.text)))
    return f"annotator POST /api/tokenize: {r.status_code}; absolute paths: {leaks or 'none'}"


def p_v1_paths(p: Probe) -> str:
    key = p.api_key()
    r = requests.post(p.url("/v1/chat/completions"), json={"model": "latest", "messages": [{"role": "user", "content": "hi"}]},
                      headers={"Authorization": f"Bearer {key}"})
    leaks = sorted(set(re.findall(r"(/(?:tmp|work|home|var|srv|data)[\w./-]*)", r.text)))
    return f"/v1/chat/completions: {r.status_code}; absolute paths: {leaks or 'none'}"


def p_docs_cdn(p: Probe) -> str:
    r = requests.get(p.url("/api/docs"))
    hosts = sorted(set(re.findall(r"https?://([\w.-]+)/", r.text)))
    return f"/api/docs loads from: {hosts or 'our origin only'}; CSP: {r.headers.get('Content-Security-Policy')}"


def p_schema_v1(p: Probe) -> str:
    r = requests.get(p.url("/api/schema"), headers={"Accept": "application/json"})
    paths = [k for k in re.findall(r"^  (/[^:]+):$", r.text, re.M)]
    return f"/v1 paths in the schema: {[x for x in paths if x.startswith('/v1')] or 'none'}"


def p_page_csp(p: Probe) -> str:
    r = requests.get(p.url("/login"))
    return f"/login CSP: {r.headers.get('Content-Security-Policy')}"


def p_proxy_tls(p: Probe) -> str:
    s = requests.Session()
    r = s.get(p.url("/login"), headers={"X-Forwarded-Proto": "https"})
    cookie = r.headers.get("Set-Cookie", "")
    return (f"behind a TLS proxy (X-Forwarded-Proto: https): HSTS={r.headers.get('Strict-Transport-Security')}; "
            f"csrf cookie Secure: {'Secure' in cookie}")


PROBES = {
    "P1": ("POST /api/projects/{id}/import, 50 MiB NDJSON body", p_import_body_cap),
    "P2": ("20k-line import while an annotator heartbeats", p_import_blocks_writes),
    "P3": ("heartbeat one lease every 2 s for 20 s", p_lease_forever),
    "P4": ("demonstration of 2 MB", p_demo_length),
    "P5": ("80 demonstrations in a row", p_demo_rate),
    "P6": ("demonstration on a prompt of a project never shown", p_demo_unseen_prompt),
    "P7": ("200 concurrent /v1/models, one key", p_v1_rate_race),
    "P8": ("150 wrong /v1 keys", p_v1_bad_keys),
    "P9": ("150 wrong /api tokens", p_api_bad_tokens),
    "P10": ("30 wrong passwords on /api/auth/token", p_token_guessing),
    "P11": ("30 wrong passwords on /login", p_login_guessing),
    "P12": ("is the token stored in plain text", p_token_stored_plain),
    "P13": ("token after a password change", p_token_after_password_change),
    "P14": ("list own tokens", p_token_list_revoke),
    "P15": ("admin deactivates a user", p_admin_deactivate),
    "P16": (f"GET /api/projects/{HUGE}", p_huge_id_project),
    "P17": (f"POST /api/leases/{HUGE}/heartbeat", p_huge_id_heartbeat),
    "P18": (f'ranking with "lease": {HUGE}', p_huge_id_in_body),
    "P19": (f"import ?round={HUGE}", p_huge_id_query),
    "P20": ("3 MiB JSON body on /v1/chat/completions", p_v1_big_body),
    "P21": ("3 MiB JSON body on /api/projects", p_api_big_body),
    "P22": ("JSON nested 100k deep on /api", p_api_deep_json),
    "P23": ("GET /api/no-such-thing", p_api_unknown_url),
    "P24": ("Host: evil.example on /api", p_api_bad_host),
    "P25": ("session POST /api without CSRF", p_api_csrf),
    "P26": ("GET /no-such-page", p_page_404),
    "P27": ("annotator on an admin page", p_page_403),
    "P28": ("anonymous /healthz with the model files missing", p_healthz_paths),
    "P29": ("annotator tokenize with the model files missing", p_tokenize_paths),
    "P30": ("/v1 completion with the model files missing", p_v1_paths),
    "P31": ("/api/docs", p_docs_cdn),
    "P32": ("/api/schema", p_schema_v1),
    "P33": ("page CSP", p_page_csp),
    "P34": ("TLS proxy headers", p_proxy_tls),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--admin", default="admin")
    ap.add_argument("--password", required=True)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    probe = Probe(args.base, args.admin, args.password, args.data_dir)
    only = [x for x in args.only.split(",") if x]
    for pid, (what, fn) in PROBES.items():
        if only and pid not in only:
            continue
        try:
            result = fn(probe)
        except Exception as exc:  # a probe that breaks says so and the others still run
            result = f"probe failed: {type(exc).__name__}: {exc}"
        print(f"{pid}\t{what}\t{result}", flush=True)


if __name__ == "__main__":
    main()
