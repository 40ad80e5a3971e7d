"""What the server processes of one ``serve-api`` share without asking the database: each API
key's rate-limit bucket (``rate_limit.py``) and its open event streams (``stream_quota.py``).

``serve-api``'s parent process creates a file in shared memory (``/dev/shm``) before it starts
the server processes, and each of them maps it. The file holds tables of keys cut into
stripes, each stripe behind a process-shared, robust POSIX mutex: taking one costs no system
call unless another process holds it (taking and releasing an ``fcntl`` lock cost about as
much again as the rest of the rate limit's work), and one whose holder was killed is handed
to the next taker rather than left locked. Each process also holds an ``fcntl`` record lock
of its own for its whole life (its process slot): the kernel drops it when the process dies,
so another process that can take it knows, which is how the open streams of a killed process
stop counting. The file stays mapped for the process's life: a robust mutex's memory must be
mapped when its holder dies, or the kernel cannot mark it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ENV: Final = "FLOWPAY_API_SHARED_STATE"  # the file's path, for the server processes
_HEADER: Final = struct.Struct("=8sI")  # magic, process slots
_MAGIC: Final = b"flowpay1"
_HEADER_SIZE: Final = 64
_MUTEX_SIZE: Final = 64  # room for a pthread_mutex_t (40 bytes on x86-64 glibc, 48 on arm64)
_SHM: Final = Path("/dev/shm")  # noqa: S108 (shared memory; mkstemp makes the file private)
_PREFIX: Final = "flowpay-api-"

_libc = ctypes.CDLL(None, use_errno=True)
_mutex_lock = _libc.pthread_mutex_lock
_mutex_unlock = _libc.pthread_mutex_unlock
_mutex_consistent = _libc.pthread_mutex_consistent
for _function in (_mutex_lock, _mutex_unlock, _mutex_consistent):
    _function.argtypes, _function.restype = [ctypes.c_void_p], ctypes.c_int


@dataclass(frozen=True)
class TableSpec:
    stripes: int
    ways: int  # slots per stripe
    record: struct.Struct  # what each slot holds beside its key

    @property
    def stripe_size(self) -> int:
        return _MUTEX_SIZE + self.ways * (8 + self.record.size)


# Rate-limit buckets: tokens and when they were counted (time.monotonic: one clock for every
# process). 32,768 slots, for the keys whose bucket is not full again yet.
RATE_TABLE: Final = TableSpec(stripes=4096, ways=8, record=struct.Struct("=dd"))


def stream_table(processes: int) -> TableSpec:
    """Open streams per key: a count per process slot, so a dead process's can be dropped."""
    return TableSpec(stripes=1024, ways=16, record=struct.Struct(f"={processes}H"))


class SharedState:
    """The mapped file and its tables (one process's handle on it)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.processes = _read_header(fd)
        specs = _specs(self.processes)
        self._map = mmap.mmap(fd, _size(specs))
        # The mutexes are called by address: the map stays for the process's life.
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        offsets = _offsets(specs)
        self.rates, self.streams = (
            StripedTable(self._map, address, spec, offset)
            for spec, offset in zip(specs, offsets, strict=True)
        )

    @classmethod
    def open(cls, path: Path) -> SharedState:
        # Opened once per process: closing any descriptor of a file drops every record lock
        # the process holds on it (its process slot).
        return cls(os.open(path, os.O_RDWR))

    @classmethod
    def private(cls) -> SharedState:
        """A state of this process alone (an app made without ``serve-api``, as in tests)."""
        fd, path = tempfile.mkstemp(prefix=_PREFIX)
        os.unlink(path)
        _initialise(fd, processes=1)
        return cls(fd)

    def claim_process_slot(self) -> int | None:
        """A process slot for this process, held until it exits; None if every one is taken."""
        for slot in range(self.processes):
            if self._try_lock(slot):
                return slot
        return None

    def process_alive(self, slot: int) -> bool:
        """Whether the process holding ``slot`` lives (never ask about this process's own)."""
        if not self._try_lock(slot):
            return True
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, slot)
        return False

    def _try_lock(self, slot: int) -> bool:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
        except OSError:  # another process holds it
            return False
        return True


