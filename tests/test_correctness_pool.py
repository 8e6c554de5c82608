"""The worker pool behind `correctness_reward` cannot lie: it starts wherever it is called from, and a failure to
verify is never scored as a wrong answer.

Most tests here are about one way the earlier pool (multiprocessing forkserver workers) returned 0.0 for answers it
never judged, or broke: scripts without an `if __name__ == "__main__":` guard, `os.fork()`, Ctrl-C, workers that
cannot start or that die, workers outliving a killed process, and batches full of hanging answers. The others pin
down what the design that replaced it must keep: workers of a pool first used from a short-lived thread, a killed
zygote, and large batches that the batch deadline must not cut. Time bounds are "never hangs" checks, as in
`test_correctness_limits.py`.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from test_correctness_limits import HANG, HOSTILE, STARTUP_ALLOWANCE, SYMBOLIC, alive, wait_until_dead

from rewards import CorrectnessReward
from rewards._pool import Failure, WorkerPool

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
GOLDS = [gold for gold, _, _ in SYMBOLIC]
COMPLETIONS = [completion for _, completion, _ in SYMBOLIC]
EXPECTED = [score for _, _, score in SYMBOLIC]
# Hostile answers that really run until their deadline (see `test_correctness_limits.py` for cheaper ones).
HANGING = [f"\\boxed{{(x+{k})^{{100000}}}}" for k in range(1, 9)] + [
    f"\\boxed{{5^{{5^{{5^{{5^{{{k}}}}}}}}}}}" for k in range(5, 13)
]


def run_python(args: list[str], cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run this interpreter with the repository importable (the working directory need not be the repository)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def last_json_line(output: subprocess.CompletedProcess):
    assert output.returncode == 0, output.stderr[-3000:]
    return json.loads(output.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ unguarded scripts

UNGUARDED = f"""
import json
from rewards import correctness_reward

# No `if __name__ == "__main__":` guard, on purpose.
print(json.dumps(correctness_reward.score({GOLDS!r}, {COMPLETIONS!r})))
"""


@pytest.mark.parametrize("how", ["python script.py", "python -m script", "python - < script.py"])
def test_unguarded_script_scores_symbolic_answers(tmp_path, how):
    (tmp_path / "unguarded_probe.py").write_text(UNGUARDED)
    if how == "python script.py":
        output = run_python(["unguarded_probe.py"], cwd=tmp_path)
    elif how == "python -m script":
        output = run_python(["-m", "unguarded_probe"], cwd=tmp_path)
    else:
        output = run_python(["-"], cwd=tmp_path, input=UNGUARDED)
    assert last_json_line(output) == EXPECTED


@pytest.mark.slow
def test_unguarded_script_agrees_with_in_process_on_math_verify_cases(shared_data, tmp_path):
    """The harness of `test_correctness_cases.py`, run at the top level of a script and in this process.

    Both sides allow 30 s per comparison, so that neither result depends on how loaded the machine is.
    """
    cases_path = shared_data / "verifier_cases_mathverify.jsonl"
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(TESTS)!r})
        from pathlib import Path
        from test_correctness_cases import agreement, load_jsonl
        from rewards import CorrectnessReward

        reward = CorrectnessReward(timeout_seconds=30.0)
        rate, report = agreement(reward, load_jsonl(Path({str(cases_path)!r})))
        print(json.dumps([rate, report, sum(reward.failures.values())]))
        """
    )
    (tmp_path / "agreement_probe.py").write_text(script)
    rate, report, failures = last_json_line(run_python(["agreement_probe.py"], cwd=tmp_path, timeout=600))

    from test_correctness_cases import agreement, load_jsonl

    in_process = CorrectnessReward(timeout_seconds=30.0)
    try:
        expected_rate, expected_report = agreement(in_process, load_jsonl(cases_path))
    finally:
        in_process.close()
    assert failures == 0
    assert (rate, report) == (expected_rate, expected_report)
    assert rate > 0.95


# ------------------------------------------------------------------------------------------------------------- fork

