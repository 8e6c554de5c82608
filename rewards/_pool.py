"""A persistent pool of worker processes that gives every item a hard, killable deadline.

Why not `multiprocessing.Pool` or `concurrent.futures`: neither can stop one stuck task. Here each worker reports a
result per item, so the parent always knows which item a worker is on and since when; a worker that overruns its
item's deadline is killed, the item is reported as `Failure.TIMED_OUT`, and the rest of that worker's share of the
batch is handed to a freshly started replacement.

Workers are started with the `forkserver` method where the platform has it (else `spawn`): the caller may be a
trainer with many threads, where `fork` is unsafe. The fork server imports the `preload` modules once, so replacing
a killed worker costs a fork rather than a fresh interpreter. Timing uses only `multiprocessing.connection.wait` in
the calling thread, so `map` works from any thread. Workers are stopped by `close`, when the pool is garbage
collected, and at interpreter exit.
"""

from __future__ import annotations

import enum
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

logger = logging.getLogger(__name__)


class Failure(enum.Enum):
    """Why an item has no result."""

    TIMED_OUT = "timed_out"
    ERROR = "error"  # the function raised, or the worker died or could not start


@dataclass
class _Worker:
    process: Any  # multiprocessing.process.BaseProcess
    conn: Connection
    started_at: float
    ready: bool = False
    pending: deque = field(default_factory=deque)  # (index, args) in the order the worker runs them
    item_started_at: float = 0.0


def _worker_main(
    conn: Connection,
    func: Callable[..., Any],
    initializer: Callable[[], None] | None,
    memory_limit_mb: int | None,
) -> None:
    """Worker loop: run each item of a received chunk and send `(batch, index, ok, value)` for it straight away."""
    # Ctrl-C is for the parent, which stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    _limit_memory(memory_limit_mb)
    if initializer is not None:
        initializer()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        batch, chunk = message
        for index, args in chunk:
            try:
                reply = (batch, index, True, func(*args))
            except Exception as error:  # reported to the parent; the worker lives on
                reply = (batch, index, False, f"{type(error).__name__}: {error}")
            try:
                conn.send(reply)
            except (EOFError, OSError):
                return


