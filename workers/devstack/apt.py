"""Debian packages the stack (or its tests) needs, installed with apt-get when missing.

Idempotent and quick when everything is there: a package counts as present when the file it
is wanted for exists, so nothing is asked of apt then. Installing needs root.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from workers.core.errors import StackError

log = logging.getLogger(__name__)


def install_missing(
    wanted: Mapping[str, Path], before: Callable[[], None] | None = None
) -> list[str]:
    """Install each package of ``wanted`` (package -> a file it provides) whose file is
    missing; ``before`` runs first when there is something to install. Returns what it
    installed."""
    missing = [package for package, installed in wanted.items() if not installed.exists()]
    if not missing:
        return []
    if os.geteuid() != 0:
        raise StackError(f"missing Debian packages: run 'apt-get install {' '.join(missing)}'")
    if before is not None:
        before()
    log.info("installing %s with apt-get", " ".join(missing))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    return missing
