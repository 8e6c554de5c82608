import json
import math
import statistics
from collections import Counter

import pytest

from cotx_rl import compress
from cotx_rl.arithmetic import make_problems, parse_question
from cotx_rl.budget import count_reasoning_tokens
from cotx_rl.compress import CompressArguments, plan_modes
from cotx_rl.compressors import PruneCompressor, RewriteCompressor, TruncateCompressor
from cotx_rl.config import RunArguments
from cotx_rl.io import StageInputError, read_rows, write_rows
from cotx_rl.steps import leads_to_answer, split_steps, supporting_steps
from cotx_rl.teachers.base import Teacher
from cotx_rl.teachers.procedural import ProceduralTeacher

GRID = [24, 48, 72, 96]


@pytest.fixture(scope="module")
def traces():
    rows = make_problems(120, "train", seed=5)
    outputs = ProceduralTeacher(min_words=70, seed=5).generate(rows)
    return [{**r, "reasoning": o.reasoning, "response": o.response} for r, o in zip(rows, outputs)]


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, traces):
    folder = tmp_path_factory.mktemp("compress")
    write_rows(folder / "kept.jsonl", traces)
    args = CompressArguments(traces_path=str(folder / "kept.jsonl"), output_path=str(folder / "examples.jsonl"))
    stats = compress.main(args, run_args=RunArguments(budget_grid=GRID))
    return read_rows(folder / "examples.jsonl"), stats, json.loads((folder / "examples_stats.json").read_text())


def test_every_example_keeps_its_window_and_its_answer(compressed, tiny_tokenizer):
    examples, _, _ = compressed
    assert {e["budget_mode"] for e in examples} == {"exact", "max", "auto"}
    for example in examples:
        tokens = count_reasoning_tokens(example["reasoning"], tiny_tokenizer)
        assert tokens == example["reasoning_tokens"]
        budget = example["budget_tokens"]
        if example["budget_mode"] == "max":
            assert tokens <= budget
        else:
            assert abs(tokens - budget) <= 0.1 * budget
        assert leads_to_answer(example["reasoning"], example["answer"], example["question"])
        assert example["budget_tokens"] in GRID


def test_auto_label_grows_with_difficulty(compressed):
    examples, _, _ = compressed
    labels = {}
    for example in examples:
        if example["budget_mode"] == "auto":
            labels.setdefault(example["difficulty"], []).append(example["budget_tokens"])
    means = [statistics.mean(labels[k]) for k in sorted(labels)]
    assert means == sorted(means) and means[-1] > means[0], means
    ids = [e["id"] for e in examples if e["budget_mode"] == "auto"]
    assert len(ids) == len(set(ids)), "one auto example per trace"


def test_stats_report(compressed):
    examples, stats, written = compressed
    assert stats == written
    assert stats["examples"] == len(examples)
    assert sum(stats["examples_per_mode"].values()) == len(examples)
    assert 0 < stats["compression_ratio"]["prune"] < 1
    exact_96 = [v for k, v in stats["thinking_tokens"].items() if k.startswith("exact/96/")]
    assert exact_96 and all(87 <= v["min_tokens"] and v["max_tokens"] <= 96 for v in exact_96)


def test_plan_modes_respects_proportions():
    import random

    rng = random.Random(0)
    plans = [plan_modes(GRID, {"exact": 0.5, "max": 0.25, "auto": 0.25}, rng) for _ in range(2000)]
    modes = [mode for plan in plans for mode, _ in plan]
    assert all(len(plan) == len(GRID) and len({b for _, b in plan}) == len(GRID) for plan in plans)
    assert modes.count("auto") / len(modes) == pytest.approx(0.25, abs=0.02)
    assert modes.count("exact") / len(modes) == pytest.approx(0.5, abs=0.03)


def test_prune_drops_wrong_turns_and_checks_but_keeps_the_chain(traces, tiny_tokenizer):
    prune = PruneCompressor(tiny_tokenizer)
    row = next(r for r in traces if r["difficulty"] == 4 and "not right" in r["reasoning"])
    problem = parse_question(row["question"])
    short = prune.compress(row, row["reasoning"], 64, 0)
    assert short is not None and count_reasoning_tokens(short, tiny_tokenizer) <= 64
    assert "not right" not in short and "check" not in short.lower()
    for index in range(problem.steps):
        assert f"{problem.expression(index, index + 1)} = {problem.values()[index]}" in short


def test_prune_refuses_what_cannot_fit(traces, tiny_tokenizer):
    row = next(r for r in traces if r["difficulty"] == 6)
    assert PruneCompressor(tiny_tokenizer).compress(row, row["reasoning"], 24, 0) is None


