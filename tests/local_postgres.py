"""A real PostgreSQL 16 server with pgvector, for tests and benchmarks, reached over TCP loopback.

The `pgserver` wheel (PyPI) ships the PostgreSQL binaries and pgvector. Its own get_server() listens
on a Unix socket only; this starts the same binaries with initdb and pg_ctl on 127.0.0.1 and a free
port, so cattag connects the way it connects to a production server: postgresql://user@host:port/db.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator

_USER = "postgres"  # the database superuser initdb creates (trust authentication: loopback only)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(pgdata: pathlib.Path) -> Iterator[str]:
    """Starts a fresh server on an empty data directory; yields a URL for its `postgres`
    database; stops it on exit."""
    from pgserver import utils
    from pgserver._commands import POSTGRES_BIN_PATH

    pgdata = pathlib.Path(pgdata)
    pgdata.mkdir(parents=True)
    system_user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as an unprivileged system user
        system_user = "pgserver"
        utils.ensure_user_exists(system_user)
        utils.ensure_prefix_permissions(pgdata)
        # The server binaries live in this checkout's .venv: a checkout in a root-only folder (mktemp -d)
        # must be traversable for that user too.
        utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
        utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP
                                        | stat.S_IXOTH)
        shutil.chown(pgdata, system_user, system_user)

    def postgres_command(name: str, *args: str) -> None:
        subprocess.run([str(POSTGRES_BIN_PATH / name), "-D", str(pgdata), *args], check=True, capture_output=True,
                       text=True, timeout=120, user=system_user)

    postgres_command("initdb", "--auth=trust", "--encoding=utf8", "-U", _USER)
    port = _free_port()
    log = pgdata / "server.log"
    try:
        postgres_command("pg_ctl", "-w", "-l", str(log), "-o", f"-h 127.0.0.1 -p {port} -k ''", "start")
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"PostgreSQL did not start: {err.stderr}\n{log.read_text() if log.exists() else ''}")
    try:
        yield f"postgresql://{_USER}@127.0.0.1:{port}/postgres"
    finally:
        postgres_command("pg_ctl", "-w", "-m", "fast", "stop")


def create_database(url: str, name: str) -> str:
    """A new empty database on the server at url; returns its URL."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"
