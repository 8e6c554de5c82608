"""The data stages on real teacher traces (`../shared/data/real/traces`), read as they come.

Every length is counted with a real student tokenizer (Qwen2.5-Instruct, where `<think>` is not one token before SFT).
The R1 file runs by default; the Qwen3 and gpt-oss files, traces of other models on the same problems, are `slow`.
"""

from __future__ import annotations

import json
import math

import pytest

from cotx_rl import compress, verify
from cotx_rl.budget import count_reasoning_tokens
from cotx_rl.compress import CompressArguments
from cotx_rl.config import RunArguments
from cotx_rl.io import StageInputError, read_rows, write_rows
from cotx_rl.steps import leads_to_answer
from cotx_rl.verify import VerifyArguments

GRID = [512, 1024, 2048, 4096]
R1 = "DeepSeek-R1-Distill-Qwen-32B"
MODELS = [
    R1,
    pytest.param("Qwen3-4B-Thinking-2507", marks=pytest.mark.slow),
    pytest.param("gpt-oss-20b", marks=pytest.mark.slow),
]


def traces_file(shared_data, model: str):
    return shared_data / "real" / "traces" / f"{model}__math_train100.jsonl"


@pytest.fixture(scope="session")
def qwen_path(shared_data) -> str:
    return str(shared_data / "real" / "tokenizers" / "qwen2.5-instruct")


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen_path)


def real_args(traces_path, output_path, qwen_path, **overrides) -> CompressArguments:
    settings = {
        "student_tokenizer": qwen_path, "compressors": ["prune"],
        "mode_proportions": {"exact": 0.45, "max": 0.35, "auto": 0.2}, **overrides,
    }  # fmt: skip
    return CompressArguments(traces_path=str(traces_path), output_path=str(output_path), **settings)


def compress_real(traces_path, output_path, qwen_path, **overrides) -> dict:
    """The compress stage on the real grid (the qwen2.5-1.5b recipes' run.yaml)."""
    args = real_args(traces_path, output_path, qwen_path, **overrides)
    return compress.main(args, run_args=RunArguments(budget_grid=GRID))


@pytest.fixture(scope="module", params=MODELS)
def real_run(request, shared_data, qwen_path, tmp_path_factory):
    """One model's shared traces file compressed as a new user would: the file as it is, prune only."""
    folder = tmp_path_factory.mktemp(request.param)
    stats = compress_real(traces_file(shared_data, request.param), folder / "examples.jsonl", qwen_path)
    return read_rows(folder / "examples.jsonl"), stats


def test_every_real_example_is_in_its_window_and_reaches_the_gold(real_run, qwen_tokenizer):
    examples, stats = real_run
    assert stats["examples"] == len(examples) > 2 * stats["traces"]
    assert {e["budget_mode"] for e in examples} == {"exact", "max", "auto"}
    for example in examples:
        tokens = count_reasoning_tokens(example["reasoning"], qwen_tokenizer)
        assert tokens == example["reasoning_tokens"], example["id"]
        budget, mode = example["budget_tokens"], example["budget_mode"]
        assert budget in GRID
        if mode == "max":
            assert tokens <= math.floor(0.85 * budget), example["id"]
        elif mode == "exact" or tokens != example["original_reasoning_tokens"]:
            assert math.ceil(0.9 * budget) <= tokens <= budget, (example["id"], mode, budget, tokens)
        else:  # auto, the trace itself: shorter than the budget's window, never longer than the budget
            assert tokens <= budget and (budget == GRID[0] or tokens > GRID[GRID.index(budget) - 1]), example["id"]
        assert leads_to_answer(example["reasoning"], example["answer"], example["question"]), example["id"]
        if example["compressor"] == "prune":
            assert tokens < example["original_reasoning_tokens"]


