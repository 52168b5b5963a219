"""Start or locate the MLflow tracking server: SQLite (or a given database) + served artifacts.

The server runs detached (own session), so it outlives the CLI that started it and the
next `tune-run` reuses it through `<home>/mlflow/server.json`. It binds to 127.0.0.1 unless
another host is asked for; a server reachable from the network should run with MLflow's
basic-auth app (`auth=True`), else a warning is logged.

Clients: `configure_client()` gives this process's MLflow client medtune's settings (quiet
console, fast failure), and `redact()` hides the credentials of URLs in anything shown or saved.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from filelock import FileLock

HOST = "127.0.0.1"
DEFAULT_PORT = 5000
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
REACH_TIMEOUT_S = 10.0  # how long a configured MLFLOW_TRACKING_URI may take to answer
BACKEND_ENV = "MEDTUNE_MLFLOW_BACKEND"  # backend store URI of a new server, e.g. postgresql://...
USER_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
# Job execution serves GenAI features (judges, trace rollups) through a huey consumer with
# ten workers; experiment tracking does not need it and it slows the start on small machines.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# Never route loopback health checks through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # bound address -> address to connect to
_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)  # user[:password]@
# The MLflow client settings of medtune's driver (configure_client), unless the user set them.
# Its console belongs to the progress view: no per-run links on every set_terminated and no
# progress bar per config.json download. A call to a server that is gone fails within seconds,
# not after the client's default 7 retries with exponential backoff (minutes): the tracker
# queues the write instead, and the start of an experiment reports the unreachable server at once.
CLIENT_ENV = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

log = logging.getLogger(__name__)


def configure_client() -> None:
    """Give the MLflow client in this process medtune's settings (CLIENT_ENV) where the
    environment sets none; call it before the first client. Calling it again changes nothing."""
    for key, value in CLIENT_ENV.items():
        os.environ.setdefault(key, value)


def redact(value):
    """`value` with the user:password (or token) part of any URL in it replaced by `***`, fit for
    files and messages; a value that is not a string is returned as it is."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", value) if isinstance(value, str) else value


def ensure_server(
    home: str,
    port: int | None = None,
    host: str | None = None,
    auth: bool | None = None,
    backend_uri: str | None = None,
) -> str:
    """Return a tracking URI: `$MLFLOW_TRACKING_URI`, the recorded live server of the medtune
    `home`, or a new one.

    A configured `MLFLOW_TRACKING_URI` must answer within REACH_TIMEOUT_S, else RuntimeError.
    A new server keeps `artifacts/`, `server.json`, `server.log` and, unless `backend_uri`
    (default `$MEDTUNE_MLFLOW_BACKEND`, e.g. postgresql://user@host/db) names another store,
    `mlflow.db` in `<home>/mlflow/`. It binds to `host` (default 127.0.0.1) on `port` (else
    5000 if free, else a free one) and, with `auth`, runs MLflow's basic-auth app whose admin
    is `$MLFLOW_TRACKING_USERNAME` / `$MLFLOW_TRACKING_PASSWORD`. Arguments left None accept
    the recorded server as it is; one that differs from it is an error.
    """
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        _check_reachable(uri)
        log.info("Tracking: the MLflow server at %s (MLFLOW_TRACKING_URI)", redact(uri))
        return uri
    state_dir = _state_dir(home)
    state_dir.mkdir(parents=True, exist_ok=True)
    backend_uri = _with_driver(backend_uri or os.environ.get(BACKEND_ENV) or None)
    wanted = {"port": port, "host": host, "auth": auth, "backend": backend_uri and redact(backend_uri)}
    with FileLock(state_dir / "server.lock"):
        record = _read_record(state_dir)
        if record and _healthy(record["uri"]):
            _check_matches(record, wanted, state_dir)
            _warn_if_exposed(record)
            log.info("Tracking: reusing the MLflow server at %s (pid %s)", record["uri"], record["pid"])
            return record["uri"]
        host = host or HOST
        if port is not None and not _port_free(host, port):
            raise RuntimeError(
                f"Port {port} on {host} is already in use by a process that is not the MLflow "
                f"server recorded in {state_dir}; pass a free port or none to pick one."
            )
        if port is None:
            port = DEFAULT_PORT if _port_free(host, DEFAULT_PORT) else _free_port(host)
        backend_uri = backend_uri or f"sqlite:///{state_dir / 'mlflow.db'}"
        log.info("Tracking: starting an MLflow server on %s:%s for %s", host, port, state_dir)
        record = _start(state_dir, host, port, backend_uri, bool(auth))
        _warn_if_exposed(record)
        return record["uri"]


def stop_server(home: str) -> dict | None:
    """Stop the server recorded under `home` (its whole process group); its record (uri, pid, port,
    host, ...) if one ran, else None."""
    state_dir = _state_dir(home)
    record = _read_record(state_dir)
    if record is None:
        return None
    stopped = _kill_group(record["pid"])
    (state_dir / "server.json").unlink(missing_ok=True)
    return record if stopped else None


def answers(uri: str, timeout: float = 2.0) -> bool:
    """Whether the tracking server at an http(s) `uri` answers at all (any non-5xx reply to
    `/health`, a TLS handshake problem included); True for non-HTTP URIs, which have no server."""
    if not uri.startswith(("http://", "https://")):
        return True
    loopback = _is_loopback(urllib.parse.urlsplit(uri).hostname or "")
    opener = _OPENER if loopback else urllib.request.build_opener()
    try:
        with opener.open(f"{uri.rstrip('/')}/health", timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ssl.SSLError)
    except OSError:
        return False


