"""One PostgreSQL role per service, and exactly what each may do, from one table (``ACCESS``).

``flowpay_owner`` owns every schema and object and runs the migrations; no other role owns
anything, so none can ``ALTER`` a table, drop or disable a trigger, or grant itself more. Each
service's role (``flowpay_<role>``) may change the rows of its own schema and, elsewhere, exactly
what the table gives it; nobody gets ``TRUNCATE``, ``REFERENCES``, ``TRIGGER`` or ``EXECUTE`` on
FlowPay's functions, and ``PUBLIC`` (every other role of the cluster) gets nothing, not even
``CONNECT``. No role is a superuser or may create roles or databases.

Three steps, by three hands:

- ``create_roles`` / ``database_access`` (``flowpay db init``, as a superuser or a role with
  CREATEROLE; ``--print-sql`` for a DBA): the roles, and who may connect to the database;
- ``adopt``: the owner takes over what existed before the roles (made by another user);
- ``apply_grants`` (every ``flowpay db migrate``, as the owner, in the transaction of the
  migrations): the table, applied to the schemas as they now are. It revokes whatever the table
  does not give, so it also takes back a grant made by hand; a table a migration adds is covered
  by the next run, and replay's swap applies it to the ledger it swaps in.

A new service is one entry in ``ACCESS``; a schema that does not exist yet is skipped until a
migration creates it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

from psycopg import Connection, sql
from psycopg.conninfo import conninfo_to_dict

from workers.core.config import DATABASE_ROLES, SERVICE_ROLES, ServiceRole, Settings
from workers.core.db import database_url, role_name
from workers.core.outbox import EMITTING_SCHEMAS
from workers.core.sql import load_queries

Q = load_queries("workers.core")
Privilege = Literal["SELECT", "INSERT", "UPDATE", "DELETE"]
ROWS: Final[tuple[Privilege, ...]] = ("SELECT", "INSERT", "UPDATE")
OWNER: Final = role_name("owner")
# Held while roles and passwords are set ("Flor"): see apply_roles.
ROLES_LOCK: Final = 0x466C6F72


@dataclass(frozen=True)
class TableGrant:
    """Privileges on one table (``<schema>.<table>``) or on each of a schema's (``<schema>.*``)."""

    table: str
    privileges: tuple[Privilege, ...]
    columns: tuple[str, ...] = ()  # only these columns
    hidden: tuple[str, ...] = ()  # every column but these
    excluded: tuple[str, ...] = ()  # of ``<schema>.*``, not these tables

    @property
    def schema(self) -> str:
        return self.table.partition(".")[0]


@dataclass(frozen=True)
class Access:
    """What one role may do: the rows of its own schema (``owns``), and ``grants`` elsewhere."""

    owns: str | None = None
    rows: tuple[Privilege, ...] = ROWS
    grants: tuple[TableGrant, ...] = ()


# Where merchants' signing secrets are kept, sealed or (before encryption) not: only the
# notifier, which signs with them, reads them. The tables that hold them (and nothing else).
SECRET_TABLES: Final = ("endpoint_secrets",)


def _relay() -> tuple[TableGrant, ...]:
    # Every emitting service's outbox: read, mark published, prune what was published long ago.
    grants: list[TableGrant] = []
    for schema in EMITTING_SCHEMAS:
        grants.append(TableGrant(f"{schema}.outbox", ("SELECT", "DELETE")))
        grants.append(TableGrant(f"{schema}.outbox", ("UPDATE",), columns=("published_at",)))
    # It also prunes the API's expired idempotency keys.
    return (*grants, TableGrant("api.idempotency_keys", ("SELECT", "DELETE")))


