"""A private PostgreSQL 15 cluster from Debian's packages, on its own port and socket directory.

Everyone logs in with a password (SCRAM) over TCP: FlowPay's roles, each as itself, and the
cluster's superuser, with the passwords the stack generated (``workers.devstack.credentials``).
The superuser is also trusted on the stack's Unix socket, which only the cluster's owner may
reach: that is how the stack sets the passwords, before any exists.

With ``dev.pg_standby`` the stack runs two servers and pg_auto_failover instead
(``workers.devstack.pg_standby``), made with the helpers here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from workers.core.config import Settings
from workers.core.db import DEV_DATABASE, DEV_SUPERUSER, admin_url
from workers.core.db_roles import apply_roles, create_roles
from workers.core.errors import StackError
from workers.devstack.apt import install_missing
from workers.devstack.credentials import postgres_passwords
from workers.devstack.paths import StackPaths
from workers.devstack.procs import alive, read_pid, tail

log = logging.getLogger(__name__)

PG_MAJOR = 15
BIN_DIR = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
LIB_DIR = Path(f"/usr/lib/postgresql/{PG_MAJOR}/lib")
AUTOCTL = "/usr/bin/pg_autoctl"
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


def install(*, standby: bool = False) -> None:
    """Install postgresql-15 (and pg_auto_failover for a standby) from Debian's packages when
    missing (root only)."""
    wanted = {f"postgresql-{PG_MAJOR}": BIN_DIR / "postgres"}
    if standby:
        wanted |= {
            f"postgresql-{PG_MAJOR}-auto-failover": LIB_DIR / "pgautofailover.so",
            "pg-auto-failover-cli": Path(AUTOCTL),
        }
    install_missing(wanted, before=_no_system_cluster)


def _no_system_cluster() -> None:
    _CREATECLUSTER_CONF.parent.mkdir(parents=True, exist_ok=True)
    if not _CREATECLUSTER_CONF.exists():
        _CREATECLUSTER_CONF.write_text("create_main_cluster = false\n")


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
    prepare_dirs(paths)
    if not (paths.pg_data / "PG_VERSION").exists():
        initdb(paths.pg_data)
    write_settings(paths.pg_data, settings.dev.pg_port, paths)
    hba_changed = _write_hba(paths)
    if not status(settings).running:
        _start(paths, settings.dev.start_timeout_s)
    elif hba_changed:
        as_owner([str(BIN_DIR / "pg_ctl"), "reload", "-D", str(paths.pg_data)])
    ensure_database(settings)
    return status(settings)


def down(settings: Settings) -> bool:
    paths = StackPaths.of(settings)
    if not status(settings).running:
        return False
    as_owner([str(BIN_DIR / "pg_ctl"), "stop", "-D", str(paths.pg_data), "-m", "fast", "-w"])
    return True


def prepare_dirs(paths: StackPaths, *more: Path) -> None:
    """The data, socket and log directories, owned by the server's user; data private."""
    for directory in (paths.pg_data, paths.pg_socket_dir, paths.logs, *more):
        directory.mkdir(parents=True, exist_ok=True)
    paths.pg_log.touch(exist_ok=True)
    for path in (paths.pg_data.parent, paths.pg_data, paths.pg_socket_dir, paths.pg_log, *more):
        chown(path)
    paths.pg_data.chmod(0o700)
    if os.geteuid() == 0:
        _grant_traverse(paths.pg_data.parent)


def initdb(data: Path) -> None:
    as_owner(
        [
            str(BIN_DIR / "initdb"),
            "-D", str(data),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ]
    )  # fmt: skip
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\ninclude_if_exists = 'flowpay.conf'\n")


def write_settings(data: Path, port: int, paths: StackPaths, extra: str = "") -> None:
    """The server's own settings file (``flowpay.conf``, which postgresql.conf includes)."""
    conf = data / "flowpay.conf"
    conf.write_text(_SETTINGS.format(port=port, socket_dir=paths.pg_socket_dir) + extra)
    chown(conf)


def _start(paths: StackPaths, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    argv = [
        str(BIN_DIR / "pg_ctl"), "start", "-D", str(paths.pg_data), "-l", str(paths.pg_log),
        "-w", "-t", str(int(timeout_s)),
    ]  # fmt: skip
    while True:
        try:
            as_owner(argv)
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
    chown(path)
    return True


def ensure_database(settings: Settings, port: int | None = None) -> None:
    """The database, FlowPay's roles and everyone's password, on the server at ``port`` (the
    primary's; default ``dev.pg_port``), through the stack's socket."""
    socket = make_conninfo(
        host=str(StackPaths.of(settings).pg_socket_dir),
        port=port or settings.dev.pg_port,
        user=SUPERUSER,
        dbname="postgres",
    )
    try:
        with psycopg.connect(socket, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another up made it
                    conn.execute(f"CREATE DATABASE {DATABASE}")
            apply_roles(conn, create_roles(settings), postgres_passwords(settings))
    except psycopg.OperationalError as exc:
        ports = ", ".join(str(p) for p in settings.dev.pg_ports)
        raise StackError(f"PostgreSQL on port {ports} refused: {exc}") from None


def owner() -> pwd.struct_passwd | None:
    """The OS user that runs the cluster: 'postgres' when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "running as root but there is no 'postgres' user to run PostgreSQL"
        ) from None


def chown(path: Path) -> None:
    user = owner()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def _grant_traverse(directory: Path) -> None:
    # PostgreSQL refuses to run as root, so its user must be able to reach the data directory.
    for parent in [directory, *directory.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            log.info(
                "granting other users traversal of %s so PostgreSQL can reach its data", parent
            )
            parent.chmod(mode | 0o001)


def as_owner(argv: list[str], env: dict[str, str] | None = None) -> str:
    """Run a PostgreSQL tool as the server's user; its output, or StackError with its complaint."""
    user = owner()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        env=env,
        user=None if user is None else user.pw_uid,
        group=None if user is None else user.pw_gid,
        extra_groups=None if user is None else [],
    )
    if done.returncode != 0:
        tool = Path(argv[0]).name
        raise StackError(f"{tool} failed: {(done.stderr or done.stdout).strip()[-800:]}")
    return done.stdout