def _die_with_parent() -> None:
    """Ask Linux to kill this worker if its parent dies, so a stuck item cannot outlive the pool."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _limit_memory(memory_limit_mb: int | None) -> None:
    if not memory_limit_mb:
        return
    try:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except Exception:
        logger.debug("Could not limit worker memory", exc_info=True)


def _stop_worker(worker: _Worker) -> None:
    try:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
    except Exception:
        pass
    try:
        worker.conn.close()
    except Exception:
        pass


def _stop_all(workers: list[_Worker | None]) -> None:
    for slot, worker in enumerate(workers):
        if worker is not None:
            try:
                worker.conn.send(None)
            except Exception:
                pass
            _stop_worker(worker)
            workers[slot] = None


class WorkerPool:
    """Runs `func(*args)` for a batch of items in persistent worker processes, each item under a deadline.

    Args:
        func (`Callable`): A module-level function (it is sent to the workers by reference).
        num_workers (`int`): Number of worker processes.
        timeout_seconds (`float`): Deadline for one item, counted from when its worker starts it.
        initializer (`Callable`, *optional*):
            Run once in each worker before it takes work (not counted in any deadline).
        preload (`Sequence[str]`, *optional*): Modules the fork server imports once, so that new workers start warm.
        start_timeout_seconds (`float`, defaults to 120.0): How long a new worker may take to report ready.
        memory_limit_mb (`int`, *optional*): Address-space limit for each worker; None for no limit.
        start_method (`str`, *optional*): `"forkserver"` or `"spawn"`; by default forkserver where available.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        num_workers: int,
        timeout_seconds: float,
        initializer: Callable[[], None] | None = None,
        preload: Sequence[str] = (),
        start_timeout_seconds: float = 120.0,
        memory_limit_mb: int | None = None,
        start_method: str | None = None,
    ):
        if num_workers < 1:
            raise ValueError("num_workers must be at least 1")
        self.func = func
        self.num_workers = num_workers
        self.timeout_seconds = timeout_seconds
        self.initializer = initializer
        self.start_timeout_seconds = start_timeout_seconds
        self.memory_limit_mb = memory_limit_mb
        if start_method is None:
            start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self._context = multiprocessing.get_context(start_method)
        if start_method == "forkserver" and preload:
            self._context.set_forkserver_preload(list(preload))
        self._workers: list[_Worker | None] = [None] * num_workers
        self._lock = threading.Lock()
        self._batches = itertools.count()
        self._closed = False
        # Stops the workers when the pool is garbage collected and at interpreter exit; holds no reference to self.
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)

    # ---------------------------------------------------------------------------------------------------- public

    def map(self, items: Sequence[tuple]) -> list[Any]:
        """Run every item; returns one result per item, or a `Failure` for items that timed out or failed.

        All items go out at once, dealt round-robin across the workers (one message per worker), and the call
        returns when each item has a result or has failed. Safe to call from any thread; calls are serialised.
        """
        if not items:
            return []
        with self._lock:
            if self._closed:
                raise RuntimeError("The worker pool is closed.")
            return self._run_batch(items)

    def close(self) -> None:
        """Stop all workers. The pool cannot be used afterwards."""
        with self._lock:
            self._closed = True
            self._finalizer()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return [w.process.pid for w in self._workers if w is not None and w.process.is_alive()]

    # --------------------------------------------------------------------------------------------------- batches

    def _run_batch(self, items: Sequence[tuple]) -> list[Any]:
        batch = next(self._batches)
        # Every item is settled below; starting from ERROR guarantees no item can come back looking like a result.
        results: list[Any] = [Failure.ERROR] * len(items)
        remaining = len(items)
        for slot in range(self.num_workers):
            chunk = [(index, items[index]) for index in range(slot, len(items), self.num_workers)]
            if chunk:
                self._assign(slot, batch, chunk)
        while remaining:
            now = time.monotonic()
            remaining -= self._enforce_deadlines(batch, results, now)
            if not remaining:
                break
            live = {w.conn: slot for slot, w in enumerate(self._workers) if w is not None and w.pending}
            if not live:
                break
            for conn in wait(list(live), timeout=self._next_deadline(now)):
                remaining -= self._receive(live[conn], batch, results)
        return results

    def _assign(self, slot: int, batch: int, chunk: list[tuple[int, tuple]]) -> None:
        worker = self._workers[slot]
        if worker is not None and (worker.pending or not worker.process.is_alive()):
            # Left busy by an interrupted earlier call, or dead: start afresh.
            _stop_worker(worker)
            worker = None
        if worker is None:
            worker = self._start_worker()
            self._workers[slot] = worker
        worker.pending = deque(chunk)
        if worker.ready:
            self._send_chunk(worker, batch)

    def _send_chunk(self, worker: _Worker, batch: int) -> None:
        worker.item_started_at = time.monotonic()
        try:
            worker.conn.send((batch, list(worker.pending)))
        except OSError:
            # The worker died after reporting ready; `_receive` sees its end of file and replaces it.
            logger.debug("Could not send work to a worker", exc_info=True)

    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(child_conn, self.func, self.initializer, self.memory_limit_mb),
            daemon=True,
            name="rewards-math-worker",
        )
        process.start()
        child_conn.close()
        return _Worker(process=process, conn=parent_conn, started_at=time.monotonic())

    def _next_deadline(self, now: float) -> float:
        deadlines = []
        for worker in self._workers:
            if worker is None or not worker.pending:
                continue
            if worker.ready:
                deadlines.append(worker.item_started_at + self.timeout_seconds)
            else:
                deadlines.append(worker.started_at + self.start_timeout_seconds)
        return max(0.0, min(deadlines) - now) if deadlines else 0.0

    def _receive(self, slot: int, batch: int, results: list[Any]) -> int:
        """Handle one message from a worker; returns how many items it settled."""
        worker = self._workers[slot]
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            return self._worker_died(slot, batch, results)
        if message[0] == "ready":
            worker.ready = True
            self._send_chunk(worker, batch)
            return 0
        message_batch, index, ok, value = message
        if message_batch != batch or not worker.pending or worker.pending[0][0] != index:
            return 0  # a late reply from an interrupted earlier batch
        worker.pending.popleft()
        worker.item_started_at = time.monotonic()
        if not ok:
            logger.debug("Item %d failed in a worker: %s", index, value)
        results[index] = value if ok else Failure.ERROR
        return 1

    def _enforce_deadlines(self, batch: int, results: list[Any], now: float) -> int:
        settled = 0
        for slot, worker in enumerate(self._workers):
            if worker is None or not worker.pending or worker.conn.poll():
                continue  # a worker with a reply waiting has finished its item; the reply is read next
            if worker.ready and now - worker.item_started_at > self.timeout_seconds:
                index, _ = worker.pending.popleft()
                results[index] = Failure.TIMED_OUT
                logger.info("An item ran past its %.1f s deadline; restarting its worker.", self.timeout_seconds)
                settled += 1
                self._replace(slot, batch)
            elif not worker.ready and now - worker.started_at > self.start_timeout_seconds:
                logger.warning("A worker did not start within %.0f s.", self.start_timeout_seconds)
                settled += self._abandon(slot, results)
        return settled

    def _worker_died(self, slot: int, batch: int, results: list[Any]) -> int:
        worker = self._workers[slot]
        if not worker.ready:
            logger.warning("A worker exited while starting (exit code %s).", worker.process.exitcode)
            return self._abandon(slot, results)
        index, _ = worker.pending.popleft()
        results[index] = Failure.ERROR
        logger.info("A worker died on an item (exit code %s); restarting it.", worker.process.exitcode)
        self._replace(slot, batch)
        return 1

    def _replace(self, slot: int, batch: int) -> None:
        """Kill the worker in `slot` and give its unfinished items to a new one."""
        worker = self._workers[slot]
        _stop_worker(worker)
        self._workers[slot] = None
        if worker.pending:
            self._assign(slot, batch, list(worker.pending))

    def _abandon(self, slot: int, results: list[Any]) -> int:
        """Fail every item of a worker that cannot start (starting another would most likely fail the same way)."""
        worker = self._workers[slot]
        for index, _ in worker.pending:
            results[index] = Failure.ERROR
        settled = len(worker.pending)
        worker.pending.clear()
        _stop_worker(worker)
        self._workers[slot] = None
        return settled
