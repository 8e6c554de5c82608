"""Hard limits of `correctness_reward`: per-item deadlines in the worker pool, threads, cleanup, and safety.

Time bounds here are not speed figures but "never hangs" checks: each allows a few deadlines plus a generous
`STARTUP_ALLOWANCE` for starting worker processes on a loaded machine.
"""

import gc
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rewards import CorrectnessReward
from rewards._pool import Failure, WorkerPool

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 1.0
STARTUP_ALLOWANCE = 20.0

HOSTILE = {
    "power tower": "\\boxed{5^{5^{5^{5^5}}}}",
    "factorial of a tower": "\\boxed{10^{10^{10}}!}",
    "tower of 2s": "\\boxed{2^{2^{2^{49}}}}",
    "100k-character expression": "\\boxed{" + "+".join(["x"] * 50_000) + "}",
    "deep nesting": "\\boxed{" + "(" * 5_000 + "1" + ")" * 5_000 + "}",
}
# Pairs that need the workers (no fast path decides them), with their scores.
SYMBOLIC = [
    ("x^2+2x+1", "\\boxed{(x+1)^2}", 1.0),
    ("\\sqrt{8}", "\\boxed{2\\sqrt{2}}", 1.0),
    ("x", "\\boxed{x+1}", 0.0),
    ("(1,2]", "\\boxed{[1,2]}", 0.0),
]
# re.sub with a catastrophically backtracking pattern: a pure-CPU hang for the generic pool tests.
HANG = ("(a+)+$", "x", "a" * 40 + "b")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has already exited
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def wait_until_dead(pids: list[int], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def reward():
    instance = CorrectnessReward(timeout_seconds=TIMEOUT, num_workers=2)
    assert instance.score(["1"], ["\\boxed{x - x + 1}"]) == [1.0]  # start the workers outside the timed tests
    yield instance
    instance.close()


# ------------------------------------------------------------------------------------------------------- deadlines


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_answer_scores_zero_in_bounded_time(reward, name):
    start = time.monotonic()
    assert reward.score(["1"], [HOSTILE[name]]) == [0.0]
    assert time.monotonic() - start < 3 * TIMEOUT + STARTUP_ALLOWANCE
    assert reward.score([SYMBOLIC[0][0]], [SYMBOLIC[0][1]]) == [1.0]  # the pool is still usable


def test_hostile_items_cost_only_themselves(reward):
    golds, completions, expected = [], [], []
    for hostile, (gold, completion, score) in zip(HOSTILE.values(), SYMBOLIC + SYMBOLIC):
        golds += ["1", gold]
        completions += [hostile, completion]
        expected += [0.0, score]
    start = time.monotonic()
    assert reward.score(golds, completions) == expected
    # Dealt round-robin to two workers, the five hostile items land on one worker: at most five deadlines in a row.
    assert time.monotonic() - start < 5 * TIMEOUT + STARTUP_ALLOWANCE
    assert reward.score([g for g, _, _ in SYMBOLIC], [c for _, c, _ in SYMBOLIC]) == [s for _, _, s in SYMBOLIC]


def test_pool_kills_a_stuck_item_and_gives_the_rest_to_a_new_worker():
    pool = WorkerPool(re.sub, num_workers=1, timeout_seconds=TIMEOUT)
    try:
        assert pool.map([("a", "b", "aa")]) == ["bb"]
        first_worker = pool.worker_pids
        start = time.monotonic()
        results = pool.map([("a", "b", "a"), HANG, ("a", "c", "a"), HANG, ("a", "d", "a")])
        assert time.monotonic() - start < 2 * TIMEOUT + STARTUP_ALLOWANCE
        assert results == ["b", Failure.TIMED_OUT, "c", Failure.TIMED_OUT, "d"]
        assert pool.worker_pids != first_worker
        assert wait_until_dead(first_worker)
        assert pool.map([("x", "y", "xx")]) == ["yy"]
    finally:
        pool.close()


def test_pool_reports_errors_and_dead_workers_per_item():
    pool = WorkerPool(re.sub, num_workers=2, timeout_seconds=5.0)
    try:
        assert pool.map([("(", "x", "a"), ("a", "b", "a")]) == [Failure.ERROR, "b"]
    finally:
        pool.close()
    pool = WorkerPool(os.kill, num_workers=1, timeout_seconds=5.0)
    try:
        assert pool.map([(os.getpid(), 0)]) == [None]
        (worker,) = pool.worker_pids
        # The first item kills its own worker; the second runs in a replacement.
        assert pool.map([(worker, signal.SIGKILL), (os.getpid(), 0)]) == [Failure.WORKER_DIED, None]
        assert pool.worker_pids != [worker]
    finally:
        pool.close()


def test_pool_rejects_use_after_close():
    pool = WorkerPool(re.sub, num_workers=1, timeout_seconds=5.0)
    pool.close()
    with pytest.raises(RuntimeError):
        pool.map([("a", "b", "a")])


# ---------------------------------------------------------------------------------------------------------- threads


def test_works_from_a_non_main_thread(reward):
    golds = ["1", *[gold for gold, _, _ in SYMBOLIC]]
    completions = [HOSTILE["power tower"], *[completion for _, completion, _ in SYMBOLIC]]
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("scores", reward.score(golds, completions)))
    thread.start()
    thread.join(timeout=3 * TIMEOUT + STARTUP_ALLOWANCE)
    assert not thread.is_alive()
    assert outcome["scores"] == [0.0, *[score for _, _, score in SYMBOLIC]]


def test_concurrent_calls_from_several_threads(reward):
    outcomes = {}

    def work(index: int) -> None:
        gold, completion, score = SYMBOLIC[index % len(SYMBOLIC)]
        outcomes[index] = (reward.score([gold] * 3, [completion] * 3), [score] * 3)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == 6
    assert all(got == expected for got, expected in outcomes.values())