def _operator() -> tuple[TableGrant, ...]:
    read_everything = tuple(
        TableGrant(f"{schema}.*", ("SELECT",), excluded=SECRET_TABLES)
        for schema in ("api", "processor", "ledger", "notifier", "orchestrator")
    )
    return (
        *read_everything,
        # `merchants create`, `create-key`, `revoke-key`.
        TableGrant("api.merchants", ("INSERT",)),
        # `merchants set-origins` / `clear-origins`.
        TableGrant("api.merchants", ("UPDATE",), columns=("allowed_origins",)),
        TableGrant("api.api_keys", ("INSERT",)),
        TableGrant("api.api_keys", ("UPDATE",), columns=("revoked_at",)),
        # The dev stack's demo endpoint, registered straight with the notifier (it writes a new,
        # encrypted secret and never reads one back; `webhooks add-endpoint` goes the API's
        # way, as the api role), `webhooks disable` / `enable`, `webhooks retry`.
        TableGrant("notifier.endpoints", ("INSERT",)),
        TableGrant("notifier.endpoint_secrets", ("INSERT",)),
        TableGrant(
            "notifier.endpoints",
            ("UPDATE",),
            columns=("status", "disabled_at", "disabled_reason", "failing_since"),
        ),
        TableGrant(
            "notifier.deliveries",
            ("UPDATE",),
            columns=("status", "next_attempt_at", "leased_until", "last_error"),
        ),
    )


# What each role may do. A new service, or a new need of one, is one line here.
ACCESS: Final[dict[ServiceRole, Access]] = {
    # The read model prunes the events it keeps for /v1/events past their retention.
    "api": Access(owns="api", grants=(TableGrant("api.events", ("DELETE",)),)),
    "outbox": Access(grants=_relay()),
    "processor": Access(owns="processor"),
    "ledger": Access(owns="ledger"),
    "notifier": Access(owns="notifier"),
    # The saga orchestrator (its outbox is the relay's to publish, as every outbox).
    "orchestrator": Access(owns="orchestrator"),
    # The CLI's tools: everything read (no webhook secret), a few writes, its own `ops` records.
    "operator": Access(owns="ops", rows=("SELECT", "INSERT"), grants=_operator()),
}

# Ledgers that replay keeps aside (workers.ledger.store): the owner's alone.
RETIRED_SCHEMAS: Final = ("ledger_previous", "ledger_shadow")
# FlowPay's functions outside its schemas (replay installs a ledger with it).
OWNER_FUNCTIONS: Final = ("public.ledger_install(text)",)
# Every schema whose privileges ``apply_grants`` decides.
SCHEMAS: Final = tuple(
    sorted(
        {a.owns for a in ACCESS.values() if a.owns}
        | {g.schema for a in ACCESS.values() for g in a.grants}
        | set(RETIRED_SCHEMAS)
    )
)
# Attributes that would let a role step outside the table.
UNSAFE_ATTRIBUTES: Final = (
    "rolsuper",
    "rolcreaterole",
    "rolcreatedb",
    "rolreplication",
    "rolbypassrls",
)


def login_users(settings: Settings) -> dict[str, str]:
    """``{login user: flowpay role}`` for role URLs that log in as another user than the role.

    That user gets the role's rights (``GRANT flowpay_<role> TO <user>``). A role that uses the
    shared ``database.url`` is left out: every role logs in as the same user there.
    """
    users: dict[str, str] = {}
    for role in DATABASE_ROLES:
        url = settings.database.urls.get(role)
        user = conninfo_to_dict(url.get_secret_value()).get("user") if url else None
        if user and user != role_name(role):
            users[str(user)] = role_name(role)
    return users


def create_roles(settings: Settings) -> list[sql.Composed]:
    """The roles (made when missing) and their login users; refuses any with unsafe attributes."""
    names = [role_name(r) for r in DATABASE_ROLES]
    users = login_users(settings)
    statements: list[sql.Composed] = [_create_if_missing(name) for name in [*names, *users]]
    statements += [
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(user))
        for user, role in users.items()
    ]
    statements.append(_refuse_unsafe([*names, *users]))
    return statements


def _create_if_missing(name: str) -> sql.Composed:
    body = sql.SQL(
        "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN"
        " CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;"
        " END IF;"
    ).format(name=sql.Literal(name), role=sql.Identifier(name))
    return _do(body)


def _refuse_unsafe(names: list[str]) -> sql.Composed:
    unsafe = sql.SQL(" OR ").join(sql.Identifier(a) for a in UNSAFE_ATTRIBUTES)
    body = sql.SQL(
        "IF EXISTS (SELECT FROM pg_roles WHERE rolname = ANY ({names}) AND ({unsafe})) THEN"
        " RAISE EXCEPTION 'FlowPay''s roles must not be superusers nor create roles or databases,"
        " replicate or bypass row security: %', (SELECT string_agg(rolname, ', ') FROM pg_roles"
        " WHERE rolname = ANY ({names}) AND ({unsafe})); END IF;"
    ).format(names=_text_array(names), unsafe=unsafe)
    return _do(body)