def _check_reachable(uri: str) -> None:
    deadline = time.monotonic() + REACH_TIMEOUT_S
    while not answers(uri):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"The MLflow tracking server at {uri} (MLFLOW_TRACKING_URI) did not answer within "
                f"{REACH_TIMEOUT_S:.0f} s; start it, fix MLFLOW_TRACKING_URI, or unset it to let "
                "medtune start a local server."
            )
        time.sleep(0.5)


def _check_matches(record: dict, wanted: dict, state_dir: Path) -> None:
    """Raise when an explicitly requested setting differs from the running server's."""
    running = {
        "port": record["port"],
        "host": record.get("host", HOST),
        "auth": record.get("auth", False),
        "backend": record.get("backend", redact(f"sqlite:///{state_dir / 'mlflow.db'}")),
    }
    for name, value in wanted.items():
        if value is not None and value != running[name]:
            shown = {True: "on", False: "off"} if name == "auth" else {}
            raise RuntimeError(
                f"The MLflow server recorded in {state_dir / 'server.json'} already runs with "
                f"{name} {shown.get(running[name], repr(running[name]))}, not the requested "
                f"{shown.get(value, repr(value))}; leave that setting out to reuse it, or stop the "
                "server first with stop_server() (tune-ui --stop)."
            )


def _warn_if_exposed(record: dict) -> None:
    host = record.get("host", HOST)
    if not _is_loopback(host) and not record.get("auth", False):
        log.warning(
            "The MLflow server at %s listens on %s:%s without authentication: anyone who can reach "
            "this machine can read and change every experiment. Restart it with authentication "
            "(tune-ui --host %s --auth, with %s and %s set) or on 127.0.0.1.",
            record["uri"], host, record["port"], host, USER_ENV, PASSWORD_ENV,
        )  # fmt: skip


def _auth_env() -> dict[str, str]:
    """Server environment for MLflow's basic-auth app; the clients' credentials become its admin."""
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if not (user and password):
        raise RuntimeError(
            f"A server with authentication needs {USER_ENV} and {PASSWORD_ENV} in the "
            "environment: they create its admin account on first start and are what every "
            "medtune client sends; set both (the password needs at least 12 characters)."
        )
    if importlib.util.find_spec("flask_wtf") is None:
        raise RuntimeError(
            "MLflow's basic-auth app needs the Flask-WTF package, which is not installed; "
            "install mlflow[auth] (or flask-wtf) into this environment."
        )
    return {
        "MLFLOW_AUTH_ADMIN_USERNAME": user,
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        # CSRF protection of the auth app's forms; every worker must share the key.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
        or secrets.token_hex(32),
    }


def _with_driver(uri: str | None) -> str | None:
    """A bare postgresql:// URI names psycopg2, the driver medtune installs (SQLAlchemy 2.1's
    default for it is psycopg 3)."""
    if uri and uri.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg2://" + uri.split("://", 1)[1]
    return uri


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _state_dir(home: str) -> Path:
    return Path(home).resolve() / "mlflow"


def _read_record(state_dir: Path) -> dict | None:
    try:
        return json.loads((state_dir / "server.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _healthy(uri: str) -> bool:
    try:
        with _OPENER.open(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_free(host: str, port: int) -> bool:
    with socket.socket(_family(host)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(_family(host)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _start(state_dir: Path, host: str, port: int, backend_uri: str, auth: bool) -> dict:
    env = {**os.environ, **SERVER_ENV, **(_auth_env() if auth else {})}
    env["MLFLOW_BACKEND_STORE_URI"] = backend_uri  # not an argument: a password stays out of `ps`
    connect = _ANY_ADDRESS.get(host, host)
    uri = f"http://[{connect}]:{port}" if ":" in connect else f"http://{connect}:{port}"
    sqlite = backend_uri.startswith("sqlite:")
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--artifacts-destination", str(state_dir / "artifacts"),
        "--host", host,
        "--port", str(port),
        # SQLite takes one writer at a time: one process (requests use its threads) avoids
        # contending for the file lock; a database server takes a few worker processes.
        "--workers", "1" if sqlite else str(min(4, os.cpu_count() or 1)),
    ]  # fmt: skip
    if auth:
        command += ["--app-name", "basic-auth"]
    log_path = state_dir / "server.log"
    with open(log_path, "ab") as server_log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=server_log,
            stderr=subprocess.STDOUT,
            cwd=state_dir,  # the basic-auth app keeps its users in ./basic_auth.db
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _healthy(uri):
        if process.poll() is not None or time.monotonic() > deadline:
            _kill_group(process.pid)
            reason = (
                f"exited with status {process.returncode}"
                if process.returncode is not None
                else f"did not answer {uri}/health within {START_TIMEOUT_S:.0f} s"
            )
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"The MLflow server {reason}; see {log_path}:\n{tail}")
        time.sleep(0.25)
    record = {
        "pid": process.pid,
        "port": port,
        "uri": uri,
        "host": host,
        "auth": auth,
        "backend": redact(backend_uri),
    }
    (state_dir / "server.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _kill_group(pid: int) -> bool:
    """SIGTERM the process group led by `pid`, SIGKILL it if it lingers; False if none ran."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not _wait_gone(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _wait_gone(pid)
    return True


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _group_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _group_alive(pid: int) -> bool:
    try:  # reap the leader when this process started it, so it does not linger as a zombie
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True