def test_slots_of_at_least_half_the_trace_are_kept(real_run):
    examples, stats = real_run
    at_least_half = stats["slots"]["budget_at_least_half_trace"]
    assert at_least_half["planned"] >= 100
    assert at_least_half["kept"] >= 0.9 * at_least_half["planned"], at_least_half
    kept = [
        e for e in examples if e["budget_mode"] != "auto" and 2 * e["budget_tokens"] >= e["original_reasoning_tokens"]
    ]
    assert len(kept) == at_least_half["kept"]
    # Below half, what is dropped is dropped for a reason the report names.
    below = stats["slots"]["budget_below_half_trace"]
    assert below["planned"] - below["kept"] <= sum(below["failures"].values())
    assert set(below["failures"]) <= {"prune:derivation_too_long", "prune:no_conclusion", "prune:window_missed"}


def test_auto_labels_cover_the_traces_and_grow_with_math_level(real_run):
    _, stats = real_run
    auto = stats["auto_labels"]
    assert auto["labelled_share"] >= 0.8, auto
    means = {int(k): v for k, v in auto["mean_by_difficulty"].items()}
    counts = {int(k): v for k, v in auto["labelled_by_difficulty"].items()}
    assert sorted(means) == [1, 2, 3, 4, 5]

    def pooled(levels):
        return sum(means[k] * counts[k] for k in levels) / sum(counts[k] for k in levels)

    easy, middle, hard = pooled([1, 2]), pooled([3]), pooled([4, 5])
    assert easy <= middle <= hard and hard >= 1.5 * easy, means
    assert means[5] == max(means.values()) and means[1] == min(means.values()), means


def test_exact_slots_above_the_trace_become_max_or_are_skipped(shared_data, qwen_path, tmp_path):
    from cotx_rl.trace_rows import load_traces

    rows, _ = load_traces(traces_file(shared_data, R1))
    subset = tmp_path / "short.jsonl"
    write_rows(subset, rows[:12])
    replanned = compress_real(subset, tmp_path / "a.jsonl", qwen_path, mode_proportions={"exact": 1})
    skipped = compress_real(
        subset, tmp_path / "b.jsonl", qwen_path, mode_proportions={"exact": 1}, exact_above_trace="skip"
    )
    moved = replanned["replanned"]["exact->max:above_trace_length"]
    assert moved > 0 and skipped["dropped"]["exact:above_trace_length"] == moved
    assert replanned["examples_per_mode"]["max"] >= moved - replanned["dropped"].get("dropped:max", 0)
    assert "max" not in skipped["examples_per_mode"]


def test_verify_reads_the_raw_shape_and_counts_unfinished_and_null_golds(shared_data, tmp_path):
    path = traces_file(shared_data, "gpt-oss-20b")
    raw = read_rows(path)
    stats = verify.main(VerifyArguments(str(path), str(tmp_path / "kept.jsonl")))
    assert stats["total"] == len(raw) == 100
    assert stats["dropped"]["truncated"] == sum(not r["complete"] for r in raw) == 14
    assert stats["dropped"]["null_gold"] == sum(r["complete"] and r["gold_answer"] is None for r in raw) == 1
    assert stats["kept"] >= 80
    kept = read_rows(tmp_path / "kept.jsonl")
    source = {r["id"]: r for r in raw}
    for row in kept:
        original = source[row["id"]]
        assert row["question"] == original["problem"] and row["answer"] == original["gold_answer"]
        assert row["reasoning"] == original["thinking"] and row["response"] == original["answer_text"]
        assert row["model"] == original["model"] and row["math_type"] == original["math_type"]  # passed through
        assert row["difficulty"] == int(original["math_level"]) and row["teacher_correct"] is True
        assert "problem" not in row and "thinking" not in row  # renamed, not copied


