"""A private PostgreSQL 15 cluster from Debian's packages, on its own port and socket directory.

Everyone logs in with a password (SCRAM) over TCP: FlowPay's roles, each as itself, and the
cluster's superuser, with the passwords the stack generated (``workers.devstack.credentials``).
The superuser is also trusted on the stack's Unix socket, which only the cluster's owner may
reach: that is how the stack sets the passwords, before any exists.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from workers.core.config import Settings
from workers.core.db import DEV_DATABASE, DEV_SUPERUSER, admin_url
from workers.core.db_roles import create_roles, set_passwords
from workers.core.errors import StackError
from workers.devstack.credentials import postgres_passwords
from workers.devstack.paths import StackPaths
from workers.devstack.procs import alive, read_pid, tail

log = logging.getLogger(__name__)

PG_MAJOR = 15
BIN_DIR = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
SUPERUSER = DEV_SUPERUSER
DATABASE = DEV_DATABASE
# Debian's package would otherwise create and start a system cluster of its own.
_CREATECLUSTER_CONF = Path("/etc/postgresql-common/createcluster.conf")

_SETTINGS = """\
# Written by flowpay dev; edits are overwritten.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
password_encryption = scram-sha-256
max_connections = 300
shared_buffers = 256MB
synchronous_commit = on
log_min_messages = warning
log_line_prefix = '%m [%p] '
"""

_HBA = """\
# Written by flowpay dev; edits are overwritten.
# The superuser on the stack's own socket (only the cluster's owner may reach it).
local  all  {superuser}  trust
# Everyone over TCP, with a password (<dev.home>/credentials/postgres.pgpass).
host   all  all  127.0.0.1/32  scram-sha-256
"""


@dataclass(frozen=True)
class PgStatus:
    running: bool
    pid: int | None
    url: str
    log: Path


def install() -> None:
    """Install postgresql-15 from Debian's packages when it is missing (root only)."""
    if (BIN_DIR / "postgres").exists():
        return
    if os.geteuid() != 0:
        raise StackError(
            f"PostgreSQL {PG_MAJOR} is missing: run 'apt-get install postgresql-{PG_MAJOR}'"
        )
    log.info("installing postgresql-%s with apt-get", PG_MAJOR)
    _CREATECLUSTER_CONF.parent.mkdir(parents=True, exist_ok=True)
    if not _CREATECLUSTER_CONF.exists():
        _CREATECLUSTER_CONF.write_text("create_main_cluster = false\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", f"postgresql-{PG_MAJOR}"],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")


def status(settings: Settings) -> PgStatus:
    paths = StackPaths.of(settings)
    pid = read_pid(paths.pg_data / "postmaster.pid")
    return PgStatus(
        running=alive(pid, str(paths.pg_data)),
        pid=pid,
        url=admin_url(settings),
        log=paths.pg_log,
    )


def up(settings: Settings) -> PgStatus:
    """Initialise once, start unless running, wait until it accepts connections; then the
    database, FlowPay's roles and everyone's password."""
    install()
    paths = StackPaths.of(settings)
    _prepare_dirs(paths)
    if not (paths.pg_data / "PG_VERSION").exists():
        _initdb(paths)
    (paths.pg_data / "flowpay.conf").write_text(
        _SETTINGS.format(port=settings.dev.pg_port, socket_dir=paths.pg_socket_dir)
    )
    _chown(paths.pg_data / "flowpay.conf")
    hba_changed = _write_hba(paths)
    if not status(settings).running:
        _start(paths, settings.dev.start_timeout_s)
    elif hba_changed:
        _as_owner([str(BIN_DIR / "pg_ctl"), "reload", "-D", str(paths.pg_data)])
    _ensure_database_and_roles(settings)
    return status(settings)


def down(settings: Settings) -> bool:
    paths = StackPaths.of(settings)
    if not status(settings).running:
        return False
    _as_owner([str(BIN_DIR / "pg_ctl"), "stop", "-D", str(paths.pg_data), "-m", "fast", "-w"])
    return True


def _prepare_dirs(paths: StackPaths) -> None:
    for directory in (paths.pg_data, paths.pg_socket_dir, paths.logs):
        directory.mkdir(parents=True, exist_ok=True)
    paths.pg_log.touch(exist_ok=True)
    for path in (paths.pg_data.parent, paths.pg_data, paths.pg_socket_dir, paths.pg_log):
        _chown(path)
    paths.pg_data.chmod(0o700)
    if os.geteuid() == 0:
        _grant_traverse(paths.pg_data.parent)


def _initdb(paths: StackPaths) -> None:
    _as_owner(
        [
            str(BIN_DIR / "initdb"),
            "-D", str(paths.pg_data),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ]
    )  # fmt: skip
    with (paths.pg_data / "postgresql.conf").open("a") as conf:
        conf.write("\ninclude_if_exists = 'flowpay.conf'\n")


def _start(paths: StackPaths, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    argv = [
        str(BIN_DIR / "pg_ctl"), "start", "-D", str(paths.pg_data), "-l", str(paths.pg_log),
        "-w", "-t", str(int(timeout_s)),
    ]  # fmt: skip
    while True:
        try:
            _as_owner(argv)
            return
        except StackError:
            last = tail(paths.pg_log)
            # After a SIGKILL the old backends may hold shared memory for a moment, so that is
            # worth waiting out; a port taken by another server is not.
            if time.monotonic() > deadline or "Address already in use" in last:
                raise StackError(
                    f"PostgreSQL did not start; last lines of {paths.pg_log}:\n{last}"
                ) from None
            time.sleep(1)


def _write_hba(paths: StackPaths) -> bool:
    """Write pg_hba.conf; True when it changed (a running server must reload it)."""
    path = paths.pg_data / "pg_hba.conf"
    wanted = _HBA.format(superuser=SUPERUSER)
    if path.exists() and path.read_text() == wanted:
        return False
    path.write_text(wanted)
    _chown(path)
    return True


def _ensure_database_and_roles(settings: Settings) -> None:
    socket = make_conninfo(
        host=str(StackPaths.of(settings).pg_socket_dir),
        port=settings.dev.pg_port,
        user=SUPERUSER,
        dbname="postgres",
    )
    try:
        with psycopg.connect(socket, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE}")
            with conn.transaction():
                for statement in create_roles(settings):
                    conn.execute(statement)
                set_passwords(conn, postgres_passwords(settings))
    except psycopg.OperationalError as exc:
        raise StackError(f"PostgreSQL on port {settings.dev.pg_port} refused: {exc}") from None


def _owner() -> pwd.struct_passwd | None:
    """The OS user that runs the cluster: 'postgres' when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "running as root but there is no 'postgres' user to run PostgreSQL"
        ) from None


def _chown(path: Path) -> None:
    owner = _owner()
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _grant_traverse(directory: Path) -> None:
    # PostgreSQL refuses to run as root, so its user must be able to reach the data directory.
    for parent in [directory, *directory.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            log.info(
                "granting other users traversal of %s so PostgreSQL can reach its data", parent
            )
            parent.chmod(mode | 0o001)


def _as_owner(argv: list[str]) -> None:
    if _owner() is not None:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        argv = [runuser, "-u", "postgres", "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")
    if done.returncode != 0:
        tool = next(Path(a).name for a in argv if a.startswith(str(BIN_DIR)))
        raise StackError(f"{tool} failed: {(done.stderr or done.stdout).strip()[-800:]}")
