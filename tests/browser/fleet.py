"""The system under test: `upstream-sim`, a fresh PostgreSQL database migrated by `fleetgate
migrate`, a `redis-server` of the suite's own on a free port (a test stops and restarts it), and
real `fleetgate serve` replicas on free loopback ports. Every process is stopped when the suite
ends; logs are kept in `target/browser-tests/logs/` (the token check reads them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

JWT_SECRET = "browser-test-jwt-secret-of-at-least-32-bytes"
ADMIN_TOKEN = "browser-test-admin-" + secrets.token_hex(12)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def user_token(sub: str, ttl_s: int = 3600) -> str:
    """An HS256 JWT for `sub`, signed with the fleet's secret."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": sub, "exp": int(time.time()) + ttl_s, "role": "authenticated"}
    payload = b64url(json.dumps(claims).encode())
    sig = hmac.new(JWT_SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None, token: str | None = None, headers=None, timeout=15):
    """(status, headers, parsed body or text) of one request; never raises on an HTTP status."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, e.headers, e.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, hdrs, json.loads(text)
    except ValueError:
        return status, hdrs, text


class Fleet:
    """The processes of one suite run."""

    def __init__(self, bin_dir: Path, work: Path, replicas: int, env: dict[str, str]):
        self.bin_dir = bin_dir
        self.logs = work / "logs"
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.replica_count = replicas
        self.extra_env = env
        self.procs: list[subprocess.Popen] = []
        self.replicas: list[str] = []
        self.sim = ""
        self.db_name = f"fg_browser_{os.getpid()}_{secrets.token_hex(3)}"
        self.admin_url = os.environ.get(
            "FLEETGATE_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
        )
        self.prefix = f"fgbrowser-{os.getpid()}-{secrets.token_hex(3)}"
        self.redis_port = free_port()
        self.redis: subprocess.Popen | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "Fleet":
        self._psql(f'CREATE DATABASE "{self.db_name}"')
        self.redis_start()
        self._start_sim()
        env = self.env()
        subprocess.run(
            [str(self.bin_dir / "fleetgate"), "migrate"],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        for i in range(self.replica_count):
            port = free_port()
            self.replicas.append(f"http://127.0.0.1:{port}")
            log = open(self.logs / f"replica-{i}.log", "ab")
            self.procs.append(
                subprocess.Popen(
                    [str(self.bin_dir / "fleetgate"), "serve"],
                    env={**env, "FLEETGATE_LISTEN": f"127.0.0.1:{port}"},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        for base in self.replicas:
            self._wait_ready(base)
        self.wait_fleet_view()
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        # Redis stays up while the replicas drain (they release their slots there).
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.redis_stop()
        try:
            self._psql(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        except subprocess.CalledProcessError:
            pass

    def redis_start(self) -> None:
        """Starts the suite's Redis (empty: nothing is saved) and waits until it answers."""
        log = open(self.logs / "redis.log", "ab")
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def redis_stop(self) -> None:
        """Kills the suite's Redis at once (SIGKILL, as a crash)."""
        if self.redis is not None and self.redis.poll() is None:
            self.redis.kill()
            self.redis.wait()
        self.redis = None

    def env(self) -> dict[str, str]:
        u = urlsplit(self.admin_url)
        db_url = urlunsplit((u.scheme, u.netloc, "/" + self.db_name, u.query, u.fragment))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "FLEETGATE_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}",
            "FLEETGATE_REDIS_PREFIX": self.prefix,
            "FLEETGATE_DATABASE_URL": db_url,
            "FLEETGATE_DATABASE_MAX_CONNECTIONS": "4",
            "FLEETGATE_JWT_SECRET": JWT_SECRET,
            "FLEETGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            # The browser contexts play clients behind a proxy: each sends its own
            # X-Forwarded-For, believed from 127.0.0.1.
            "FLEETGATE_TRUSTED_PROXIES": "127.0.0.1/32",
            "FLEETGATE_PUBMED_URL": f"{self.sim}/pubmed",
            "FLEETGATE_SEMANTIC_SCHOLAR_URL": f"{self.sim}/s2/graph/v1",
            "FLEETGATE_LLM_URL": f"{self.sim}/v1",
            "FLEETGATE_LLM_MODEL": "sim-model",
            "FLEETGATE_SHUTDOWN_GRACE_MS": "3000",
            # Request spans (with their URL paths) on the log lines, for the token check.
            "RUST_LOG": "info,api=debug",
        }
        env.update(self.extra_env)
        return env

    def _psql(self, sql: str) -> None:
        subprocess.run(
            ["psql", self.admin_url, "-v", "ON_ERROR_STOP=1", "-qc", sql],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def _start_sim(self) -> None:
        log = open(self.logs / "upstream-sim.log", "ab")
        p = subprocess.Popen(
            [str(self.bin_dir / "upstream-sim"), "--listen", "127.0.0.1:0", "--fault-seed", "7"],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        self.procs.append(p)
        assert p.stdout is not None
        first = p.stdout.readline().decode().strip()
        url = first.rsplit(" ", 1)[-1]
        if not url.startswith("http://"):
            raise RuntimeError(f"upstream-sim said: {first!r}")
        self.sim = url

        def drain(out=p.stdout, sink=log):
            for line in out:
                sink.write(line)

        threading.Thread(target=drain, daemon=True).start()

    def _wait_ready(self, base: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if http("GET", base + "/readyz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{base} not ready within {timeout} s (logs in {self.logs})")

    def wait_fleet_view(self, timeout: float = 20) -> None:
        """Until every replica has published its status record."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fleet = self.health(0)["components"].get("fleet")
            if fleet and fleet["liveReplicas"] == len(self.replicas):
                return
            time.sleep(0.1)
        raise RuntimeError("the fleet view never listed every replica")

    # -- observation and control ------------------------------------------------------------

    def health(self, i: int) -> dict:
        status, _, body = http("GET", self.replicas[i] + "/api/system-health", token=ADMIN_TOKEN)
        assert status == 200, (status, body)
        return body

    def sim_control(self, patch: dict) -> None:
        status, _, body = http("POST", self.sim + "/control", patch)
        assert status == 200, (status, body)

    def sim_reset(self) -> None:
        status, _, body = http("POST", self.sim + "/control/reset", {})
        assert status in (200, 204), (status, body)

    def admin_action(self, action: str) -> dict:
        status, _, body = http(
            "POST", self.replicas[0] + "/api/system-health", {"action": action}, token=ADMIN_TOKEN
        )
        assert status == 200, (status, body)
        return body

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))