def test_a_raw_think_completion_column_is_split_once(shared_data, qwen_path, tmp_path):
    rows = read_rows(traces_file(shared_data, R1))[:10]
    raw = [
        {"id": r["id"], "problem": r["problem"], "gold_answer": r["gold_answer"], "math_level": r["math_level"],
         "completion": f"<think>\n{r['thinking']}\n</think>\n\n{r['answer_text']}"}
        for r in rows if r["gold_answer"] is not None
    ]  # fmt: skip
    raw[1]["completion"] = raw[1]["completion"].removeprefix("<think>\n")  # a template that opened the tag itself
    raw[2]["completion"] = raw[2]["completion"].split("</think>")[0]  # cut by the length limit: no closing tag
    write_rows(tmp_path / "raw.jsonl", raw)
    stats = verify.main(VerifyArguments(str(tmp_path / "raw.jsonl"), str(tmp_path / "kept.jsonl")))
    assert stats["dropped"]["truncated"] == 1 and stats["kept"] >= len(raw) - 2
    kept = {r["id"]: r for r in read_rows(tmp_path / "kept.jsonl")}
    for r in rows:
        if r["id"] in kept:
            assert kept[r["id"]]["reasoning"] == r["thinking"].strip()
            assert kept[r["id"]]["response"] == r["answer_text"].strip()
            assert "completion" not in kept[r["id"]]
    examples_stats = compress_real(tmp_path / "raw.jsonl", tmp_path / "examples.jsonl", qwen_path)
    assert examples_stats["input_dropped"] == {"truncated": 1} and examples_stats["examples"] > len(raw)


def test_numeric_golds_are_read_as_text_and_null_golds_counted(tmp_path):
    reasoning = "We add them: 40 + 2 = 42.\n\nWait, let me check again. 40 + 2 is 42. Yes."
    rows = [
        {"id": "int", "question": "What is 40 + 2?", "answer": 42, "reasoning": reasoning, "response": "\\boxed{42}"},
        {"id": "float", "question": "Half of 1?", "answer": 0.5, "reasoning": "1 / 2 = 0.5.", "response": "0.5"},
        {"id": "null", "question": "What is 40 + 2?", "answer": None, "reasoning": reasoning, "response": "42"},
    ]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = verify.main(VerifyArguments(str(tmp_path / "t.jsonl"), str(tmp_path / "k.jsonl")))
    assert stats["kept"] == 2 and stats["dropped"]["null_gold"] == 1
    assert [r["answer"] for r in read_rows(tmp_path / "k.jsonl")] == ["42", "0.5"]


@pytest.mark.parametrize("stage", ["verify", "compress"])
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda row: row.pop("thinking"), r"line 3 \(id 'gkcc:R1-32B:2'\): lacks column\(s\) \['thinking'\]"),
        (
            lambda row: row.update(thinking="  \n"),
            r"line 3 \(id 'gkcc:R1-32B:2'\): its reasoning \('thinking'\) is empty",
        ),
    ],
    ids=["missing_column", "empty_reasoning"],
)
def test_a_bad_row_is_named_by_file_line_and_id(shared_data, qwen_path, tmp_path, stage, damage, message):
    rows = read_rows(traces_file(shared_data, R1))[:5]
    damage(rows[2])
    path = tmp_path / "damaged.jsonl"
    write_rows(path, rows)
    with pytest.raises(StageInputError, match=f"damaged.jsonl' {message}"):
        if stage == "verify":
            verify.main(VerifyArguments(str(path), str(tmp_path / "k.jsonl")))
        else:
            compress_real(path, tmp_path / "e.jsonl", qwen_path)


def test_column_keys_name_other_columns(tmp_path):
    from cotx_rl.trace_rows import TraceColumnArguments, load_traces

    rows = [{"id": "a", "q": "What is 6 * 7?", "gold": "42", "thought": "6 * 7 = 42.", "final": "\\boxed{42}",
             "done": "length"}, {"id": "b", "q": "What is 6 * 7?", "gold": "42", "thought": "6 * 7 = 42.",
             "final": "\\boxed{42}", "done": "stop"}]  # fmt: skip
    write_rows(tmp_path / "t.jsonl", rows)
    columns = TraceColumnArguments(
        question_column="q", answer_column="gold", reasoning_column="thought", response_column="final",
        complete_column="done",
    )  # fmt: skip
    loaded, drops = load_traces(tmp_path / "t.jsonl", columns)
    assert drops == {"truncated": 1}
    assert loaded == [{"id": "b", "question": "What is 6 * 7?", "answer": "42", "reasoning": "6 * 7 = 42.",
                       "response": "\\boxed{42}", "done": "stop"}]  # fmt: skip
    with pytest.raises(StageInputError, match="lacks the question column 'question_text'"):
        load_traces(tmp_path / "t.jsonl", TraceColumnArguments(question_column="question_text"))
