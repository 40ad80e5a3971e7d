"""A local stack of its own that the pytest-xdist workers share, started by `flowpay dev up`.

The first worker in starts it, the last one out stops it, so that a session pays for its
servers' start once however the tests that need them spread over the workers.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import tomli_w
from filelock import FileLock

from tests.conftest import flowpay


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLOWPAY_")}


@contextmanager
def shared_stack(
    shared_dir: Path,
    make_config: Callable[[], dict[str, object]],
    up_args: tuple[str, ...],
    stop_config: Callable[[Path], Path] = lambda given: given,
    remove: Path | None = None,
) -> Iterator[Path]:
    """`flowpay dev up --infra-only *up_args` on the configuration ``make_config`` gives (made
    once, in ``shared_dir``); yields that configuration's path. ``stop_config`` names the
    configuration `dev down` is given at the end (`dev up --secure` writes one of its own);
    ``remove`` is deleted after it (a stack's home outside the session's directory)."""
    shared_dir.mkdir(parents=True, exist_ok=True)
    user_config = shared_dir / "flowpay.toml"
    users = shared_dir / "users"
    with FileLock(str(shared_dir / ".lock")):
        if not user_config.exists():
            user_config.write_text(tomli_w.dumps(make_config()))
        done = flowpay(
            "--config", str(user_config), "dev", "up", "--infra-only", *up_args,
            env=clean_env(), timeout=300,
        )  # fmt: skip
        if done.returncode != 0 and not users.exists():
            _down(stop_config(user_config), remove)  # what started of it, nobody else uses
        assert done.returncode == 0, done.stdout + done.stderr
        users.write_text(str(int(users.read_text() or "0") + 1 if users.exists() else 1))
    try:
        yield user_config
    finally:
        with FileLock(str(shared_dir / ".lock")):
            left = int(users.read_text()) - 1
            users.write_text(str(left))
            if left == 0:
                _down(stop_config(user_config), remove)


def _down(config: Path, remove: Path | None) -> None:
    flowpay("--config", str(config), "dev", "down", env=clean_env(), timeout=120)
    if remove is not None:
        shutil.rmtree(remove, ignore_errors=True)


def shared_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str) -> Path:
    """``name`` in the session's directory, in which every xdist worker's lies."""
    session_dir = tmp_path_factory.getbasetemp()
    return (session_dir.parent if worker_id != "master" else session_dir) / name