FORKS = f"""
import json, os, sys, threading, time
from rewards import CorrectnessReward

GOLDS, COMPLETIONS, EXPECTED = {GOLDS!r}, {COMPLETIONS!r}, {EXPECTED!r}
HANGING = {HOSTILE["power tower"]!r}

reward = CorrectnessReward(num_workers=1, timeout_seconds=3.0)
assert reward.score(GOLDS, COMPLETIONS) == EXPECTED
zygote = reward._pool.zygote_pid
rounds = []
for kind in ["scores", "exits", "scores while the parent is inside a call", "scores", "exits"]:
    workers = reward._pool.worker_pids
    busy = None
    if kind == "scores while the parent is inside a call":
        # Another thread holds the pool's lock across the fork: the child must not wait for it.
        busy = threading.Thread(target=reward.score, args=(["1"], [HANGING]))
        busy.start()
        while not reward._pool._lock.locked():
            time.sleep(0.001)
    pid = os.fork()
    if pid == 0:
        code = 0
        if kind != "exits":
            scores = reward.score(GOLDS, COMPLETIONS)
            mine = reward._pool.worker_pids + [reward._pool.zygote_pid]
            code = 0 if scores == EXPECTED and not set(mine) & set(workers + [zygote]) else 3
        sys.exit(code)  # a normal exit: atexit handlers and finalizers run in the child
    _, status = os.waitpid(pid, 0)
    if busy is not None:
        busy.join()
        reward.score(GOLDS, COMPLETIONS)  # the hanging item cost the parent its worker: start the next one
        workers = reward._pool.worker_pids
    scores = reward.score(GOLDS, COMPLETIONS)
    same = reward._pool.worker_pids == workers and reward._pool.zygote_pid == zygote
    rounds.append([kind, os.waitstatus_to_exitcode(status), scores == EXPECTED, same])
print(json.dumps(rounds))
"""


def test_forked_children_score_with_their_own_workers_and_leave_the_parents_alone(tmp_path):
    (tmp_path / "fork_probe.py").write_text(FORKS)
    rounds = last_json_line(run_python(["fork_probe.py"], cwd=tmp_path))
    # Per round: the child's exit code (0: it scored right, with processes of its own), whether the parent still
    # scores right, and whether it does so with the same zygote and workers (the child touched none of them).
    assert [round[1:] for round in rounds] == [[0, True, True]] * 5, rounds


