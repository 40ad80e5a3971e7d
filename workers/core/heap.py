"""A role's start-up heap, out of the cyclic collector's walks.

A role's start-up (modules, pydantic's validators and models, FastAPI's routes, settings,
pools) builds a heap that lives as long as the process. Left to the collector, every full
collection walks all of it again, and a busy role allocates enough (decoded events, SQL
parameters, requests) to trigger collections often (docs/performance.md has what it cost).
Each role settles its heap once its start-up is done, before its loop: for those whose loop
builds its pools and engines itself, those are left to the collector, a small part.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect what start-up left as garbage, then freeze the rest out of later collections.

    Frozen objects are still freed by reference counting; only cycles among them would stay.
    Calling it again (a second loop in the same process) freezes what was built since.
    """
    gc.collect()
    gc.freeze()