def test_truncate_keeps_a_prefix_and_loses_the_answer(traces, tiny_tokenizer):
    row = next(r for r in traces if r["difficulty"] == 5)
    cut = TruncateCompressor(tiny_tokenizer).compress(row, row["reasoning"], 32, 0)
    assert cut is not None and row["reasoning"].startswith(cut) and count_reasoning_tokens(cut, tiny_tokenizer) <= 32
    assert not leads_to_answer(cut, row["answer"], row["question"])


def test_rewrite_merges_steps_to_fit(traces, tiny_tokenizer):
    teacher = ProceduralTeacher()
    rewrite = RewriteCompressor(tiny_tokenizer, teacher)
    row = next(r for r in traces if r["difficulty"] == 6)
    text = rewrite.compress(row, row["reasoning"], 24, 0)
    assert text is not None and count_reasoning_tokens(text, tiny_tokenizer) <= 24
    assert leads_to_answer(text, row["answer"], row["question"])
    assert len(split_steps(text)) < 6


class ForgetfulTeacher(ProceduralTeacher):
    """Loses the answer on the first try, then behaves."""

    calls = 0

    def rewrite(self, row, reasoning, budget_tokens, count_tokens=None):
        self.calls += 1
        if self.calls == 1:
            return "Okay. So the answer is 1000."
        return super().rewrite(row, reasoning, budget_tokens, count_tokens)


def test_rewrite_retries_when_the_answer_is_lost(traces, tiny_tokenizer):
    teacher = ForgetfulTeacher()
    row = traces[0]
    assert RewriteCompressor(tiny_tokenizer, teacher).compress(row, row["reasoning"], 48, 0) is not None
    assert teacher.calls == 2


def test_chain_support_needs_every_operation(traces):
    row = next(r for r in traces if r["difficulty"] == 3)
    problem = parse_question(row["question"])
    full = f"{problem.expression(0, 1)} = {problem.values()[0]}. {problem.expression(1)} = {problem.answer}."
    assert supporting_steps(split_steps(full), row["answer"], row["question"]) is not None
    skipped = f"{problem.expression(1)} = {problem.answer}. So the answer is {problem.answer}."
    assert supporting_steps(split_steps(skipped), row["answer"], row["question"]) is None


@pytest.mark.parametrize("grid", [[], [0, 24], [48, 24], [24, 24], [-8]])
def test_bad_grid_is_refused(grid):
    with pytest.raises(StageInputError, match="budget_grid"):
        RunArguments(budget_grid=grid)


