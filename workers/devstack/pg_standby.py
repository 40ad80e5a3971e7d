"""PostgreSQL with a synchronous streaming standby, failed over by pg_auto_failover.

Three PostgreSQL servers, each run by its own ``pg_autoctl run`` (pg_auto_failover's keeper,
which starts, stops and reconfigures its server as the monitor tells it): node 1 on
``dev.pg_port``, node 2 on ``pg_port + 1``, and the monitor on ``pg_port + 2``, a small
PostgreSQL of pg_auto_failover's own that holds the formation's state and decides failovers.

- Node 2 is made from node 1 with ``pg_basebackup`` and streams its WAL. The primary's
  ``synchronous_standby_names`` names the standby (pg_auto_failover sets it), so a commit
  returns only once the standby has flushed it. With the standby gone the primary commits
  alone (``wait_primary``) rather than refuse every write, and the monitor never promotes a
  standby that was not in sync, so no acknowledged commit is lost to one failure.
- A primary that stops answering is failed over by the monitor (about 10 s with the timeouts
  below); ``flowpay dev failover`` asks it for a planned one. An old primary started again
  rejoins as the standby (``pg_rewind``).
- Roles reach whichever node is primary through a multi-host URL
  (``workers.core.db.dev_url``).

pg_autoctl keeps its configuration and state under ``$XDG_CONFIG_HOME`` and ``$XDG_DATA_HOME``:
both point into ``<dev.home>/pg/autoctl`` so that every stack's files stay its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from workers.core.config import Settings
from workers.core.errors import StackError
from workers.devstack import postgres
from workers.devstack.paths import StackPaths
from workers.devstack.procs import alive, read_pid, spawn, tail, terminate, wait_gone

log = logging.getLogger(__name__)

FORMATION = "default"
MONITOR = "monitor"
KEEPER = "pg_autoctl"
# States in which a node takes writes, and in which it is a standby in sync.
PRIMARY_STATES = frozenset({"single", "wait_primary", "primary", "join_primary", "apply_settings"})
IN_SYNC = "secondary"

# Failure detection far shorter than pg_auto_failover's defaults (20 s to call a node
# unhealthy, 30 s more before promoting), fit for one machine, where a lost node is a killed
# process rather than a slow network. A node is unhealthy after its health checks fail for
# about 3 s and its keeper has not reported for 4 s; the standby is then promoted once the
# old primary has had primary_demote_timeout to step down.
_MONITOR_SETTINGS = """\
# Written by flowpay dev; edits are overwritten.
listen_addresses = '127.0.0.1'
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_max_retries = 2
pgautofailover.health_check_retry_delay = 500
pgautofailover.node_considered_unhealthy_timeout = 4000
pgautofailover.primary_demote_timeout = 6000
"""
# A primary that can reach neither the monitor nor its standby for this long demotes itself:
# shorter than the monitor's primary_demote_timeout, so it is read-only before another node
# is promoted (no two primaries).
NETWORK_PARTITION_TIMEOUT_S = 4


@dataclass(frozen=True)
class Server:
    """One of the three: a data node or the monitor, run by its keeper."""

    name: str  # node-1, node-2, monitor
    port: int
    data: Path
    log: Path

    @property
    def pid_file(self) -> Path:
        return self.data.parent / f"{self.name}.keeper.pid"

    def keeper_pid(self) -> int | None:
        pid = read_pid(self.pid_file)
        return pid if alive(pid, str(self.data)) else None


@dataclass(frozen=True)
class NodeState:
    name: str
    port: int
    running: bool  # its keeper runs and its server answers
    pid: int | None  # its keeper's
    reported: str  # the state its keeper last reported to the monitor ("" if unknown)
    assigned: str  # the state the monitor wants it in
    log: Path

    @property
    def role(self) -> str:
        """primary, standby (in sync), or the pg_auto_failover state it is passing through."""
        if self.reported in PRIMARY_STATES and self.reported == self.assigned:
            return "primary"
        if self.reported == IN_SYNC and self.assigned == IN_SYNC:
            return "standby"
        return self.reported or "unknown"


def nodes(settings: Settings) -> list[Server]:
    """The two data nodes; node 1 keeps the lone server's data directory."""
    paths = StackPaths.of(settings)
    first, second = settings.dev.pg_ports
    return [
        Server("node-1", first, paths.pg_data, paths.logs / "postgres-1.log"),
        Server("node-2", second, paths.pg_data.with_name("data-2"), paths.logs / "postgres-2.log"),
    ]


