"""The deployment files agree with the code: Dockerfile, docker-compose.yml, flowpay.toml.example.

No Docker engine is needed: the files are only parsed.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import BaseModel

from flowpay_cli.main import app
from workers.core.config import KAFKA_ROLES, Settings, load_settings
from workers.devstack import deploy_credentials

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
EXAMPLE = ROOT / "flowpay.toml.example"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
MAKEFILE = ROOT / "Makefile"
PYPROJECT = ROOT / "pyproject.toml"


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_flowpay_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read FLOWPAY_* variables; the ones of whoever runs the tests must not count."""
    for name in list(os.environ):
        if name.startswith("FLOWPAY_"):
            monkeypatch.delenv(name)


def _resolve(argv: list[str]) -> list[str]:
    """The command path `flowpay ARGV` runs, e.g. ["db", "init"]; fails on an unknown name."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    for word in argv:
        subcommands = getattr(command, "commands", None)
        if subcommands is None or word.startswith("-"):
            break  # a leaf command: the rest are its arguments
        assert word in subcommands, f"`flowpay {' '.join([*path, word])}` is not a command"
        command = subcommands[word]
        path.append(word)
    assert path, f"`flowpay {' '.join(argv)}` names no command"
    assert getattr(command, "commands", None) is None, f"`flowpay {' '.join(path)}` is a group"
    return path


def _top_level_commands() -> set[str]:
    group: Any = typer.main.get_command(app)
    return {c.name for c in group.commands.values()}


def _compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def _flowpay_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _compose_services().items() if "build" in s}


def _long_running(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("restart", "no") != "no"}


def _healthcheck_test(service: dict[str, Any]) -> list[str]:
    health = service.get("healthcheck") or {}
    assert not health.get("disable", False)
    test = health.get("test") or []
    return [test] if isinstance(test, str) else list(test)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _field_paths(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], Any]:
    """Every leaf setting as (section, ..., key) -> its default."""
    paths: dict[tuple[str, ...], Any] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.update(_field_paths(annotation, (*prefix, name)))
        else:
            paths[(*prefix, name)] = field.default
    return paths


def _example_sections() -> dict[str, list[str]]:
    """The example's lines per TOML table; "" holds the top-level lines before any table."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in EXAMPLE.read_text().splitlines():
        header = re.fullmatch(r"\[([A-Za-z0-9_.]+)\]\s*", line)
        if header:
            current = header.group(1)
            sections.setdefault(current, [])
        else:
            sections[current].append(line)
    return sections


def _key_line(lines: list[str], key: str, commented: bool) -> int:
    pattern = rf"# {re.escape(key)} = \S.*" if commented else rf"{re.escape(key)} = \S.*"
    matches = [i for i, line in enumerate(lines) if re.fullmatch(pattern, line)]
    assert len(matches) == 1, f"expected one `{pattern}` line, found {len(matches)}"
    return matches[0]


# --- docker-compose.yml ------------------------------------------------------------------------


def test_every_built_service_runs_a_real_flowpay_command() -> None:
    names = _top_level_commands()
    services = _flowpay_services()
    assert services
    for name, service in services.items():
        command = service.get("command")
        assert isinstance(command, list), f"{name}: command must be an exec-form list"
        assert command[0] in names, f"{name}: `flowpay {command[0]}` is not a command"
        _resolve(command)


def test_every_long_running_command_has_a_service() -> None:
    roles = {n for n in _top_level_commands() if n.startswith(("run-", "serve-"))}
    running = {s["command"][0] for s in _long_running(_flowpay_services()).values()}
    assert roles <= running, f"no compose service runs {sorted(roles - running)}"


def test_long_running_roles_have_healthchecks() -> None:
    roles = _long_running(_flowpay_services())
    assert roles
    for name, service in roles.items():
        test = _healthcheck_test(service)
        assert test, f"{name}: no healthcheck"
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test {test}"
        assert len(test) > 1, f"{name}: empty healthcheck command"