class StripedTable:
    """Keys (non-zero 64-bit numbers) in slots, ``ways`` per stripe; key 0 is a free slot.

    A stripe is its mutex, its slots' keys, then their records. Callers lock a stripe around
    each read and write of it.
    """

    def __init__(self, buffer: mmap.mmap, address: int, spec: TableSpec, offset: int) -> None:
        self.stripes = spec.stripes
        self._buffer = buffer
        self._keys = struct.Struct(f"={spec.ways}Q")
        self._record = spec.record
        self._stripe_size = spec.stripe_size
        self._offset = offset + _MUTEX_SIZE  # of the first stripe's keys
        self._address = address + offset  # of the first stripe's mutex

    def lock(self, stripe: int) -> None:
        mutex = self._address + stripe * self._stripe_size
        if _mutex_lock(mutex) == errno.EOWNERDEAD:
            # Its holder died mid-update. Each write is one pack of a key or of a record, so
            # the stripe holds whole values: carry on with it.
            _mutex_consistent(mutex)

    def unlock(self, stripe: int) -> None:
        _mutex_unlock(self._address + stripe * self._stripe_size)

    def keys(self, stripe: int) -> tuple[int, ...]:
        return self._keys.unpack_from(self._buffer, self._offset + stripe * self._stripe_size)

    def record(self, stripe: int, way: int) -> tuple[float, ...]:
        return self._record.unpack_from(self._buffer, self._record_at(stripe, way))

    def put(self, stripe: int, way: int, record: tuple[float, ...], key: int | None = None) -> None:
        """Write a slot's record, and its key when given (a slot taken, or freed with 0)."""
        if key is not None:
            at = self._offset + stripe * self._stripe_size + way * 8
            struct.pack_into("=Q", self._buffer, at, key)
        self._record.pack_into(self._buffer, self._record_at(stripe, way), *record)

    def _record_at(self, stripe: int, way: int) -> int:
        start = self._offset + stripe * self._stripe_size + self._keys.size
        return start + way * self._record.size


def key_number(digest: bytes) -> int:
    """A table key from an API key's SHA-256 digest (64 of its bits; never 0, the free slot)."""
    return int.from_bytes(digest[:8], "little") or 1


@contextlib.contextmanager
def shared_for_server(processes: int) -> Iterator[None]:
    """Create the state for ``processes`` server processes (and those started to replace
    them) and name it in the environment they inherit, until the block (uvicorn) ends."""
    directory = _SHM if _SHM.is_dir() else Path(tempfile.gettempdir())
    _remove_abandoned(directory)
    fd, path = tempfile.mkstemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=directory)
    try:
        # Twice the server processes: uvicorn starts a replacement before it retires one.
        _initialise(fd, processes=2 * processes)
    finally:
        os.close(fd)  # each server process opens it itself (with one, this process)
    os.environ[ENV] = path
    try:
        yield
    finally:
        os.environ.pop(ENV, None)
        Path(path).unlink(missing_ok=True)


def for_this_process() -> SharedState:
    """The state ``serve-api`` made for its server processes, or one of this process's own."""
    path = os.environ.get(ENV)
    return SharedState.open(Path(path)) if path else SharedState.private()


def _specs(processes: int) -> tuple[TableSpec, TableSpec]:
    return RATE_TABLE, stream_table(processes)


def _offsets(specs: tuple[TableSpec, ...]) -> list[int]:
    offsets, offset = [], _HEADER_SIZE
    for spec in specs:
        offsets.append(offset)
        offset += spec.stripes * spec.stripe_size
    return offsets


def _size(specs: tuple[TableSpec, ...]) -> int:
    return _HEADER_SIZE + sum(spec.stripes * spec.stripe_size for spec in specs)


def _initialise(fd: int, processes: int) -> None:
    """Size the file, write its header and make every stripe's mutex process-shared and robust."""
    specs = _specs(processes)
    os.ftruncate(fd, _size(specs))
    os.pwrite(fd, _HEADER.pack(_MAGIC, processes), 0)
    attributes = ctypes.create_string_buffer(64)  # pthread_mutexattr_t, 4 bytes on glibc
    _check(_libc.pthread_mutexattr_init(attributes))
    _check(_libc.pthread_mutexattr_setpshared(attributes, 1))  # PTHREAD_PROCESS_SHARED
    _check(_libc.pthread_mutexattr_setrobust(attributes, 1))  # PTHREAD_MUTEX_ROBUST
    with mmap.mmap(fd, _size(specs)) as mapped:
        view = ctypes.c_char.from_buffer(mapped)
        address = ctypes.addressof(view)
        for spec, offset in zip(specs, _offsets(specs), strict=True):
            for stripe in range(spec.stripes):
                mutex = ctypes.c_void_p(address + offset + stripe * spec.stripe_size)
                _check(_libc.pthread_mutex_init(mutex, attributes))
        del view  # the map cannot close while a view of it is exported
    _libc.pthread_mutexattr_destroy(attributes)


def _check(result: int) -> None:
    if result != 0:
        raise OSError(result, os.strerror(result))


def _read_header(fd: int) -> int:
    magic, processes = _HEADER.unpack(os.pread(fd, _HEADER.size, 0))
    if magic != _MAGIC:
        raise RuntimeError("not a FlowPay API shared state file")
    return int(processes)


def _remove_abandoned(directory: Path) -> None:
    """Files of serve-api processes that were killed (SIGKILL leaves no chance to clean up)."""
    for path in directory.glob(f"{_PREFIX}*-*"):
        pid = path.name.removeprefix(_PREFIX).partition("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True