def monitor(settings: Settings) -> Server:
    paths = StackPaths.of(settings)
    return Server(
        MONITOR,
        settings.dev.pg_monitor_port,
        paths.pg_data.with_name(MONITOR),
        paths.logs / "pg-monitor.log",
    )


def server(settings: Settings, name: str) -> Server:
    return next(s for s in [*nodes(settings), monitor(settings)] if s.name == name)


def up(settings: Settings) -> list[NodeState]:
    """Make what is missing, start every keeper not running, wait for a primary and a standby."""
    postgres.install(standby=True)
    paths = StackPaths.of(settings)
    postgres.prepare_dirs(paths, *_autoctl_dirs(paths))
    watcher = monitor(settings)
    first, second = nodes(settings)
    if all(_created(paths, srv) for srv in (watcher, first, second)):
        _restart(settings, watcher, [first, second])
        return _settle(settings)
    if not _created(paths, watcher):
        _make_monitor(settings, watcher)
    _start(settings, watcher)
    _wait_accepting(watcher, _monitor_url(settings), settings.dev.start_timeout_s)
    if not (first.data / "PG_VERSION").exists():
        postgres.initdb(first.data)
    for node in (first, second):
        if not _created(paths, second) and node is second:
            # The second is copied from the first, once the monitor has it as the primary.
            _wait_state(settings, lambda states: primary(states) is not None)
        if (node.data / "PG_VERSION").exists():
            postgres.write_settings(node.data, node.port, paths)
        _start(settings, node)
    return _settle(settings)


def _restart(settings: Settings, watcher: Server, pair: list[Server]) -> None:
    """Start a made pair again: the monitor, then the last primary, then once it answers the
    other server.

    Both at once let the monitor see the standby back before the primary's server ran: it
    promoted the standby while the primary, alone and without synchronous replication, took
    writes the promotion then lost. A standby not yet back cannot be promoted; the primary
    alone keeps its commits, and the standby catches up from it.
    """
    paths = StackPaths.of(settings)
    _start(settings, watcher)
    _wait_accepting(watcher, _monitor_url(settings), settings.dev.start_timeout_s)
    last = _monitor_states(settings)
    was_primary = [
        node
        for node in pair
        if str(last.get(node.port, {}).get("assigned_group_state")) in PRIMARY_STATES
    ]
    for node in [*was_primary, *(n for n in pair if n not in was_primary)]:
        postgres.write_settings(node.data, node.port, paths)
        _start(settings, node)
        _wait_accepting(node, _node_url(node), settings.dev.start_timeout_s)


def _settle(settings: Settings) -> list[NodeState]:
    """Wait for a primary and a standby in sync, then for writes; the database made."""
    _wait_state(settings, settled, say=lambda _now: _hurry_base_backup(settings))
    for node in nodes(settings):
        _set_partition_timeout(settings, node)
    lead = _wait_writable(settings, settings.dev.start_timeout_s)
    postgres.ensure_database(settings, lead.port)
    return status(settings)


def down(settings: Settings) -> bool:
    """Stop the monitor first (so that no failover follows), then both nodes at once."""
    stopped = _stop(monitor(settings))
    with ThreadPoolExecutor(2) as each:
        return any(each.map(_stop, nodes(settings))) or stopped