def test_flowpay_healthchecks_are_real_commands_for_their_own_role() -> None:
    # Depends on `flowpay health ROLE` existing in the CLI.
    checked = 0
    for name, service in _long_running(_flowpay_services()).items():
        test = _healthcheck_test(service)
        if test[1:2] != ["flowpay"]:
            continue
        assert _resolve(test[2:]) == ["health"], f"{name}: healthcheck {test}"
        assert test[3:] == [name], f"{name}: healthcheck checks another role: {test}"
        checked += 1
    assert checked, "no role is checked with `flowpay health`"


def test_http_roles_check_healthz_on_the_port_they_serve() -> None:
    checked = 0
    for name, service in _long_running(_flowpay_services()).items():
        command = service["command"]
        if not command[0].startswith("serve-"):
            continue
        port = command[command.index("--port") + 1]
        test = " ".join(_healthcheck_test(service))
        assert f"http://127.0.0.1:{port}/healthz" in test, f"{name}: healthcheck {test}"
        checked += 1
    assert checked


def test_infrastructure_has_healthchecks() -> None:
    services = _compose_services()
    for name in ("kafka", "postgres"):
        test = _healthcheck_test(services[name])
        assert len(test) > 1, f"{name}: no healthcheck"
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in _healthcheck_test(services["kafka"])
    assert "pg_isready" in " ".join(_healthcheck_test(services["postgres"]))


