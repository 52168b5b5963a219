"""A PostgreSQL-backed MLflow server under the concurrency load of test_tracking_concurrency.

The test starts its own PostgreSQL cluster (initdb in a temporary directory, 127.0.0.1, a free
port), as the `postgres` (else `nobody`) user when run as root since PostgreSQL refuses root,
and stops it after. It is skipped, saying why, where PostgreSQL cannot be found or started.
"""

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile

import psycopg2
import pytest
from test_tracking_concurrency import free_port, load_server


def pg_program(name: str) -> str | None:
    """`name` on PATH, else in the newest /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return shutil.which(name) or (found[-1] if found else None)


def run_as() -> tuple[list[str], str | None]:
    """The command prefix (and user) PostgreSQL's programs run under: another user when root."""
    if os.geteuid() != 0:
        return [], None
    users = [name for name in ("postgres", "nobody") if _user_exists(name)]
    if not users or not shutil.which("runuser"):
        pytest.skip("PostgreSQL refuses to run as root, and there is neither a postgres/nobody user "
                    "nor runuser to start it as another user.")
    return ["runuser", "-u", users[0], "--"], users[0]


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def postgres_uri():
    """SQLAlchemy URI of a fresh PostgreSQL database on 127.0.0.1; the cluster is removed after."""
    initdb, pg_ctl = pg_program("initdb"), pg_program("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed: no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin.")
    prefix, user = run_as()
    root = tempfile.mkdtemp(prefix="medtune-pg-")  # pytest's tmp_path is private to its user
    if user:
        shutil.chown(root, user)
    data, port = os.path.join(root, "data"), free_port()

    def pg(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)

    try:
        done = pg(initdb, "-D", data, "-U", "medtune", "--auth=trust", "-E", "UTF8")
        if done.returncode == 0:
            done = pg(pg_ctl, "-D", data, "-l", os.path.join(root, "postgres.log"), "-w", "-t", "60",
                      "-o", f"-h 127.0.0.1 -p {port} -k {root}", "start")  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"PostgreSQL could not be started ({done.args[len(prefix)]}): {done.stderr[-400:]}")
        server = {"host": "127.0.0.1", "port": port, "user": "medtune"}
        with contextlib.closing(psycopg2.connect(dbname="postgres", **server)) as db:
            db.autocommit = True  # CREATE DATABASE cannot run in a transaction
            db.cursor().execute("CREATE DATABASE mlflow")
        yield f"postgresql://medtune@127.0.0.1:{port}/mlflow"
    finally:
        pg(pg_ctl, "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_concurrent_writers_on_postgres_lose_nothing(postgres_uri, tmp_path, monkeypatch, fault_log):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MEDTUNE_MLFLOW_BACKEND", postgres_uri)  # how tune-run / tune-ui are pointed at it
    record, experiment_id, points = load_server(tmp_path, "PostgreSQL", fault_log)
    # the psycopg2 driver named, the user hidden as a password would be
    assert record["backend"] == postgres_uri.replace("postgresql://medtune@", "postgresql+psycopg2://***@")
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()  # nothing went to SQLite ...
    with contextlib.closing(psycopg2.connect(postgres_uri)) as db, db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM metrics m JOIN runs r ON m.run_uuid = r.run_uuid "
                       "WHERE r.experiment_id = %s", (int(experiment_id),))  # fmt: skip
        assert cursor.fetchone()[0] == points  # ... every point is in PostgreSQL