def start(settings: Settings, name: str) -> None:
    """Start one server's keeper again (after a kill); an old primary rejoins as the standby."""
    _start(settings, server(settings, name))


def kill(settings: Settings, name: str) -> None:
    """SIGKILL a server's keeper and its PostgreSQL, at once: a lost machine."""
    srv = server(settings, name)
    pid = read_pid(srv.pid_file)
    if pid is None or not alive(pid, KEEPER):
        return
    # The postmaster leads a session of its own (it calls setsid), apart from its keeper's
    # process group: killing the keeper's group alone leaves the server answering.
    postmaster = read_pid(srv.data / "postmaster.pid")
    os.killpg(pid, signal.SIGKILL)  # the keeper leads its own process group (spawn)
    if postmaster is not None and alive(postmaster, "postgres"):
        # Gone already if it was in the keeper's group after all.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(postmaster, signal.SIGKILL)  # with every backend
        wait_gone(postmaster, "postgres", timeout_s=30)
    wait_gone(pid, KEEPER, timeout_s=30)


def status(settings: Settings) -> list[NodeState]:
    """Each data node: its process, and its state as the monitor has it."""
    states = _monitor_states(settings)
    found = []
    for node in nodes(settings):
        known = states.get(node.port, {})
        found.append(
            NodeState(
                node.name,
                node.port,
                node.keeper_pid() is not None and _accepts(_node_url(node)),
                node.keeper_pid(),
                str(known.get("current_group_state") or ""),
                str(known.get("assigned_group_state") or ""),
                node.log,
            )
        )
    return found


def monitor_running(settings: Settings) -> tuple[bool, int | None]:
    watcher = monitor(settings)
    pid = watcher.keeper_pid()
    return pid is not None and _accepts(_monitor_url(settings)), pid


def primary(states: list[NodeState]) -> NodeState | None:
    return next((s for s in states if s.role == "primary"), None)


def settled(states: list[NodeState]) -> bool:
    """A primary and a standby in sync with it, both up: a failover would lose nothing.

    Both must also answer: the monitor's states of a pair just started again are those it
    last had, before either server runs.
    """
    return sorted(s.role for s in states) == ["primary", "standby"] and all(
        s.running for s in states
    )


def wait_settled(settings: Settings, timeout_s: float) -> list[NodeState]:
    return _wait_state(settings, settled, timeout_s)


def failover(settings: Settings, say: Callable[[str], None]) -> str:
    """A planned failover: the standby becomes primary, the primary its standby. Returns the
    new primary's name. Refused unless the standby is in sync (it would lose commits)."""
    before = status(settings)
    old = primary(before)
    if not settled(before) or old is None:
        roles = ", ".join(f"{s.name} {s.role}" for s in before)
        raise StackError(f"no standby in sync to fail over to ({roles})")
    say(f"asking the monitor to fail {old.name} over")
    with _monitor_conn(settings) as conn:
        conn.execute("SELECT pgautofailover.perform_failover(%s, 0)", (FORMATION,))
    after = _wait_state(
        settings,
        lambda states: settled(states) and (primary(states) or old).name != old.name,
        settings.dev.start_timeout_s,
        say,
    )
    new = primary(after)
    assert new is not None  # settled
    return new.name


def _wait_state(
    settings: Settings,
    wanted: Callable[[list[NodeState]], bool],
    timeout_s: float | None = None,
    say: Callable[[str], None] = lambda _step: None,
) -> list[NodeState]:
    limit = settings.dev.start_timeout_s if timeout_s is None else timeout_s
    deadline = time.monotonic() + limit
    while True:
        states = status(settings)
        if wanted(states):
            return states
        now = ", ".join(f"{s.name} {s.role}" for s in states)
        if time.monotonic() > deadline:
            logs = "\n".join(f"last lines of {s.log}:\n{tail(s.log, 10)}" for s in states)
            raise StackError(f"PostgreSQL did not settle within {limit:.0f}s ({now})\n{logs}")
        say(now)
        time.sleep(0.5)