def _jobs(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The one-shot jobs every `up` runs (not those of a profile, run by hand)."""
    return {n: s for n, s in services.items() if s.get("restart") == "no" and "profiles" not in s}


def test_startup_order_waits_for_setup() -> None:
    services = _flowpay_services()
    jobs = _jobs(services)
    assert sorted(s["command"] for s in jobs.values()) == [
        ["db", "init"],
        ["kafka", "acls", "apply"],
        ["topics", "create"],
    ]
    for name in jobs:
        depends = services[name]["depends_on"]
        for infra in ("kafka", "postgres"):
            assert depends[infra]["condition"] == "service_healthy", f"{name} -> {infra}"
    # Topics are created by the operator's principal, which the ACLs let do so.
    assert services["topics"]["depends_on"]["kafka-acls"]["condition"] == (
        "service_completed_successfully"
    )
    for name, service in _long_running(services).items():
        depends = service["depends_on"]
        for job in jobs:
            assert depends[job]["condition"] == "service_completed_successfully", name


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `flowpay deploy credentials` writes for compose (deploy/secrets)."""
    directory = tmp_path_factory.mktemp("secrets")
    deploy_credentials.make(directory, db_host="postgres", kafka_host="kafka")
    return directory


def _env_files(service: dict[str, Any], credentials: Path) -> dict[str, dict[str, str]]:
    """Each env file a service names (under deploy/secrets/), as `flowpay deploy credentials`
    writes it: file name -> its variables."""
    files = service.get("env_file") or []
    found: dict[str, dict[str, str]] = {}
    for name in [files] if isinstance(files, str) else files:
        assert name.startswith("deploy/secrets/"), f"env file {name} is not a made one"
        path = credentials / name.removeprefix("deploy/secrets/")
        assert path.is_file(), f"`flowpay deploy credentials` writes no {name}"
        lines = path.read_text().splitlines()
        found[path.name] = dict(line.split("=", 1) for line in lines)
    return found


def test_deploy_credentials_are_owner_only_and_kept(credentials: Path) -> None:
    before = {p.name: p.read_bytes() for p in credentials.glob("*.env")}
    assert before
    deploy_credentials.make(credentials, db_host="postgres", kafka_host="kafka")
    assert {p.name: p.read_bytes() for p in credentials.glob("*.env")} == before
    for path in [*credentials.glob("*.env"), credentials / "tls" / "broker-keystore.pem"]:
        assert path.stat().st_mode & 0o077 == 0, path


def test_the_broker_reads_its_tls_files_from_a_volume_its_user_owns(credentials: Path) -> None:
    # Written owner-only by whoever ran `deploy credentials`; the Kafka image runs as uid 1000.
    services = _compose_services()
    job, kafka = services["kafka-tls"], services["kafka"]
    assert job["user"] == "0:0"
    assert kafka["depends_on"]["kafka-tls"]["condition"] == "service_completed_successfully"
    assert "kafka-tls:/tls:ro" in kafka["volumes"]
    assert not any(v.startswith("./deploy/secrets") for v in kafka["volumes"])
    script = " ".join(job["command"])
    assert "chown -R 1000:1000 /tls" in script
    start = (COMPOSE.parent / "deploy" / "kafka" / "start.sh").read_text()
    for name in ("ca.pem", "broker-keystore.pem"):
        assert (credentials / "tls" / name).is_file()
        assert f"/tls-host/{name}" in script
        assert f"/tls/{name}" in start


def _is_setting(key: str, paths: set[str], tables: set[str]) -> bool:
    # A key of a table-valued setting (database.urls, kafka.principals) names one entry of it.
    return key in paths or any(key.startswith(f"{table}__") for table in tables)


def test_flowpay_env_names_real_settings_and_real_services(credentials: Path) -> None:
    fields = _field_paths(Settings)
    paths = {"__".join(path).upper() for path in fields}
    # Settings that are tables (database.urls, kafka.principals) or models (kafka.admin).
    tables = {"__".join(path).upper() for path, default in fields.items() if default == {}}
    tables.add("KAFKA__ADMIN")
    services = _compose_services()
    for name, service in _flowpay_services().items():
        env = dict(service["environment"])
        for values in _env_files(service, credentials).values():
            env |= values
        for key, value in env.items():
            if not key.startswith("FLOWPAY_"):
                continue
            assert _is_setting(key.removeprefix("FLOWPAY_"), paths, tables), f"{name}: {key}"
            if "__URLS__" in key or key.endswith("__ADMIN_URL"):
                db_host = re.search(r"@([^:/]+)", value)
                assert db_host is not None, f"{name}: no host in {key}"
                assert db_host.group(1) in services, f"{name}: database host {db_host.group(1)}"
        for server in env["FLOWPAY_KAFKA__BOOTSTRAP_SERVERS"].split(","):
            assert server.rsplit(":", 1)[0] in services, f"{name}: broker {server}"


def test_each_role_logs_in_as_itself_and_only_the_notifier_holds_the_key(
    credentials: Path,
) -> None:
    roles = {
        "serve-api": "api",
        "run-outbox": "outbox",
        "run-processor": "processor",
        "run-ledger": "ledger",
        "run-notifier": "notifier",
        "run-orchestrator": "orchestrator",
    }
    for name, service in _long_running(_flowpay_services()).items():
        role = roles.get(service["command"][0])
        env: dict[str, str] = {}
        for values in _env_files(service, credentials).values():
            env |= values
        urls = sorted(k for k in env if k.startswith("FLOWPAY_DATABASE__URLS__"))
        principals = {k for k in env if k.startswith("FLOWPAY_KAFKA__PRINCIPALS__")}
        if role is None:  # the gateway simulator: neither database nor Kafka
            assert not urls, name
            assert not principals, name
            continue
        assert urls == [f"FLOWPAY_DATABASE__URLS__{role.upper()}"], name
        assert f"flowpay_{role}:" in env[urls[0]], name
        assert principals == {
            f"FLOWPAY_KAFKA__PRINCIPALS__{role.upper()}__{k}" for k in ("USERNAME", "PASSWORD")
        }, name
        # The API seals new endpoint secrets, the notifier opens them: no other role holds it.
        assert ("FLOWPAY_SECRETS__KEY" in env) == (role in ("api", "notifier")), name
        assert "FLOWPAY_DATABASE__ADMIN_URL" not in env, name


def test_acls_are_applied_as_the_broker_for_every_roles_principal(credentials: Path) -> None:
    job = _compose_services()["kafka-acls"]
    env: dict[str, str] = {}
    for values in _env_files(job, credentials).values():
        env |= values
    assert env["FLOWPAY_KAFKA__ADMIN__USERNAME"] == "broker"
    for role in KAFKA_ROLES:
        username = env[f"FLOWPAY_KAFKA__PRINCIPALS__{role.upper()}__USERNAME"]
        assert username == f"flowpay-{role}", role


def test_the_broker_listens_with_sasl_ssl_and_enforces_acls() -> None:
    kafka = _compose_services()["kafka"]
    script = (ROOT / "deploy" / "kafka" / "start.sh").read_text()
    assert "./deploy/kafka/start.sh:/deploy/kafka/start.sh:ro" in kafka["volumes"]
    assert kafka["command"][-1] == "/deploy/kafka/start.sh"
    for line in (
        "listeners=SASL_SSL://:9094,CONTROLLER://localhost:9093",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
    ):
        assert line in script.splitlines(), line
    assert "PLAINTEXT://" not in script
    for service in _flowpay_services().values():
        assert service["environment"]["FLOWPAY_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"


def _scrape_targets() -> dict[str, list[str]]:
    """deploy/prometheus.yml: job name -> its targets."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    return {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }


def test_prometheus_service_mounts_the_repo_config() -> None:
    prometheus = _compose_services()["prometheus"]
    mounts = [v.split(":") for v in prometheus["volumes"]]
    config = [source for source, target, *_ in mounts if target == "/etc/prometheus/prometheus.yml"]
    assert config == ["./deploy/prometheus.yml"]
    assert (ROOT / config[0]).is_file()
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert len(_healthcheck_test(prometheus)) > 1


def test_prometheus_scrapes_every_role_on_its_metrics_port() -> None:
    metrics = Settings().metrics
    services = _flowpay_services()
    targets = _scrape_targets()
    # Each role's command (in compose) and the [metrics] key of its port.
    roles = {
        "serve-api": "api_port",
        "run-outbox": "outbox_port",
        "run-processor": "processor_port",
        "run-ledger": "ledger_port",
        "run-notifier": "notifier_port",
        "run-orchestrator": "orchestrator_port",
    }
    for command, key in roles.items():
        name = next(n for n, s in services.items() if s["command"][0] == command)
        port = getattr(metrics, key)
        assert port, f"metrics.{key} is off by default"
        assert f"{name}:{port}" in targets.get(name, []), f"prometheus does not scrape {name}"
        assert services[name]["environment"]["FLOWPAY_METRICS__HOST"] == "0.0.0.0", name
    every_target = [t for ts in targets.values() for t in ts]
    assert len(every_target) == len(set(every_target)) == len(roles)


# --- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_bases_are_python_311_or_newer_slim() -> None:
    instructions = _dockerfile_instructions()
    stages: set[str] = set()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert froms
    for args in froms:
        words = [w for w in args.split() if not w.startswith("--")]
        image = words[0]
        if image.lower() in stages:
            continue
        match = re.fullmatch(r"(?:docker\.io/(?:library/)?)?python:3\.(\d+)(?:\.\d+)*-slim", image)
        assert match is not None, f"FROM {image}: not a python:3.X-slim image"
        assert int(match.group(1)) >= 11, f"FROM {image}: older than Python 3.11"
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())


def test_dockerfile_runs_as_non_root() -> None:
    users = [args for keyword, args in _final_stage() if keyword == "USER"]
    assert users, "the final stage has no USER"
    user = users[-1].split(":")[0].strip()
    assert user not in ("root", "0", ""), f"USER {users[-1]}"


def test_dockerfile_entrypoint_is_flowpay() -> None:
    entrypoints = [args for keyword, args in _final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["flowpay"]


def test_dockerfile_copies_what_the_wheel_build_needs() -> None:
    copied = " ".join(args for keyword, args in _dockerfile_instructions() if keyword == "COPY")
    # pyproject names README.md as the readme; the migrations are package data under workers/.
    for needed in ("pyproject.toml", "uv.lock", "README.md", "workers", "flowpay_cli"):
        assert re.search(rf"(^|\s){re.escape(needed)}/?(\s|$)", copied), f"{needed} not copied"


def _required_uv() -> str:
    required: str = tomllib.loads(PYPROJECT.read_text())["tool"]["uv"]["required-version"]
    assert required.startswith("=="), f"uv is not pinned: {required}"
    return required.removeprefix("==")


def test_dockerfile_installs_the_lock_with_the_required_uv() -> None:
    runs = [args for keyword, args in _dockerfile_instructions() if keyword == "RUN"]
    assert f"pip install uv=={_required_uv()}" in runs
    syncs = [r for r in runs if r.startswith("uv sync")]
    assert syncs, "the image does not install from uv.lock"
    assert all("--locked" in r.split() for r in syncs), syncs
    assert not any(r.startswith("pip install .") for r in runs), "an install around the lock"


def test_makefile_installs_the_lock_and_refuses_one_out_of_date() -> None:
    targets = _make_targets()
    assert any("sync --locked" in line for line in targets["install"]), targets["install"]
    assert any(line.endswith(" lock") for line in targets["lock"]), targets["lock"]
    # The uv installed is the one pyproject.toml requires (read from it, not written twice).
    assert "required-version" in MAKEFILE.read_text()
    assert _required_uv()


def _make_targets() -> dict[str, list[str]]:
    """Each Makefile target's recipe lines."""
    targets: dict[str, list[str]] = {}
    current: list[str] = []
    for line in MAKEFILE.read_text().splitlines():
        rule = re.match(r"([A-Za-z$()_.-]+):(?!=)", line)
        if rule:
            current = targets.setdefault(rule.group(1), [])
        elif line.startswith("\t"):
            current.append(line.strip())
    return targets


# --- flowpay.toml.example ----------------------------------------------------------------------


def test_example_config_loads_to_the_defaults() -> None:
    assert load_settings(EXAMPLE) == Settings()


def test_example_config_documents_every_setting() -> None:
    parsed = tomllib.loads(EXAMPLE.read_text())
    sections = _example_sections()
    for path, default in _field_paths(Settings).items():
        *tables, key = path
        section = ".".join(tables)
        assert section in sections, f"no [{section}] table"
        lines = sections[section]
        table = parsed
        for name in tables:
            table = table[name]
        if default is None:
            assert key not in table, f"{'.'.join(path)} defaults to None: comment it out"
            index = _key_line(lines, key, commented=True)
        else:
            assert key in table, f"{'.'.join(path)} missing"
            index = _key_line(lines, key, commented=False)
        env = "FLOWPAY_" + "__".join(path).upper()
        comment = lines[index - 1] if index > 0 else ""
        assert comment.startswith("# "), f"{'.'.join(path)}: no comment line above it"
        assert env in comment, f"{'.'.join(path)}: its comment does not name {env}"


def test_example_config_commented_values_are_valid(tmp_path: Path) -> None:
    none_keys = {path for path, default in _field_paths(Settings).items() if default is None}
    assert none_keys
    text = EXAMPLE.read_text()
    for *_, key in none_keys:
        text = re.sub(rf"(?m)^# ({re.escape(key)} = )", r"\1", text)
    uncommented = tmp_path / "flowpay.toml"
    uncommented.write_text(text)
    settings = load_settings(uncommented).model_dump()
    for path in none_keys:
        value: Any = settings
        for name in path:
            value = value[name]
        assert value is not None, f"{'.'.join(path)}: the example value was not read"
