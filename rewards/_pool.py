"""A persistent pool of worker processes that gives every item a hard, killable deadline, and never makes up a result.

Why not `multiprocessing.Pool` or `concurrent.futures`: neither can stop one stuck task. Here each worker reports a
result per item, so the pool always knows which item a worker is on and since when; a worker that overruns its item's
deadline is killed, the item is reported as `Failure.TIMED_OUT`, and the rest of its work goes back to the queue.

How workers start. Not as multiprocessing `spawn` or `forkserver` processes: those re-import the caller's `__main__`
(`multiprocessing.spawn.prepare`), so a script without an `if __name__ == "__main__":` guard, `python -m` or
`python - < script` lost every worker while it started. Each pool instead starts one *zygote*: a fresh interpreter
(`subprocess`, running `rewards._worker`, never the caller's main module) that imports the `preload` modules and runs
`warm_up` once, then forks a worker whenever the pool asks. Measured on the project's 2-core machine, a fresh
interpreter with sympy and latex2sympy2_extended imported and warmed up is ready in about 2.5 s, a worker forked from
the warm zygote in about 15 ms. Starting each worker as its own interpreter would make every replacement of a killed
worker cost those 2.5 s, and a warm spare would hide only the first of them, while a batch of hostile answers kills one
worker per answer. The zygote is single-threaded, so forking it is safe even when the caller is a trainer with many
threads; workers share its modules and parser caches copy-on-write. The pool's end of each worker's channel is a socket
pair handed to the zygote with `SCM_RIGHTS`; see `rewards._worker` for the protocol.

Lifetime. A worker dies with its zygote (`PR_SET_PDEATHSIG`, exact because the zygote forks from its only thread, and
effective even while the worker is stuck in C code), and the zygote dies with the pool: when its control socket reaches
end of file (the pool closed, or its process died) or its parent process changes. The pool's process is deliberately
not the workers' parent: `PR_SET_PDEATHSIG` fires when the *thread* that forked a child exits, so workers of a pool
first used from a short-lived thread would die with that thread.

Failures are reported, never turned into results: a function that raised is `Failure.ERROR`, a worker that died on an
item `Failure.WORKER_DIED`, an item for which no worker could be started `Failure.START_FAILED`, and an item left when
the batch had used up its allowance of time for slow items (`batch_timeout_seconds`) `Failure.BATCH_TIMEOUT`. When no
worker at all can be started, `map` raises `WorkerStartError` with the reason (such as the traceback of an import).

Robustness:

- fork: the pool belongs to the process that created it. After `os.fork()` the child closes its copies of the
  channels, never messages or kills its parent's processes (not even at exit), and starts its own zygote on demand;
- Ctrl-C: an exception that interrupts `map` (such as `KeyboardInterrupt`) leaves the pool usable: workers that were
  busy or starting are replaced on the next call, since one may be stuck and their channels may hold half a message;
- threads: calls are serialised by a lock, and timing uses only `multiprocessing.connection.wait` in the calling
  thread, so `map` works from any thread.

POSIX only: it forks, and passes file descriptors over Unix sockets.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from rewards._worker import MAX_CONTROL_MESSAGE

logger = logging.getLogger(__name__)

# Run with `python -c`: the directory that holds this `rewards` package goes first on the path, so that the zygote runs
# the same code as the pool. Argument 1 (popped) is that directory, argument 2 the control socket's descriptor.
_BOOTSTRAP = "import sys; sys.path.insert(0, sys.argv.pop(1)); from rewards._worker import main; main()"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A slot whose worker fails to start this many times in one batch gets no more tries in that batch.
_START_ATTEMPTS = 2
_MAX_CHUNK = 64


class Failure(enum.Enum):
    """Why an item has no result."""

    TIMED_OUT = "timed_out"  # it ran past its own deadline, and its worker was killed
    OUT_OF_MEMORY = "out_of_memory"  # it raised MemoryError under the workers' memory limit
    ERROR = "error"  # the function raised
    WORKER_DIED = "worker_died"  # its worker died while running it
    START_FAILED = "start_failed"  # no worker could be started to run it
    BATCH_TIMEOUT = "batch_timeout"  # the batch ran out of time for slow items before it finished


class WorkerStartError(RuntimeError):
    """No worker process could be started (the message says why)."""


@dataclass
class _Worker:
    token: int  # the zygote's name for this worker
    conn: Connection
    started_at: float
    pid: int | None = None  # set when the worker reports ready
    pending: deque = field(default_factory=deque)  # (index, args) sent to it, in the order it runs them
    item_started_at: float = 0.0

    @property
    def ready(self) -> bool:
        return self.pid is not None


@dataclass
class _Zygote:
    process: subprocess.Popen
    control: socket.socket
    started_at: float
    ready: bool = False


class _Processes:
    """The zygote and worker channels that a pool owns in one process.

    Kept apart from the pool so that the pool's finalizer holds no reference to the pool, and tagged with the process
    that owns them, so that a forked child never stops or messages its parent's processes.
    """

    def __init__(self, num_workers: int):
        self.owner_pid = os.getpid()
        self.zygote: _Zygote | None = None
        self.workers: list[_Worker | None] = [None] * num_workers
        self.tokens = itertools.count()

    def owned(self) -> bool:
        return os.getpid() == self.owner_pid

    def tell_zygote(self, message: tuple, fds: Sequence[int] = ()) -> bool:
        """Send one control message; False (and the zygote is dropped) when it is gone."""
        zygote = self.zygote
        if zygote is None or not self.owned():
            return False
        try:
            socket.send_fds(zygote.control, [pickle.dumps(message)], list(fds))
            return True
        except OSError:
            self.drop_zygote()
            return False

    def discard_worker(self, slot: int) -> None:
        """Kill the worker in `slot` and forget it. Its items are the caller's to settle or requeue."""
        worker = self.workers[slot]
        if worker is None:
            return
        # Kill first: were this interrupted after the slot was cleared, nothing would stop a stuck worker.
        self.tell_zygote(("kill", worker.token))
        self.workers[slot] = None
        _close(worker.conn)

    def drop_zygote(self) -> None:
        zygote, self.zygote = self.zygote, None
        if zygote is None:
            return
        _close(zygote.control)  # the zygote kills its workers and exits when it reads end of file
        if self.owned():
            try:
                zygote.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                zygote.process.kill()
                zygote.process.wait(timeout=10)

    def shutdown(self) -> None:
        """Stop every process (in the owning process), or only close this process's copies of the channels."""
        for slot, worker in enumerate(self.workers):
            if worker is not None:
                self.workers[slot] = None
                _close(worker.conn)
        self.drop_zygote()


