"""Threads named for the operating system, not only for Python.

Python's thread names stay inside the interpreter: ``top -H``, ``/proc/<pid>/task/*/comm`` and
py-spy's native view see every thread of a role as the process itself. A thread that names
itself here shows there as what it does (the kernel keeps the first 15 bytes), so the CPU a
role's consumer spends can be told apart from the rest of its process: the read model's threads
inside ``serve-api`` are what ``make bench`` reports as the read model.
"""

from __future__ import annotations

import threading
from typing import Final

import setproctitle

# The kernel's limit on a thread's name (TASK_COMM_LEN, 16 with its terminating NUL).
NAME_BYTES: Final = 15


def name_native() -> None:
    """Give the calling thread's Python name to the operating system as well.

    Used as a thread pool's ``initializer`` and at the top of a thread's target; never on a
    process's main thread, whose name is the process's own.
    """
    name = threading.current_thread().name
    setproctitle.setthreadtitle(name.encode()[:NAME_BYTES].decode(errors="ignore"))
