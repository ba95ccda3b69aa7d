"""What the fault-injection tests share: a real `mlflow server` that a test can kill, freeze and restart, and
a way to run the console script as the user would (its own process, its own stdout and stderr)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import env_for_subprocess

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite backend and served artifacts, in its own process group."""

    def __init__(self, root: Path, template: Path) -> None:
        self.root, self.port = root, free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, self.root / "server.db")  # migrated once per session: a faster first start
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--serve-artifacts", "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env_for_subprocess())
        deadline = time.monotonic() + 240  # a hang guard: a busy 2-core machine needs 15-30 s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-2000:]
            try:
                if urllib.request.urlopen(f"{self.uri}/health", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(0.3)
        raise AssertionError("mlflow server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def client(self) -> object:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


@pytest.fixture
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, migrated_mlflow_db: Callable[[], Path]) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), migrated_mlflow_db())
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.signal(signal.SIGCONT)  # a frozen one must wake to die
    server.kill()


def archbench(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The console script in its own process, as a user runs it."""
    return subprocess.run([str(BIN / "archbench"), *args], cwd=cwd, env=env or env_for_subprocess(),
                          capture_output=True, text=True, check=False, timeout=timeout)


def start_archbench(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN / "archbench"), *args], cwd=cwd, env=env or env_for_subprocess(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def one_error_line(stderr: str) -> str:
    """The run's one error line (progress lines may precede it); never a traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("archbench: error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def wait_for(found: Callable[[], object], proc: subprocess.Popen[str] | None = None, what: str = "",
             limit_s: float = 300) -> object:
    """Poll until ``found()`` is truthy (a hang guard, not a timing assert); fails if ``proc`` ended first."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the process ended before {what}: {err[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"never saw {what}")


class Postgres:
    """A PostgreSQL server of the test's own (not the shared one of scripts/services.sh, which other tests use):
    a test may stop it as a crash would, and start it again on the same data."""

    def __init__(self) -> None:
        import tempfile

        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins:
            pytest.skip("needs PostgreSQL's server binaries (apt install postgresql, or bash scripts/services.sh start)")
        pytest.importorskip("psycopg2", reason="needs psycopg2: pip install -e '.[scale]'")
        self.bin = bins[-1].parent
        # Not under pytest's root-only temp folder: the server runs as the postgres user, which must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="archbench-pg-", dir="/tmp"))
        self.root.chmod(0o755)
        self.data, self.port = self.root / "data", free_port()
        self.data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
            shutil.chown(self.root, "postgres", "postgres")
        self.data.chmod(0o700)
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8")
        self.start()

    def _pg(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "120",
                 "-o", f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200", "start")

    def stop(self) -> None:
        """As a crash or a lost machine: no shutdown checkpoint, clients cut off at once."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                        "immediate", "stop"] if os.geteuid() == 0 else
                       [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    yield server
    server.close()
