"""Logging set-up shared by every role."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str, role: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {role} %(name)s: %(message)s",
        force=True,
    )
