"""The processes behind `rewards._pool`: one zygote per pool, and the workers it forks.

This module runs only in those processes; the pool starts the zygote as a fresh interpreter
(`python -c "...; from rewards._worker import main; main()"`), so the caller's `__main__` is never imported there.

The zygote imports the pool's `preload` modules, runs its `warm_up` and then waits on its control socket
(an `AF_UNIX` `SOCK_SEQPACKET` pair, so each message arrives whole or not at all). Messages from the pool:

- `("fork", token)` with one file descriptor attached: fork a worker that talks to the pool over that descriptor;
- `("kill", token)`: kill that worker (the zygote is its parent, so the process id cannot have been reused) and reap it
  once it has exited;
- end of file: the pool is gone or closed; kill every worker and exit.

The zygote also exits when its parent process changes (the pool's process died and it was re-parented), which it checks
between messages. It forks only from its single thread, so `PR_SET_PDEATHSIG` in a worker fires exactly when the
zygote dies, even while the worker is stuck in C code; a watchdog thread (for platforms without `prctl`) and end of
file on the channel back that up.

A worker sets its memory limit, runs the pool's `initializer` (for the math workers: the guard of
`rewards._math_equal.guard_worker`), reports `("ready", pid)` or `("failed", traceback)` on its channel, and then runs
chunks `(batch, [(index, args), ...])`, replying `(batch, index, status, value)` after every item, where `status` is
`"ok"`, `"error"` (the function raised; `value` is the message) or `"out_of_memory"`.
"""

from __future__ import annotations

import importlib
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

# The largest message on the control socket: the configuration and start-up tracebacks are far smaller.
MAX_CONTROL_MESSAGE = 1 << 20
_MAX_TRACEBACK = 20_000
_PARENT_CHECK_SECONDS = 1.0
_REAP_CHECK_SECONDS = 0.05


def main() -> None:
    """Entry point of the zygote process; argument 1 is the file descriptor of its control socket."""
    # Ctrl-C in a terminal reaches the whole process group: it is for the pool's process, which decides what to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=int(sys.argv[1]))
    parent = os.getppid()
    try:
        config = _receive_config(control)
        func, initializer, memory_limit_mb = config
    except BaseException:  # anything at all: the pool must learn why no worker can start
        # The end of the traceback, which says what failed; a whole one could exceed what one packet may carry.
        _send(control, ("failed", traceback.format_exc()[-_MAX_TRACEBACK:]))
        sys.exit(1)
    _send(control, ("ready", os.getpid()))
    _serve(control, parent, func, initializer, memory_limit_mb)


def _receive_config(control: socket.socket) -> tuple:
    message = control.recv(MAX_CONTROL_MESSAGE)
    if not message:
        raise EOFError("the pool closed the control socket before sending its configuration")
    config = pickle.loads(message)
    # The parent's import path, so that `func` unpickles from the same modules (but `__main__` is never imported).
    sys.path[:] = config["sys_path"]
    os.chdir(config["cwd"])
    for module in config["preload"]:
        importlib.import_module(module)
    func, initializer, warm_up = pickle.loads(config["functions"])
    if warm_up is not None:
        warm_up()
    return func, initializer, config["memory_limit_mb"]


def _send(control: socket.socket, message: Any) -> None:
    try:
        control.send(pickle.dumps(message))
    except OSError:
        pass  # the pool is gone; the loop below notices


def _serve(control: socket.socket, parent: int, func, initializer, memory_limit_mb: int | None) -> None:
    workers: dict[int, int] = {}  # token -> pid
    killed: set[int] = set()  # pids killed and not yet reaped
    while True:
        readable, _, _ = select.select([control], [], [], _REAP_CHECK_SECONDS if killed else _PARENT_CHECK_SECONDS)
        _reap(killed)
        if os.getppid() != parent:
            break
        if not readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(control, MAX_CONTROL_MESSAGE, 1)
        except OSError:
            break
        if not data:
            break
        try:
            kind, token = pickle.loads(data)
        except Exception:
            for fd in fds:
                os.close(fd)
            continue
        if kind == "fork" and fds:
            pid = _fork_worker(control, fds[0], func, initializer, memory_limit_mb)
            os.close(fds[0])  # the worker holds it now; if the fork failed, closing it tells the pool so
            if pid is not None:
                workers[token] = pid
        elif kind == "kill":
            pid = workers.pop(token, None)
            if pid is not None:
                _kill(pid)
                killed.add(pid)
        else:
            for fd in fds:
                os.close(fd)
    for pid in workers.values():
        _kill(pid)
        killed.add(pid)
    deadline = time.monotonic() + 5.0
    while killed and time.monotonic() < deadline:
        _reap(killed)
        time.sleep(_REAP_CHECK_SECONDS)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _reap(killed: set[int]) -> None:
    for pid in list(killed):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            killed.discard(pid)


def _fork_worker(control: socket.socket, fd: int, func, initializer, memory_limit_mb: int | None) -> int | None:
    zygote = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        return None
    if pid:
        return pid
    # In the worker: never return into the zygote's loop, whatever happens.
    code = 1
    try:
        control.close()
        _worker_main(fd, zygote, func, initializer, memory_limit_mb)
        code = 0
    finally:
        os._exit(code)


# ----------------------------------------------------------------------------------------------------------- worker


def _worker_main(fd: int, zygote: int, func, initializer, memory_limit_mb: int | None) -> None:
    _die_with(zygote)
    conn = Connection(fd)
    try:
        _limit_memory(memory_limit_mb)
        if initializer is not None:
            initializer()
    except BaseException:
        try:
            conn.send(("failed", traceback.format_exc()))
        except OSError:
            pass
        return
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
                reply = (batch, index, "ok", func(*args))
            except MemoryError:
                reply = (batch, index, "out_of_memory", "MemoryError")
            except Exception as error:  # reported to the pool; the worker lives on
                reply = (batch, index, "error", f"{type(error).__name__}: {error}")
            try:
                conn.send(reply)
            except (EOFError, OSError):
                return


def _load_prctl():
    """libc's `prctl`, loaded once in the zygote (so that a fork need not), or None where there is none."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None


_PRCTL = _load_prctl() if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with(zygote: int) -> None:
    """End this worker when the zygote ends, so that a stuck item cannot outlive the pool.

    `PR_SET_PDEATHSIG` is exact here, since the zygote forks from its only thread, and it works even while the worker
    is stuck in C code that holds the GIL. The watchdog thread covers platforms without `prctl`.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote:  # the zygote died before the request above took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(zygote,), daemon=True, name="rewards-worker-watchdog").start()


def _watch_parent(zygote: int) -> None:
    while os.getppid() == zygote:
        time.sleep(_PARENT_CHECK_SECONDS)
    os._exit(1)


def _limit_memory(memory_limit_mb: int | None) -> None:
    if not memory_limit_mb:
        return
    import resource

    limit = memory_limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)  # a process may lower its hard limit but never raise it
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