def database_access(dbname: str) -> list[sql.Composed]:
    """Who may connect to the database: FlowPay's roles only; the owner may also create schemas
    in it (replay's shadow ledger, a new service's schema). On a connection to any database."""
    database = sql.Identifier(dbname)
    services = sql.SQL(", ").join(sql.Identifier(role_name(r)) for r in SERVICE_ROLES)
    return [
        sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, services),
        sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
            database, sql.Identifier(OWNER)
        ),
    ]


def public_schema_access() -> sql.Composed:
    """The owner's objects in ``public`` (Alembic's version table, ``ledger_install``). On a
    connection to FlowPay's database."""
    return sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(OWNER))


def adopt() -> sql.Composed:
    """The owner takes over FlowPay's schemas and objects made by another user (before roles)."""
    return _do(
        sql.SQL(
            "DECLARE o record; BEGIN FOR o IN {} LOOP EXECUTE o.statement; END LOOP; END"
        ).format(
            Q["owner_adopt"].format(
                schemas=_text_array(SCHEMAS),
                functions=_text_array(OWNER_FUNCTIONS),
                owner=sql.Literal(OWNER),
            )
        ),
        declares=True,
    )


def init_statements(settings: Settings) -> list[sql.Composed]:
    """What `flowpay db init` runs as the administrator, in order (`--print-sql` prints it)."""
    return [
        *create_roles(settings),
        *database_access(database_name(settings)),
        public_schema_access(),
        adopt(),
    ]


def assume_owner(conn: Connection[Any], *, local: bool = False) -> None:
    """Act as ``flowpay_owner`` when logged in as another user that is a member of it (the
    owner's URL names a login user of its own), so that what this session creates is the
    owner's. ``local``: for the current transaction only."""
    row = conn.execute(Q["owner_member"], {"owner": OWNER}).fetchone()
    if row is not None and row[0]:
        scope = sql.SQL("LOCAL " if local else "")
        conn.execute(sql.SQL("SET {}ROLE {}").format(scope, sql.Identifier(OWNER)))


def database_name(settings: Settings) -> str:
    """FlowPay's database: the one the owner's URL names."""
    params = conninfo_to_dict(database_url(settings, "owner"))
    return str(params.get("dbname") or params.get("user") or "postgres")


def apply_roles(
    conn: Connection[Any], statements: Iterable[sql.Composed], passwords: dict[str, str]
) -> None:
    """``statements`` (roles, grants), then ``passwords``, in one transaction, one such
    transaction at a time on this database.

    Roles are rows of a shared catalog that PostgreSQL updates without a row lock: two sessions
    altering one role at once fail with "tuple concurrently updated" (two ``dev up`` of one
    stack, two ``db init``). The advisory lock is per database, as FlowPay's setups are."""
    with conn.transaction():
        conn.execute(Q["roles_lock"], {"lock": ROLES_LOCK})
        for statement in statements:
            conn.execute(statement)
        set_passwords(conn, passwords)


def set_passwords(conn: Connection[Any], passwords: dict[str, str]) -> None:
    """Each user's password, sent as a SCRAM verifier computed here: the password itself never
    reaches the server, so no server log can hold it."""
    for user, password in passwords.items():
        verifier = conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256")
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(verifier.decode())
            )
        )


def url_passwords(settings: Settings) -> dict[str, str]:
    """The passwords the role URLs carry, by login user (``db init`` sets them)."""
    found: dict[str, str] = {}
    for role in DATABASE_ROLES:
        url = settings.database.urls.get(role)
        params = conninfo_to_dict(url.get_secret_value()) if url else {}
        if params.get("password"):
            found[str(params.get("user") or role_name(role))] = str(params["password"])
    return found


@dataclass(frozen=True)
class Grants:
    """What ``apply_grants`` did: the statements, and the roles it found missing."""

    statements: list[sql.Composed]
    missing_roles: list[str]