def _close(handle: Any) -> None:
    try:
        handle.close()
    except OSError:
        pass


# Pools in this process, so that a forked child can let go of its parent's processes (see `_after_fork_in_child`).
_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._leave_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass
class _Batch:
    id: int
    items: Sequence[tuple]
    results: list
    queue: deque  # indices of items not yet sent to a worker, in order
    remaining: int
    chunk_size: int
    start_failures: list[int]
    lost_seconds: float = 0.0  # worker-seconds spent on items that timed out or whose worker died
    start_error: str | None = None
    zygote_failed: bool = False
    ran_any: bool = False  # whether any worker was ready to take items in this batch


_UNSETTLED = object()


class WorkerPool:
    """Runs `func(*args)` for a batch of items in persistent worker processes, each item under a deadline.

    Args:
        func (`Callable`):
            A module-level function of an importable module (it is sent to the workers by reference; a function defined
            in `__main__` cannot be, since workers never import the caller's main module).
        num_workers (`int`): Number of worker processes.
        timeout_seconds (`float`): Deadline for one item, counted from when its worker starts it.
        batch_timeout_seconds (`float`, *optional*):
            Time one `map` call may lose to slow items, in all: the running time of the items that timed out, died or
            are still running, summed over the workers and divided by their number. When that reaches this budget,
            the items still unfinished are `Failure.BATCH_TIMEOUT`. Finished items and time spent starting workers do
            not count, so a large batch of ordinary items is never cut, while a batch of hanging items takes about
            this long rather than one `timeout_seconds` per item and worker. None: no batch deadline.
        initializer (`Callable`, *optional*):
            Run once in each worker before it takes work (not counted in any deadline); if it raises, the worker fails
            to start.
        warm_up (`Callable`, *optional*):
            Run once in the zygote, after `preload`; every worker starts with what it built (caches, lazy imports).
        preload (`Sequence[str]`, *optional*): Modules the zygote imports once, so that new workers start warm.
        start_timeout_seconds (`float`, defaults to 120.0): How long the zygote or a new worker may take to be ready.
        memory_limit_mb (`int`, *optional*): Address-space limit for each worker; None for no limit.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        num_workers: int,
        timeout_seconds: float,
        batch_timeout_seconds: float | None = None,
        initializer: Callable[[], None] | None = None,
        warm_up: Callable[[], None] | None = None,
        preload: Sequence[str] = (),
        start_timeout_seconds: float = 120.0,
        memory_limit_mb: int | None = None,
    ):
        if num_workers < 1:
            raise ValueError("num_workers must be at least 1")
        if batch_timeout_seconds is not None and batch_timeout_seconds <= 0:
            raise ValueError("batch_timeout_seconds must be positive")
        self.func = func
        self.num_workers = num_workers
        self.timeout_seconds = timeout_seconds
        self.batch_timeout_seconds = batch_timeout_seconds
        self.preload = tuple(preload)
        self.start_timeout_seconds = start_timeout_seconds
        self.memory_limit_mb = memory_limit_mb
        # Pickled now, so that a function that cannot be sent fails here rather than in a worker.
        self._functions = pickle.dumps((func, initializer, warm_up))
        self._lock = threading.Lock()
        self._batches = itertools.count()
        self._closed = False
        self._interrupted = False
        self._procs = _Processes(num_workers)
        # Stops the processes when the pool is garbage collected and at interpreter exit; holds no reference to self.
        self._finalizer = weakref.finalize(self, _Processes.shutdown, self._procs)
        _POOLS.add(self)

    # ---------------------------------------------------------------------------------------------------- public

    def map(self, items: Sequence[tuple]) -> list[Any]:
        """Run every item; returns one result per item, or a `Failure` for an item that has none.

        Items go to the workers in small chunks from one queue, and the call returns when each item has a result or a
        failure. Safe to call from any thread; calls are serialised.

        Raises:
            `WorkerStartError`: when no worker could be started and so no item could run.
        """
        if not items:
            return []
        with self._lock:
            if self._closed:
                raise RuntimeError("The worker pool is closed.")
            if not self._procs.owned():
                self._leave_parent()  # forked by something that skipped the at-fork hooks
            if self._interrupted:
                self._discard_unsettled_workers()
            zygote = self._procs.zygote
            if zygote is not None and zygote.process.poll() is not None:
                # Its workers died with it: replace them all now rather than lose an item to each.
                logger.warning(
                    "The worker zygote exited (exit code %s); starting a new one.", zygote.process.returncode
                )
                self._procs.shutdown()
            try:
                return self._run_batch(items)
            except BaseException:
                self._interrupted = True
                raise

    def close(self) -> None:
        """Stop the zygote and all workers. The pool cannot be used afterwards."""
        with self._lock:
            self._closed = True
            self._finalizer()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers that reported ready (for tests and diagnostics)."""
        return [w.pid for w in self._procs.workers if w is not None and w.pid is not None]

    @property
    def zygote_pid(self) -> int | None:
        """Process id of the zygote, if one is running for this process (for tests and diagnostics)."""
        zygote = self._procs.zygote
        return zygote.process.pid if zygote is not None and self._procs.owned() else None

    # ---------------------------------------------------------------------------------------------- housekeeping

    def _leave_parent(self) -> None:
        """In a forked child: let go of the parent's processes without touching them, and start afresh on demand."""
        self._lock = threading.Lock()  # another thread of the parent may have held it at the fork
        self._finalizer.detach()
        self._procs.shutdown()  # not the owner here: only closes this process's copies of the channels
        self._procs = _Processes(self.num_workers)
        self._finalizer = weakref.finalize(self, _Processes.shutdown, self._procs)
        self._interrupted = False

    def _discard_unsettled_workers(self) -> None:
        """After an interrupted call: replace the workers that were busy or starting, and a zygote that was starting
        (a busy worker may be stuck, and a channel may hold half a message or have lost a "ready"); keep the rest."""
        for slot, worker in enumerate(self._procs.workers):
            if worker is not None and (worker.pending or not worker.ready):
                self._procs.discard_worker(slot)
        if self._procs.zygote is not None and not self._procs.zygote.ready:
            self._procs.drop_zygote()
        self._interrupted = False

    # ---------------------------------------------------------------------------------------------------- zygote

    def _ensure_zygote(self) -> _Zygote:
        """The running, ready zygote, started and waited for if needed. Raises `WorkerStartError`."""
        procs = self._procs
        if procs.zygote is not None and procs.zygote.process.poll() is not None:
            procs.drop_zygote()
        if procs.zygote is None:
            self._start_zygote()
        zygote = procs.zygote
        while not zygote.ready:
            left = zygote.started_at + self.start_timeout_seconds - time.monotonic()
            if left <= 0:
                procs.drop_zygote()
                raise WorkerStartError(f"The worker zygote did not start within {self.start_timeout_seconds:.0f} s.")
            if not wait([zygote.control], timeout=left):
                continue
            data = zygote.control.recv(MAX_CONTROL_MESSAGE)
            if not data:
                procs.drop_zygote()
                raise WorkerStartError(
                    f"The worker zygote exited while starting (exit code {zygote.process.returncode})."
                )
            kind, value = pickle.loads(data)
            if kind == "ready":
                zygote.ready = True
            elif kind == "failed":
                procs.drop_zygote()
                raise WorkerStartError(f"The worker zygote failed to start:\n{value}")
        return zygote

    def _start_zygote(self) -> None:
        pool_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, _PACKAGE_ROOT, str(zygote_end.fileno())],
                pass_fds=(zygote_end.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # the caller's stdout is theirs; warnings still reach stderr
            )
        except OSError as error:
            pool_end.close()
            raise WorkerStartError(f"Could not start the worker zygote: {error}") from error
        finally:
            zygote_end.close()
        self._procs.zygote = _Zygote(process, pool_end, time.monotonic())
        config = {
            "sys_path": [os.getcwd() if path == "" else path for path in sys.path],
            "cwd": os.getcwd(),
            "preload": self.preload,
            "functions": self._functions,
            "memory_limit_mb": self.memory_limit_mb,
        }
        try:
            pool_end.send(pickle.dumps(config))
        except OSError:
            pass  # it already exited: `_ensure_zygote` reads the end of file

    # --------------------------------------------------------------------------------------------------- batches

    def _run_batch(self, items: Sequence[tuple]) -> list[Any]:
        batch = _Batch(
            id=next(self._batches),
            items=items,
            results=[_UNSETTLED] * len(items),
            queue=deque(range(len(items))),
            remaining=len(items),
            chunk_size=max(1, min(_MAX_CHUNK, len(items) // (4 * self.num_workers))),
            start_failures=[0] * self.num_workers,
        )
        while batch.remaining:
            now = time.monotonic()
            self._enforce_deadlines(batch, now)
            if not batch.remaining:
                break
            if self._lost(batch, now) >= self._budget:
                self._cut(batch)
                break
            self._dispatch(batch)
            # Every unsettled item is queued or with a worker; with no worker busy or starting, none can start.
            busy = {
                w.conn: slot
                for slot, w in enumerate(self._procs.workers)
                if w is not None and (w.pending or not w.ready)
            }
            if not busy:
                self._give_up(batch)
                break
            zygote = self._procs.zygote
            watched = [*busy, *([zygote.control] if zygote is not None and zygote.ready else [])]
            for handle in wait(watched, timeout=self._next_deadline(batch, now)):
                if zygote is not None and handle is zygote.control:
                    self._check_zygote(zygote)
                elif handle in busy:
                    worker = self._procs.workers[busy[handle]]
                    if worker is not None and worker.conn is handle:  # not discarded meanwhile
                        self._receive(busy[handle], batch)
        return batch.results

    def _dispatch(self, batch: _Batch) -> None:
        """Start workers for queued items, and send a chunk to every ready, idle worker."""
        procs = self._procs
        waiting = sum(1 for w in procs.workers if w is not None and not w.pending)
        for slot in range(self.num_workers):
            if len(batch.queue) <= waiting:
                break
            if procs.workers[slot] is None and self._can_start(batch, slot):
                if self._start_worker(batch, slot):
                    waiting += 1
        for slot, worker in enumerate(procs.workers):
            if not batch.queue:
                break
            if worker is not None and worker.ready and not worker.pending:
                self._send_chunk(batch, slot)

    def _can_start(self, batch: _Batch, slot: int) -> bool:
        return not batch.zygote_failed and batch.start_failures[slot] < _START_ATTEMPTS

    def _start_worker(self, batch: _Batch, slot: int) -> bool:
        try:
            self._ensure_zygote()
        except WorkerStartError as error:
            logger.warning("%s", error)
            batch.zygote_failed = True
            batch.start_error = str(error)
            return False
        pool_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        worker = _Worker(next(self._procs.tokens), Connection(pool_end.detach()), time.monotonic())
        # In its slot before the request goes out, so that an interrupted call finds it and stops it.
        self._procs.workers[slot] = worker
        try:
            sent = self._procs.tell_zygote(("fork", worker.token), [worker_end.fileno()])
        finally:
            worker_end.close()
        if not sent:
            # The zygote is gone (its workers with it); the next start tries a new one.
            self._procs.workers[slot] = None
            _close(worker.conn)
            self._start_failed(batch, slot, "the worker zygote exited", discard=False)
            return False
        return True

    def _send_chunk(self, batch: _Batch, slot: int) -> None:
        worker = self._procs.workers[slot]
        count = min(batch.chunk_size, len(batch.queue))
        worker.pending = deque((index, batch.items[index]) for index in (batch.queue.popleft() for _ in range(count)))
        worker.item_started_at = time.monotonic()
        try:
            worker.conn.send((batch.id, list(worker.pending)))
        except OSError:
            # It died while idle; nothing of this chunk ran.
            self._requeue(batch, worker)
            self._start_failed(batch, slot, "a worker exited while idle")
            return
        batch.ran_any = True

    def _next_deadline(self, batch: _Batch, now: float) -> float:
        deadlines = []
        running = 0
        for worker in self._procs.workers:
            if worker is None:
                continue
            if not worker.ready:
                deadlines.append(worker.started_at + self.start_timeout_seconds)
            elif worker.pending:
                deadlines.append(worker.item_started_at + self.timeout_seconds)
                running += 1
        if running:
            # The lost time grows by `running / num_workers` seconds a second until an item finishes.
            deadlines.append(now + (self._budget - self._lost(batch, now)) * self.num_workers / running)
        return max(0.0, min(deadlines) - now) if deadlines else 0.0

    @property
    def _budget(self) -> float:
        return math.inf if self.batch_timeout_seconds is None else self.batch_timeout_seconds

    def _lost(self, batch: _Batch, now: float) -> float:
        """Seconds the batch has lost to slow items so far (see `batch_timeout_seconds`); running items count, until
        they finish."""
        running = sum(now - w.item_started_at for w in self._procs.workers if w is not None and w.ready and w.pending)
        return (batch.lost_seconds + running) / self.num_workers

    # ----------------------------------------------------------------------------------------------- settlement

    def _settle(self, batch: _Batch, index: int, value: Any) -> None:
        batch.results[index] = value
        batch.remaining -= 1

    def _requeue(self, batch: _Batch, worker: _Worker) -> None:
        """Put a worker's unfinished items back at the front of the queue, in order."""
        batch.queue.extendleft(index for index, _ in reversed(worker.pending))
        worker.pending.clear()

    def _receive(self, slot: int, batch: _Batch) -> None:
        """Handle one message from the worker in `slot`."""
        worker = self._procs.workers[slot]
        try:
            message = worker.conn.recv()
        except Exception:  # end of file, a reset, or half a message: the worker is gone
            message = None
        now = time.monotonic()
        if not worker.ready:
            if isinstance(message, tuple) and message[0] == "ready":
                worker.pid = message[1]
            elif isinstance(message, tuple) and message[0] == "failed":
                self._start_failed(batch, slot, f"a worker failed to start:\n{message[1]}")
            else:
                self._start_failed(batch, slot, "a worker exited while starting")
            return
        if message is None:
            index, _ = worker.pending.popleft()
            batch.lost_seconds += now - worker.item_started_at
            self._settle(batch, index, Failure.WORKER_DIED)
            logger.info("A worker died while running an item; restarting it.")
            self._requeue(batch, worker)
            self._procs.discard_worker(slot)
            return
        expected = (batch.id, worker.pending[0][0]) if worker.pending else None
        if not (isinstance(message, tuple) and len(message) == 4 and message[:2] == expected):
            # Cannot happen while busy workers are replaced after an interruption; trust nothing from this one.
            logger.warning("A worker replied out of turn; replacing it.")
            self._requeue(batch, worker)
            self._procs.discard_worker(slot)
            return
        _, index, status, value = message
        worker.pending.popleft()
        worker.item_started_at = now
        if status == "ok":
            self._settle(batch, index, value)
        elif status == "out_of_memory":
            self._settle(batch, index, Failure.OUT_OF_MEMORY)
        else:
            logger.info("Item %d raised in a worker: %s", index, value)
            self._settle(batch, index, Failure.ERROR)

    def _start_failed(self, batch: _Batch, slot: int, reason: str, discard: bool = True) -> None:
        logger.warning("%s", reason)
        batch.start_failures[slot] += 1
        batch.start_error = reason
        if discard:
            self._procs.discard_worker(slot)

    def _check_zygote(self, zygote: _Zygote) -> None:
        """The zygote's control socket is readable only if it exited (its workers exit with it)."""
        try:
            data = zygote.control.recv(MAX_CONTROL_MESSAGE)
        except OSError:
            data = b""
        if not data:
            logger.warning("The worker zygote exited (exit code %s); starting a new one.", zygote.process.poll())
            self._procs.drop_zygote()

    def _enforce_deadlines(self, batch: _Batch, now: float) -> None:
        for slot, worker in enumerate(self._procs.workers):
            if worker is None:
                continue
            if not worker.ready:
                if now - worker.started_at >= self.start_timeout_seconds:
                    self._start_failed(
                        batch, slot, f"a worker did not start within {self.start_timeout_seconds:.0f} s"
                    )
                continue
            if not worker.pending or now - worker.item_started_at < self.timeout_seconds:
                continue
            if worker.conn.poll():
                continue  # it finished (or died) in time; the message is read next
            index, _ = worker.pending.popleft()
            batch.lost_seconds += now - worker.item_started_at
            self._settle(batch, index, Failure.TIMED_OUT)
            logger.info("An item ran past its %.1f s deadline; replacing its worker.", self.timeout_seconds)
            self._requeue(batch, worker)
            self._procs.discard_worker(slot)

    def _cut(self, batch: _Batch) -> None:
        """The batch used its budget for slow items: every item still unfinished gets `BATCH_TIMEOUT`, and busy workers
        go."""
        for slot, worker in enumerate(self._procs.workers):
            if worker is not None and worker.pending:
                self._requeue(batch, worker)
                self._procs.discard_worker(slot)
        logger.info(
            "The batch used up its time for slow items with %d of %d items unfinished.",
            batch.remaining,
            len(batch.items),
        )
        self._fail_remaining(batch, Failure.BATCH_TIMEOUT)

    def _give_up(self, batch: _Batch) -> None:
        """No worker runs and none can start. If none could take any item of the batch, that is an error to raise."""
        if not batch.ran_any:
            raise WorkerStartError(f"Could not start a worker process: {batch.start_error}")
        logger.warning("No worker could be started for the last %d items of the batch.", batch.remaining)
        self._fail_remaining(batch, Failure.START_FAILED)

    def _fail_remaining(self, batch: _Batch, failure: Failure) -> None:
        for index, result in enumerate(batch.results):
            if result is _UNSETTLED:
                batch.results[index] = failure
        batch.queue.clear()
        batch.remaining = 0