# ---------------------------------------------------------------------------------------------------------- cleanup


def test_workers_stop_on_close_and_on_garbage_collection():
    reward = CorrectnessReward(num_workers=1)
    assert reward.score(["x^2"], ["\\boxed{x \\cdot x}"]) == [1.0]
    pids = reward._pool.worker_pids
    assert pids and all(alive(pid) for pid in pids)
    reward.close()
    assert wait_until_dead(pids)
    assert reward.score(["x^2"], ["\\boxed{x \\cdot x}"]) == [1.0]  # started again on demand
    pids = reward._pool.worker_pids
    del reward
    gc.collect()
    assert wait_until_dead(pids)


def test_workers_stop_at_interpreter_exit():
    script = textwrap.dedent(
        """
        from rewards import correctness_reward
        if __name__ == "__main__":
            assert correctness_reward.score(["x^2"], ["\\\\boxed{x \\\\cdot x}"]) == [1.0]
            print(*correctness_reward._pool.worker_pids)
        """
    )
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    pids = [int(pid) for pid in output.stdout.split()]
    assert pids
    assert wait_until_dead(pids)


# ----------------------------------------------------------------------------------------------------------- safety

PAYLOADS = [
    "__import__('os').system('touch MARKER')",
    "\\boxed{__import__('os').system('touch MARKER')}",
    'The answer is $__import__("os").system("touch MARKER")$',
    "\\boxed{\\text{__import__('os').system('touch MARKER')}}",
    "\\boxed{\\operatorname{__import__}('os').system('touch MARKER')}",
    "Answer: eval(\"__import__('os').system('touch MARKER')\")",
    "\\boxed{(lambda: __import__('os').system('touch MARKER'))()}",
    "\\boxed{exec('import os; os.system(\"touch MARKER\")')}",
    "\\boxed{x = __import__('os').system('touch MARKER')}",
    "\\boxed{1}, \\boxed{__import__('os').system('touch MARKER')}",
    "\\boxed{open('MARKER', 'w').write('x') or 0}",
    "\\boxed{().__class__.__base__.__subclasses__()}",
]


def test_payloads_never_run(reward, tmp_path):
    marker = tmp_path / "pwned"
    payloads = [payload.replace("MARKER", str(marker)) for payload in PAYLOADS]
    golds = ["0", "1", "x"]
    # As completions, as golds, and against each other.
    as_completions = reward.score([g for g in golds for _ in payloads], payloads * len(golds))
    as_golds = reward.score(payloads, ["\\boxed{0}"] * len(payloads))
    against_each_other = reward.score(payloads, payloads[::-1])
    assert not marker.exists()
    assert set(as_completions) <= {0.0}
    assert set(as_golds) <= {0.0, None}
    assert len(against_each_other) == len(payloads)


def test_no_answer_text_reaches_a_python_evaluator(shared_data, tmp_path):
    """Compare payloads and every verifier case in a fresh interpreter that records each compile of source text done
    by sympy's string parsers (`sympify`, `parse_expr`) or any attempt to run a shell command."""
    script = textwrap.dedent(
        """
        import json, sys
        from rewards import _math_equal
        from rewards._answers import extract_final_answer, extract_gold_answer

        pairs = json.loads(sys.stdin.read())
        _math_equal.warm_up()  # sympy imports some modules lazily; the hook watches only the comparisons
        events = []

        def from_string_parser():
            frame = sys._getframe(2)
            while frame is not None:
                name = frame.f_code.co_filename.replace("\\\\", "/")
                if "sympy/parsing/" in name or name.endswith("sympy/core/sympify.py"):
                    return True
                frame = frame.f_back
            return False

        def hook(event, args):
            if event in ("compile", "exec") and from_string_parser():
                events.append(event)
            elif event in ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn"):
                events.append(event)

        sys.addaudithook(hook)
        compared = 0
        for gold, pred, raw in pairs:
            if not raw:
                gold, pred = extract_gold_answer(gold), extract_final_answer(pred)
            if gold and pred:
                _math_equal.compare_answers(gold, pred)
                compared += 1
        print(json.dumps({"events": events, "compared": compared}))
        """
    )
    marker = tmp_path / "pwned"
    # Payloads go to the worker-side comparison raw (skipping extraction), so that the parser sees them as they are.
    raw = [payload.replace("MARKER", str(marker)) for payload in PAYLOADS]
    pairs = [["0", payload, True] for payload in raw] + [[payload, "0", True] for payload in raw]
    for name in ("verifier_cases_mathverify.jsonl", "verifier_cases_other_graders.jsonl"):
        for line in (shared_data / name).read_text().splitlines():
            case = json.loads(line)
            pairs.append([case["gold"], case["pred"], False])
    output = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(pairs),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    report = json.loads(output.stdout.strip().splitlines()[-1])
    assert report["compared"] > 400
    assert report["events"] == []
    assert not marker.exists()


def test_worker_guard_blocks_evaluation_and_system_access(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sympy
        from rewards import _math_equal
        _math_equal.warm_up()  # as the pool's zygote does, then as each worker does
        _math_equal.guard_worker()
        blocked = []
        for attempt in (lambda: sympy.sympify("1 + 1"),
                        lambda: open({str(tmp_path / "written")!r}, "w"),
                        lambda: os.system("true")):
            try:
                attempt()
            except RuntimeError:
                blocked.append(True)
        assert _math_equal.compare_answers("x^2+2x+1", "(x+1)^2") == 1.0
        assert _math_equal.compare_answers("-1 < x < 3", "(-1, 3)") == 1.0
        print(len(blocked))
        """
    )
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    assert output.stdout.split()[-1] == "3"
    assert not (tmp_path / "written").exists()
