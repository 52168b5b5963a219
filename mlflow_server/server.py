"""Start or locate the MLflow tracking server: SQLite store + served artifacts on 127.0.0.1.

The server runs detached (own session), so it outlives the CLI that started it and the
next `tune-run` reuses it through `<home>/mlflow/server.json`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from filelock import FileLock

HOST = "127.0.0.1"
DEFAULT_PORT = 5000
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
# Job execution serves GenAI features (judges, trace rollups) through a huey consumer with
# ten workers; experiment tracking does not need it and it slows the start on small machines.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# Never route loopback health checks through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def results_dir() -> str:
    """`$MEDTUNE_HOME`, else `./runs`, as an absolute path that exists."""
    path = Path(os.environ.get("MEDTUNE_HOME") or "runs").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def ensure_server(home: str | None = None, port: int | None = None) -> str:
    """Return a tracking URI: `$MLFLOW_TRACKING_URI`, the recorded live server, or a new one.

    A new server keeps `mlflow.db`, `artifacts/`, `server.json` and `server.log` in
    `<home>/mlflow/` and listens on `port`, else 5000 if free, else a free ephemeral port.
    """
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    state_dir = _state_dir(home)
    state_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(state_dir / "server.lock"):
        record = _read_record(state_dir)
        if record and _healthy(record["uri"]):
            if port in (None, record["port"]):
                return record["uri"]
            raise RuntimeError(
                f"The MLflow server recorded in {state_dir / 'server.json'} already runs on "
                f"port {record['port']}, not the requested port {port}; omit the port to reuse "
                "it, or stop it first with stop_server()."
            )
        if port is not None and not _port_free(port):
            raise RuntimeError(
                f"Port {port} on {HOST} is already in use by a process that is not the MLflow "
                f"server recorded in {state_dir}; pass a free port or none to pick one."
            )
        if port is None:
            port = DEFAULT_PORT if _port_free(DEFAULT_PORT) else _free_port()
        return _start(state_dir, port)


def stop_server(home: str | None = None) -> bool:
    """Stop the server recorded under `home` (its whole process group); True if one ran."""
    state_dir = _state_dir(home)
    record = _read_record(state_dir)
    if record is None:
        return False
    stopped = _kill_group(record["pid"])
    (state_dir / "server.json").unlink(missing_ok=True)
    return stopped


def _state_dir(home: str | None) -> Path:
    return Path(home or results_dir()).resolve() / "mlflow"


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


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _start(state_dir: Path, port: int) -> str:
    uri = f"http://{HOST}:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{state_dir / 'mlflow.db'}",
        "--artifacts-destination", str(state_dir / "artifacts"),
        "--host", HOST,
        "--port", str(port),
        "--workers", "1",  # one writer process keeps SQLite uncontended; requests use threads
    ]  # fmt: skip
    log_path = state_dir / "server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state_dir,
            env={**os.environ, **SERVER_ENV},
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
    record = {"pid": process.pid, "port": port, "uri": uri}
    (state_dir / "server.json").write_text(json.dumps(record, indent=2) + "\n")
    return uri


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