def apply_grants(conn: Connection[Any], only: str | None = None) -> Grants:
    """Make the privileges on FlowPay's schemas (or on schema ``only``) exactly what ``ACCESS``
    says, in the caller's transaction. Roles that do not exist (``db init`` not run: development
    on one URL) are left out, and so are schemas and tables that do not exist yet."""
    schemas = SCHEMAS if only is None else (only,)
    names = [role_name(r) for r in SERVICE_ROLES]
    present = set(_present(conn, "roles_present", names))
    revoked_from = [n for n in names if n in present]
    statements = list(_revokes(_present(conn, "schemas_present", schemas), revoked_from))
    if only is None:
        statements += [
            _revoke(sql.SQL("FUNCTION {}").format(sql.SQL(f)), revoked_from)
            for f in _present(conn, "functions_present", OWNER_FUNCTIONS)
        ]
    tables = _tables(conn, schemas)
    for role in SERVICE_ROLES:
        if role_name(role) in present:
            statements.extend(_role_grants(role, ACCESS[role], tables))
    if statements:
        conn.execute(sql.SQL(";\n").join(statements))
    return Grants(statements, [n for n in names if n not in present])


def _present(conn: Connection[Any], query: str, names: Collection[str]) -> list[str]:
    return [str(r[0]) for r in conn.execute(Q[query], {"names": list(names)})]


@dataclass(frozen=True)
class _Table:
    columns: tuple[str, ...]
    sequences: tuple[str, ...]  # qualified names of the sequences its columns own


def _tables(conn: Connection[Any], schemas: Collection[str]) -> dict[tuple[str, str], _Table]:
    rows = conn.execute(Q["grantable_tables"], {"names": list(schemas)})
    return {(str(s), str(t)): _Table(tuple(cols), tuple(seqs)) for s, t, cols, seqs in rows}


def _revokes(schemas: list[str], roles: list[str]) -> Iterator[sql.Composed]:
    for schema in schemas:
        name = sql.Identifier(schema)
        for what in ("SCHEMA {}", "ALL TABLES IN SCHEMA {}", "ALL SEQUENCES IN SCHEMA {}",
                     "ALL ROUTINES IN SCHEMA {}"):  # fmt: skip
            yield _revoke(sql.SQL(what).format(name), roles)


def _revoke(target: sql.Composable, roles: list[str]) -> sql.Composed:
    grantees = sql.SQL(", ").join([sql.SQL("PUBLIC"), *(sql.Identifier(r) for r in roles)])
    return sql.SQL("REVOKE ALL ON {} FROM {}").format(target, grantees)


def _role_grants(
    role: ServiceRole, access: Access, tables: dict[tuple[str, str], _Table]
) -> Iterator[sql.Composed]:
    grantee = sql.Identifier(role_name(role))
    wanted = list(access.grants)
    if access.owns is not None:
        wanted.insert(0, TableGrant(f"{access.owns}.*", access.rows))
    used_schemas: set[str] = set()
    for grant in wanted:
        schema, _, name = grant.table.partition(".")
        for (s, t), table in tables.items():
            if s != schema or name not in ("*", t) or t in grant.excluded:
                continue
            if s not in used_schemas:
                used_schemas.add(s)
                yield sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(s), grantee)
            yield from _table_grant(grant, sql.Identifier(s, t), table, grantee)


def _table_grant(
    grant: TableGrant, target: sql.Identifier, table: _Table, grantee: sql.Identifier
) -> Iterator[sql.Composed]:
    columns: tuple[str, ...] | None = None
    if grant.columns:
        columns = tuple(c for c in grant.columns if c in table.columns)
    elif set(grant.hidden) & set(table.columns):
        columns = tuple(c for c in table.columns if c not in grant.hidden)
    privileges = sql.SQL(", ").join(sql.SQL(p) for p in grant.privileges)
    if columns is None:
        yield sql.SQL("GRANT {} ON TABLE {} TO {}").format(privileges, target, grantee)
    elif columns:
        listed = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        each = sql.SQL(", ").join(
            sql.SQL("{} ({})").format(sql.SQL(p), listed) for p in grant.privileges
        )
        yield sql.SQL("GRANT {} ON TABLE {} TO {}").format(each, target, grantee)
    if "INSERT" in grant.privileges:
        for sequence in table.sequences:
            schema, _, name = sequence.partition(".")
            yield sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
                sql.Identifier(schema, name), grantee
            )


def _do(body: sql.Composable, *, declares: bool = False) -> sql.Composed:
    block = body if declares else sql.SQL("BEGIN {} END").format(body)
    return sql.SQL("DO $flowpay$ {} $flowpay$").format(block)


def _text_array(values: Iterable[str]) -> sql.Composed:
    return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(map(sql.Literal, values)))