def test_bad_inputs_name_the_value(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(StageInputError, match="empty.jsonl"):
        compress.main(
            CompressArguments(traces_path=str(tmp_path / "empty.jsonl"), output_path=str(tmp_path / "o.jsonl"))
        )
    with pytest.raises(StageInputError, match="'lasso'"):
        CompressArguments(traces_path="x", output_path="y.jsonl", compressors=["lasso"])
    with pytest.raises(StageInputError, match="no_such_tokenizer_dir"):
        write_rows(tmp_path / "t.jsonl", [{"id": "1", "question": "q", "answer": "1", "reasoning": "r"}])
        compress.main(
            CompressArguments(
                traces_path=str(tmp_path / "t.jsonl"), output_path=str(tmp_path / "o.jsonl"),
                student_tokenizer=str(tmp_path / "no_such_tokenizer_dir"),
            )
        )  # fmt: skip


class CountingTeacher(ProceduralTeacher):
    """Records each batch of rewrite requests as `(id, asked budget)`; raises after `fail_after` batches (a kill)."""

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.batches: list[list[tuple[str, int]]] = []
        self.fail_after = fail_after

    def rewrite_batch(self, requests, count_tokens=None):
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise RuntimeError("killed")
        self.batches.append([(r.row["id"], r.budget_tokens) for r in requests])
        return super().rewrite_batch(requests, count_tokens)


def compress_with(monkeypatch, teacher, folder, **overrides):
    monkeypatch.setattr("cotx_rl.teachers.build_teacher", lambda args: teacher)
    args = CompressArguments(
        traces_path=str(folder / "kept.jsonl"), output_path=str(folder / "examples.jsonl"), **overrides
    )
    return compress.main(args, run_args=RunArguments(budget_grid=GRID))


def sidecar_slots(folder) -> dict[tuple[str, int], dict]:
    """`(id, window high)` of every rewrite record written next to the output, with the record."""
    records = read_rows(folder / "examples.rewrites.jsonl")
    return {(r["key"].split("|")[0], int(r["key"].split("|")[3].split("-")[1])): r for r in records}


def test_rewrite_goes_in_batches_and_only_for_slots_prune_missed(tmp_path, monkeypatch, traces, compressed):
    write_rows(tmp_path / "kept.jsonl", traces)
    teacher = CountingTeacher()
    stats = compress_with(monkeypatch, teacher, tmp_path, rewrite_batch_size=16)
    examples = read_rows(tmp_path / "examples.jsonl")
    assert examples == compressed[0] and stats == compressed[1]  # batching changes no result
    assert teacher.batches and all(1 <= len(batch) <= 16 for batch in teacher.batches)
    asked = sidecar_slots(tmp_path)
    first_asks = {request for batch in teacher.batches for request in batch}
    assert set(asked) <= first_asks
    by_prune = {
        (e["id"], e["budget_tokens"]) for e in examples if e["compressor"] == "prune" and e["budget_mode"] == "exact"
    }
    assert not by_prune & set(asked), "a slot that prune met was sent to the teacher"
    rewritten = [e for e in examples if e["compressor"] == "rewrite"]
    assert rewritten and all(e["budget_mode"] in ("exact", "max") for e in rewritten)
    assert sum(r["example"] is not None for r in asked.values()) == len(rewritten)
    # One call per batch and attempt: never one call per slot.
    assert len(teacher.batches) <= math.ceil(len(asked) / 16) * 3 < len(asked)


def test_rewrite_resumes_after_a_kill(tmp_path, monkeypatch, traces, compressed):
    write_rows(tmp_path / "kept.jsonl", traces)
    with pytest.raises(RuntimeError, match="killed"):
        compress_with(monkeypatch, CountingTeacher(fail_after=4), tmp_path, rewrite_batch_size=16)
    assert not (tmp_path / "examples.jsonl").exists()
    done = sidecar_slots(tmp_path)
    assert done
    teacher = CountingTeacher()
    stats = compress_with(monkeypatch, teacher, tmp_path, rewrite_batch_size=16)
    asked_again = {request for batch in teacher.batches for request in batch}
    assert not asked_again & set(done), "the rerun asked again for slots done before the kill"
    assert read_rows(tmp_path / "examples.jsonl") == compressed[0] and stats == compressed[1]
    # A third run finds everything done: the teacher is not called at all.
    idle = CountingTeacher()
    compress_with(monkeypatch, idle, tmp_path, rewrite_batch_size=16)
    assert idle.batches == []


class FailingRequestsTeacher(CountingTeacher):
    """Every rewrite request of the problems in `failing_ids` fails (None, as the openai backend gives for a server
    error after its retries); the others are answered."""

    def __init__(self, failing_ids):
        super().__init__()
        self.failing_ids = set(failing_ids)

    def rewrite_batch(self, requests, count_tokens=None):
        answers = super().rewrite_batch(requests, count_tokens)
        return [None if r.row["id"] in self.failing_ids else text for r, text in zip(requests, answers)]


def test_failed_rewrite_requests_are_counted_and_asked_again_by_a_rerun(tmp_path, monkeypatch, traces, compressed):
    write_rows(tmp_path / "kept.jsonl", traces)
    rewritten_ids = sorted({e["id"] for e in compressed[0] if e["compressor"] == "rewrite"})
    failing = rewritten_ids[:3]
    teacher = FailingRequestsTeacher(failing)
    stats = compress_with(monkeypatch, teacher, tmp_path, rewrite_batch_size=16)  # the stage goes on
    failed_slots = {key for key, record in sidecar_slots(tmp_path).items() if key[0] in failing}
    assert failed_slots and all(
        "rewrite:request_failed" in sidecar_slots(tmp_path)[key]["failures"] for key in failed_slots
    )
    assert stats["dropped"]["rewrite:request_failed"] == len(failed_slots)
    asks = Counter(request for batch in teacher.batches for request in batch)
    assert all(asks[key[0], key[1]] == 3 for key in failed_slots)  # every attempt asked again (rewrite_max_attempts)
    assert not any(e["id"] in failing and e["compressor"] == "rewrite" for e in read_rows(tmp_path / "examples.jsonl"))
    # A rerun asks only for the slots that got no answer, and ends as a run without failures.
    rerun = CountingTeacher()
    stats = compress_with(monkeypatch, rerun, tmp_path, rewrite_batch_size=16)
    assert {request[0] for batch in rerun.batches for request in batch} == set(failing)
    assert read_rows(tmp_path / "examples.jsonl") == compressed[0] and stats == compressed[1]


def test_openai_teacher_gives_none_for_a_failed_rewrite_request_and_stops_on_a_rejected_key(chat_server):
    from cotx_rl.teachers import TeacherArguments, build_teacher
    from cotx_rl.teachers.openai_compat import TeacherRequestError

    teacher = build_teacher(
        TeacherArguments(teacher="openai", teacher_model="tiny", base_url=chat_server.url, max_retries=0)
    )
    chat_server.statuses = [400]
    assert teacher.complete(["Compute 2 + 3."]) == [None]
    assert teacher.complete(["Compute 2 + 3."])[0].endswith("\\boxed{5}")
    chat_server.statuses = [401]
    with pytest.raises(TeacherRequestError, match="401"):
        teacher.complete(["Compute 2 + 3."])
    teacher.close()


def test_rewrite_never_asks_for_slots_that_cannot_pass(tmp_path, monkeypatch, traces, tiny_tokenizer):
    write_rows(tmp_path / "kept.jsonl", traces[:40])
    teacher = CountingTeacher()
    monkeypatch.setattr("cotx_rl.teachers.build_teacher", lambda args: teacher)
    args = CompressArguments(
        traces_path=str(tmp_path / "kept.jsonl"), output_path=str(tmp_path / "examples.jsonl"),
        mode_proportions={"exact": 1.0},
    )  # fmt: skip
    stats = compress.main(args, run_args=RunArguments(budget_grid=[24, 48, 1000]))
    longest = max(count_reasoning_tokens(r["reasoning"], tiny_tokenizer) for r in traces[:40])
    assert longest < 0.85 * 1000  # every exact slot of 1000 lies above its trace
    assert stats["replanned"]["exact->max:above_trace_length"] == 40
    assert stats["thinking_tokens"]["max/1000/original"]["examples"] == 40  # the trace, as it is
    assert teacher.batches and all(ask <= 48 for batch in teacher.batches for _, ask in batch)


class BatchOnlyTeacher(Teacher):
    """A model backend seen through its batch interface: `complete` records each call and answers R1-style."""

    name = "batch-only"

    def __init__(self):
        self.calls: list[int] = []

    def generate(self, rows):
        raise NotImplementedError

    def complete(self, prompts):
        self.calls.append(len(prompts))
        return ["<think>\nShort.\n</think>\nAdding them, 40 + 2 = 42. So the answer is \\boxed{42}." for _ in prompts]


def test_rewrite_batch_is_one_backend_call_per_attempt(bpe_tokenizer):
    teacher = BatchOnlyTeacher()
    rewrite = RewriteCompressor(bpe_tokenizer, teacher)
    rows = [{"id": str(i), "question": f"What is 40 + 2? ({i})", "answer": "42"} for i in range(5)]
    texts = rewrite.compress_batch([(row, "40 + 2 = 42. " * 20, 40, 0) for row in rows])
    assert teacher.calls == [5]  # one call for the whole batch, none per slot
    assert texts == ["Adding them, 40 + 2 = 42. So the answer is \\boxed{42}."] * 5  # the text after the thought


def test_traces_holding_format_markers_are_counted_not_fatal(tmp_path, traces):
    """A reasoning that mentions `</think>` (code) or `<budget>` cannot be one budgeted completion: dropped and
    counted; a reasoning column that kept its own `<think>...</think>` is compressed without them; a null id stops."""
    rows = [dict(row) for row in traces[:6]]
    rows[0]["reasoning"] = rows[0]["reasoning"] + "\nIn HTML-like tags, '</think>' would close it."
    rows[1]["reasoning"] = "A <budget> tag first. " + rows[1]["reasoning"]
    rows[2]["reasoning"] = f"<think>\n{rows[2]['reasoning']}\n</think>"
    write_rows(tmp_path / "kept.jsonl", rows)
    args = CompressArguments(traces_path=str(tmp_path / "kept.jsonl"), output_path=str(tmp_path / "examples.jsonl"))
    stats = compress.main(args, run_args=RunArguments(budget_grid=GRID))
    assert stats["input_dropped"] == {"stray_tag": 2} and stats["traces"] == 4
    examples = read_rows(tmp_path / "examples.jsonl")
    wrapped = [e for e in examples if e["id"] == rows[2]["id"]]
    assert wrapped and not any("<think>" in e["reasoning"] or "</think>" in e["reasoning"] for e in examples)
    rows[3]["id"] = None
    write_rows(tmp_path / "kept.jsonl", rows)
    with pytest.raises(StageInputError, match="line 4: its id is null"):
        compress.main(args, run_args=RunArguments(budget_grid=GRID))