def _wait_writable(settings: Settings, timeout_s: float) -> Server:
    """The server that takes writes, once one does. Asked of the servers themselves: the
    monitor's states of a pair just started again are those it last had."""
    deadline = time.monotonic() + timeout_s
    while True:
        for node in nodes(settings):
            if _takes_writes(_node_url(node)):
                return node
        if time.monotonic() > deadline:
            raise StackError(f"no PostgreSQL server took writes within {timeout_s:.0f}s")
        time.sleep(0.3)


def _takes_writes(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.OperationalError:
        return False
    return row is not None and not row[0]


def _hurry_base_backup(settings: Settings) -> None:
    """Checkpoint the primary while a standby is being made.

    pg_autoctl's ``pg_basebackup`` asks for a spread checkpoint, which may take minutes to
    finish (checkpoint_completion_target of checkpoint_timeout); an explicit CHECKPOINT is
    immediate and completes the one the base backup waits for.
    """
    states = status(settings)
    making = any(s.reported in ("wait_standby", "catchingup") for s in states)
    lead = primary(states)
    if making and lead is not None:
        url = _node_url(server(settings, lead.name))
        with contextlib.suppress(psycopg.Error), psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")


def _autoctl_dirs(paths: StackPaths) -> list[Path]:
    base = paths.pg_data.with_name("autoctl")
    return [base, base / "config", base / "share", base / "run"]


def _env(paths: StackPaths, srv: Server | None = None) -> dict[str, str]:
    """pg_autoctl's environment: its files under the stack's home, PostgreSQL's tools first.

    A data node's keeper connects to its server as the stack's superuser (``initdb -U``);
    the monitor's, which pg_autoctl made itself, as the OS user.
    """
    base = paths.pg_data.with_name("autoctl")
    user = postgres.owner()
    superuser = {} if srv is None or srv.name == MONITOR else {"PGUSER": postgres.SUPERUSER}
    return superuser | {
        "PATH": f"{postgres.BIN_DIR}:/usr/bin:/bin",
        "HOME": user.pw_dir if user is not None else os.environ.get("HOME", "/"),
        "XDG_CONFIG_HOME": str(base / "config"),
        "XDG_DATA_HOME": str(base / "share"),
        "XDG_RUNTIME_DIR": str(base / "run"),
        "LANG": "C.UTF-8",
    }


def _created(paths: StackPaths, srv: Server) -> bool:
    """pg_autoctl finished making this server: the monitor's configuration, or a node's state
    file with no initialisation left pending."""
    base = paths.pg_data.with_name("autoctl")
    under = Path("pg_autoctl") / srv.data.relative_to("/")
    if srv.name == MONITOR:
        return (base / "config" / under / "pg_autoctl.cfg").exists()
    state = base / "share" / under
    return (state / "pg_autoctl.state").exists() and not (state / "pg_autoctl.init").exists()


def _set_partition_timeout(settings: Settings, node: Server) -> None:
    """The keeper's network_partition_timeout (a running keeper reloads it), unless it has it
    already: ``config set`` fails, saying nothing, while the keeper restarts its server."""
    env = _env(StackPaths.of(settings), node)
    key = "timeout.network_partition_timeout"
    get = [postgres.AUTOCTL, "config", "get", "--pgdata", str(node.data), key]
    if postgres.as_owner(get, env).strip() == str(NETWORK_PARTITION_TIMEOUT_S):
        return
    set_ = [postgres.AUTOCTL, "config", "set", "--pgdata", str(node.data), key]
    postgres.as_owner([*set_, str(NETWORK_PARTITION_TIMEOUT_S)], env)


def _monitor_url(settings: Settings) -> str:
    return f"postgresql://autoctl_node@127.0.0.1:{settings.dev.pg_monitor_port}/pg_auto_failover"


def _monitor_conn(settings: Settings) -> psycopg.Connection[dict[str, Any]]:
    try:
        return psycopg.connect(
            _monitor_url(settings), autocommit=True, connect_timeout=5, row_factory=dict_row
        )
    except psycopg.OperationalError as exc:
        raise StackError(f"pg_auto_failover's monitor does not answer: {exc}") from None


def _monitor_states(settings: Settings) -> dict[int, dict[str, Any]]:
    """The monitor's view of each node, by port; empty when the monitor does not answer."""
    try:
        with _monitor_conn(settings) as conn:
            rows = conn.execute(
                "SELECT * FROM pgautofailover.current_state(%s)", (FORMATION,)
            ).fetchall()
    except (StackError, psycopg.Error):
        return {}
    return {int(row["nodeport"]): row for row in rows}


def _make_monitor(settings: Settings, watcher: Server) -> None:
    paths = StackPaths.of(settings)
    log.info("creating pg_auto_failover's monitor on port %d", watcher.port)
    postgres.as_owner(
        [postgres.AUTOCTL, "create", "monitor", "--pgdata", str(watcher.data),
         "--pgport", str(watcher.port), "--hostname", "127.0.0.1", "--auth", "trust",
         "--no-ssl", "--pgctl", str(postgres.BIN_DIR / "pg_ctl")],
        _env(paths),
    )  # fmt: skip
    # `create monitor` has no --listen: its server would listen on every address.
    postgres.as_owner(
        [postgres.AUTOCTL, "config", "set", "--pgdata", str(watcher.data),
         "postgresql.listen_addresses", "127.0.0.1"],
        _env(paths),
    )  # fmt: skip
    with (watcher.data / "postgresql.conf").open("a") as conf:
        conf.write("\ninclude_if_exists = 'flowpay.conf'\n")


def _start(settings: Settings, srv: Server) -> None:
    """Start the server's keeper unless it runs: ``run`` once made, else ``create --run``."""
    if srv.keeper_pid() is not None:
        return
    paths = StackPaths.of(settings)
    if srv.name == MONITOR:
        (srv.data / "flowpay.conf").write_text(_MONITOR_SETTINGS)
        postgres.chown(srv.data / "flowpay.conf")
    argv = [postgres.AUTOCTL, "run", "--pgdata", str(srv.data)]
    if not _created(paths, srv):
        argv = [postgres.AUTOCTL, "create", "postgres", *_node_options(settings, srv), "--run"]
    pid = spawn(argv, srv.log, env=_env(paths, srv), user=postgres.owner())
    srv.pid_file.write_text(f"{pid}\n")


def _node_options(settings: Settings, node: Server) -> list[str]:
    return [
        "--pgdata", str(node.data), "--pgport", str(node.port), "--pghost", "127.0.0.1",
        "--listen", "127.0.0.1", "--hostname", "127.0.0.1", "--name", node.name,
        "--username", postgres.SUPERUSER, "--dbname", postgres.DATABASE,
        "--auth", "trust", "--no-ssl", "--pgctl", str(postgres.BIN_DIR / "pg_ctl"),
        "--monitor", f"{_monitor_url(settings)}?sslmode=disable",
    ]  # fmt: skip


def _stop(srv: Server) -> bool:
    """SIGTERM to the keeper, which stops its server (fast shutdown) and exits."""
    pid = srv.keeper_pid()
    return pid is not None and terminate(pid, str(srv.data), timeout_s=60)


def _node_url(node: Server) -> str:
    return f"postgresql://{postgres.SUPERUSER}@127.0.0.1:{node.port}/postgres"


def _accepts(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _wait_accepting(srv: Server, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _accepts(url):
            return
        if srv.keeper_pid() is None:
            break
        time.sleep(0.3)
    raise StackError(
        f"{srv.name} did not accept connections; last lines of {srv.log}:\n{tail(srv.log)}"
    )