# ---------------------------------------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("delay", [0.001, 0.02, 0.3])
def test_interrupted_call_leaves_the_pool_usable(delay):
    reward = CorrectnessReward(timeout_seconds=5.0, num_workers=2)
    try:
        assert reward.score(GOLDS, COMPLETIONS) == EXPECTED
        # A call with both workers stuck on hanging items is interrupted as Ctrl-C would: SIGINT to the main thread.
        interrupt = threading.Timer(delay, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
        with pytest.raises(KeyboardInterrupt):
            interrupt.start()
            reward.score(["1", "2", *GOLDS], [HANGING[0], HANGING[1], *COMPLETIONS])
            time.sleep(60)  # the interruption always lands inside this block
        interrupt.join()
        stuck = reward._pool.worker_pids
        start = time.monotonic()
        # A smaller batch first: it must not meet what the interrupted one left in a worker.
        assert reward.score(GOLDS[:1], COMPLETIONS[:1]) == EXPECTED[:1]
        assert reward.score(GOLDS, COMPLETIONS) == EXPECTED
        assert time.monotonic() - start < STARTUP_ALLOWANCE
        # The workers left on the hanging items were stopped, not left running.
        assert wait_until_dead([pid for pid in stuck if pid not in reward._pool.worker_pids])
        assert not reward.failures
    finally:
        reward.close()


# ------------------------------------------------------------------------------------------------- visible failures


def test_an_item_whose_worker_dies_scores_none_not_zero():
    reward = CorrectnessReward(timeout_seconds=60.0, num_workers=1)
    try:
        assert reward.score(GOLDS, COMPLETIONS) == EXPECTED
        (worker,) = reward._pool.worker_pids
        killer = threading.Timer(0.5, os.kill, (worker, signal.SIGKILL))
        killer.start()
        scores = reward.score(["1", *GOLDS], [HOSTILE["power tower"], *COMPLETIONS])
        killer.join()
        # The item the worker died on was never judged; the rest ran in a replacement.
        assert scores == [None, *EXPECTED]
        assert reward.failures == Counter({"worker_died": 1})
    finally:
        reward.close()


def test_pool_raises_when_its_workers_cannot_start():
    pool = WorkerPool(re.sub, num_workers=1, timeout_seconds=5.0, preload=("rewards._no_such_module",))
    try:
        with pytest.raises(RuntimeError, match="No module named 'rewards._no_such_module'"):
            pool.map([("a", "b", "a")])
    finally:
        pool.close()
    # The zygote starts, but every worker fails in its initializer.
    pool = WorkerPool(re.sub, num_workers=2, timeout_seconds=5.0, initializer=sys.exit)
    try:
        with pytest.raises(RuntimeError, match="SystemExit"):
            pool.map([("a", "b", "a"), ("a", "c", "a")])
    finally:
        pool.close()


def test_reward_raises_when_sympy_cannot_be_imported(tmp_path):
    """A broken install fails loudly, not as answers scored 0.0; answers decided without sympy still score."""
    poisoned = tmp_path / "poisoned"
    poisoned.mkdir()
    (poisoned / "latex2sympy2_extended.py").write_text("raise ImportError('latex2sympy2_extended is broken here')\n")
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(poisoned)!r})
        from rewards import correctness_reward

        plain = correctness_reward(["#### 72", "\\\\boxed{{\\\\frac{{1}}{{2}}}}"], answer=["72", "0.5"])
        try:
            symbolic = correctness_reward.score({GOLDS!r}, {COMPLETIONS!r})
        except RuntimeError as error:
            symbolic = str(error)
        print(json.dumps([plain, symbolic]))
        """
    )
    plain, symbolic = last_json_line(run_python(["-c", script], cwd=tmp_path))
    assert plain == [1.0, 1.0]
    assert isinstance(symbolic, str) and "latex2sympy2_extended is broken here" in symbolic


# --------------------------------------------------------------------------------------------------------- lifetime


def test_pool_started_from_a_thread_that_exits_keeps_its_workers():
    reward = CorrectnessReward(num_workers=2)
    try:
        outcome = []
        thread = threading.Thread(target=lambda: outcome.append(reward.score(GOLDS, COMPLETIONS)))
        thread.start()
        thread.join()
        assert outcome == [EXPECTED]
        processes = reward._pool.worker_pids + [reward._pool.zygote_pid]
        time.sleep(1.0)  # the death signal of a thread-started child would have arrived by now
        assert all(alive(pid) for pid in processes)
        assert reward.score(GOLDS, COMPLETIONS) == EXPECTED
        assert reward._pool.worker_pids + [reward._pool.zygote_pid] == processes
    finally:
        reward.close()


def test_workers_die_when_the_pool_process_is_killed(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from rewards import CorrectnessReward

        reward = CorrectnessReward(num_workers=2, timeout_seconds=600.0)
        assert reward.score({GOLDS!r}, {COMPLETIONS!r}) == {EXPECTED!r}
        print(*reward._pool.worker_pids, reward._pool.zygote_pid, flush=True)
        # Both workers stuck in C code on hanging items when the process is killed.
        reward.score(["1", "2"], [{HOSTILE["power tower"]!r}, {HANGING[9]!r}])
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(pid) for pid in process.stdout.readline().split()]
        assert len(pids) == 3
        time.sleep(1.0)
        assert all(alive(pid) for pid in pids)
        process.kill()
        process.wait(timeout=30)
        assert wait_until_dead(pids)
    finally:
        process.kill()
        process.wait(timeout=30)


def test_a_killed_zygote_is_replaced():
    reward = CorrectnessReward(num_workers=2)
    try:
        assert reward.score(GOLDS, COMPLETIONS) == EXPECTED
        zygote, workers = reward._pool.zygote_pid, reward._pool.worker_pids
        os.kill(zygote, signal.SIGKILL)
        assert wait_until_dead([zygote, *workers])
        assert reward.score(GOLDS, COMPLETIONS) == EXPECTED
        assert reward._pool.zygote_pid != zygote
        assert not reward.failures
    finally:
        reward.close()


def test_workers_keep_the_memory_limit_and_the_guard(tmp_path):
    """Forked workers still run under the address-space limit and the audit-hook guard of `rewards._math_equal`."""
    import resource

    from rewards import correctness

    limit = 2048 * 1024 * 1024
    pool = WorkerPool(resource.getrlimit, num_workers=1, timeout_seconds=30.0, memory_limit_mb=2048)
    try:
        assert pool.map([(resource.RLIMIT_AS,)]) == [(limit, limit)]
    finally:
        pool.close()
    marker = tmp_path / "written"
    pool = WorkerPool(
        os.system,
        num_workers=1,
        timeout_seconds=30.0,
        initializer=correctness._guard_worker,
        warm_up=correctness._warm_up_zygote,
        preload=("rewards._math_equal",),
    )
    try:
        assert pool.map([(f"touch {marker}",)]) == [Failure.ERROR]
    finally:
        pool.close()
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------- batch deadline


def test_batch_deadline_bounds_a_batch_of_hanging_items():
    pool = WorkerPool(re.sub, num_workers=2, timeout_seconds=1.0, batch_timeout_seconds=2.0)
    try:
        assert pool.map([("a", "b", "a")]) == ["b"]
        start = time.monotonic()
        results = pool.map([HANG] * 40 + [("a", "b", "a")])
        # 40 items of 1 s on 2 workers, one after another, would take 20 s.
        assert time.monotonic() - start < 2.0 + 2 * 1.0 + 5.0
        assert set(results[:40]) == {Failure.TIMED_OUT, Failure.BATCH_TIMEOUT}
        assert results[40] in ("b", Failure.BATCH_TIMEOUT)  # queued behind the hanging ones: not judged, not wrong
        assert pool.map([("a", "b", "a")]) == ["b"]
    finally:
        pool.close()


def test_sixteen_hanging_answers_cost_seconds_and_are_reported():
    reward = CorrectnessReward(timeout_seconds=2.0, num_workers=2, batch_timeout_seconds=2.0)
    try:
        assert reward.score(GOLDS, COMPLETIONS) == EXPECTED
        start = time.monotonic()
        scores = reward.score(["1"] * len(HANGING), HANGING)
        # One at a time on 2 workers, the 16 deadlines of 2 s would take 16 s.
        assert time.monotonic() - start < 2.0 + 2.0 + 4.0
        # Those that ran to their own deadline are judged too costly (0.0); the rest were not judged (None).
        assert set(scores) == {0.0, None}
        assert reward.failures == Counter({"timed_out": scores.count(0.0), "batch_timeout": scores.count(None)})
        assert reward.score(GOLDS, COMPLETIONS) == EXPECTED
    finally:
        reward.close()


def test_large_batches_of_ordinary_pairs_are_never_cut(shared_data):
    """The batch deadline bounds time lost to slow items, not the time a large batch needs."""
    golds = [json.loads(line)["answer"] for line in (shared_data / "math500_test.jsonl").read_text().splitlines()]
    golds = list(dict.fromkeys(golds))[:100]
    pairs = [(gold, other) for i, gold in enumerate(golds) for other in golds[i + 1 :]]
    # Several seconds of work in all (2,666 pairs reach the workers), against an allowance of 2 s for slow items.
    reward = CorrectnessReward(timeout_seconds=2.0, batch_timeout_seconds=2.0)
    try:
        scores = reward.score([g for g, _ in pairs], [f"\\boxed{{{o}}}" for _, o in pairs])
        assert None not in scores
        assert not reward.failures
    finally:
        reward.close()
