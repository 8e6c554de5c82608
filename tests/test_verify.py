import json

import pytest

from cotx_rl import verify
from cotx_rl.io import StageInputError, read_rows, write_rows
from cotx_rl.verify import VerifyArguments
from rewards._pool import Failure


def trace(id_, reasoning, response, answer="12", finish="stop", **extra):
    return {"id": id_, "question": "What is 3 * 4?", "answer": answer, "reasoning": reasoning, "response": response,
            "finish_reason": finish, **extra}  # fmt: skip


def test_keeps_correct_traces_and_counts_drops_by_reason(tmp_path, caplog):
    rows = [
        trace("ok", "3 * 4 = 12.", "\\boxed{12}", source="mine"),
        trace("ok-in-thought", "3 * 4 = 12, so the answer is \\boxed{12}.", ""),
        trace("wrong", "3 * 4 = 13.", "\\boxed{13}", teacher_correct=True),
        trace("silent", "I am not sure.", ""),
        trace("cut", "3 * 4 = 1", "", finish="length"),
        trace("bad-gold", "3 * 4 = 12.", "\\boxed{12}", answer="\\boxed{}"),
        trace("no-gold", "3 * 4 = 12.", "\\boxed{12}", answer=""),
        trace("refused", "", "", finish="error", error="The openai teacher's endpoint answered 400: bad request"),
        trace("wrapped", "<think>\n3 * 4 = 12.\n</think>", "\\boxed{12}"),  # an export that kept the tags
        trace("code-tag", "The tag '</think>' closes it. 3 * 4 = 12.", "\\boxed{12}"),
        trace("list-gold", "3 * 4 = 12.", "\\boxed{12}", answer=["12"]),
    ]
    write_rows(tmp_path / "traces.jsonl", rows)
    with caplog.at_level("INFO"):
        stats = verify.main(
            VerifyArguments(str(tmp_path / "traces.jsonl"), str(tmp_path / "kept.jsonl"), str(tmp_path / "stats.json"))
        )
    kept = read_rows(tmp_path / "kept.jsonl")
    assert [r["id"] for r in kept] == ["ok", "ok-in-thought", "wrapped"]
    assert all(r["teacher_correct"] is True for r in kept) and kept[0]["source"] == "mine"
    assert kept[2]["reasoning"] == "3 * 4 = 12."
    assert stats["dropped"] == {
        "truncated": 1,
        "null_gold": 1,
        "failed": 1,
        "stray_tag": 1,
        "duplicate": 0,
        "no_answer": 1,
        "wrong_answer": 1,
        "unreadable_gold": 2,
        "unverified": 0,
    }
    assert json.loads((tmp_path / "stats.json").read_text()) == stats
    # Every drop is named by its line.
    for reason, line in [("stray_tag", 10), ("truncated", 5), ("wrong_answer", 3), ("no_answer", 4), ("null_gold", 7),
                         ("unreadable_gold", 11), ("unreadable_gold", 6)]:  # fmt: skip
        assert f"dropped 1 rows as {reason} (line {line})" in caplog.text


def test_missing_column_is_named(tmp_path):
    write_rows(tmp_path / "t.jsonl", [{"id": "1", "question": "q", "answer": "1"}])
    with pytest.raises(StageInputError, match="reasoning"):
        verify.main(VerifyArguments(str(tmp_path / "t.jsonl"), str(tmp_path / "k.jsonl")))
    assert not (tmp_path / "k.jsonl").exists()


def test_repeated_traces_are_counted_and_the_first_kept(tmp_path, caplog):
    # Two `traces` runs on one file (before the lock) wrote every id twice; a teacher's samples differ by `sample`.
    rows = [
        {"id": "a", "question": "Compute 2 + 3.", "answer": "5", "reasoning": "2 + 3 = 5.", "response": "\\boxed{5}"},
        {"id": "b", "question": "Compute 2 + 4.", "answer": "6", "reasoning": "2 + 4 = 6.", "response": "\\boxed{6}"},
        {"id": "a", "question": "Compute 2 + 3.", "answer": "5", "reasoning": "again", "response": "\\boxed{5}"},
        {"id": "c", "sample": 0, "question": "Compute 1 + 1.", "answer": "2", "reasoning": "1 + 1 = 2.",
         "response": "\\boxed{2}"},
        {"id": "c", "sample": 1, "question": "Compute 1 + 1.", "answer": "2", "reasoning": "So 2.",
         "response": "\\boxed{2}"},
    ]  # fmt: skip
    write_rows(tmp_path / "traces.jsonl", rows)
    caplog.set_level("WARNING", logger="cotx_rl")
    stats = verify.main(VerifyArguments(str(tmp_path / "traces.jsonl"), str(tmp_path / "kept.jsonl")))
    kept = read_rows(tmp_path / "kept.jsonl")
    assert [(r["id"], r.get("sample")) for r in kept] == [("a", None), ("b", None), ("c", 0), ("c", 1)]
    assert kept[0]["reasoning"] == "2 + 3 = 5."
    assert stats["dropped"]["duplicate"] == 1 and stats["total"] == 5
    assert "repeats id 'a' on lines 1 and 3" in caplog.text


def test_a_pair_the_verifier_could_not_judge_is_not_called_unreadable(tmp_path, monkeypatch):
    # The verifier scores None both for a gold it cannot read and for a pair whose worker died: two different drops.
    dead_pool = type("DeadPool", (), {"map": lambda self, pairs: [Failure.WORKER_DIED] * len(pairs)})()
    monkeypatch.setattr(verify.correctness_reward, "_get_pool", lambda: dead_pool)
    # "(x+1)^2" against "x^2+2x+1" needs the symbolic workers (no fast path decides it); "$$" is a gold
    # nobody can read.
    rows = [
        trace("readable", "Expand it.", "\\boxed{x^2+2x+1}", answer="(x+1)^2"),
        trace("unreadable", "3 * 4 = 12.", "\\boxed{12}", answer="$$"),
    ]
    write_rows(tmp_path / "traces.jsonl", rows)
    with pytest.raises(StageInputError, match="passed verification"):
        verify.main(VerifyArguments(str(tmp_path / "traces.jsonl"), str(tmp_path / "kept.jsonl")))
    kept, drops = verify.verify_rows(rows)
    assert not kept and drops == {"unverified": 1, "unreadable_gold": 1}


def test_the_id_column_is_found_or_named(tmp_path):
    """Ids under `problem_id` (a common name) are read as `id`; `id_column` names any other column."""
    from cotx_rl.trace_rows import TraceColumnArguments

    rows = [{("problem_id" if k == "id" else k): v for k, v in trace(f"p{i}", "3 * 4 = 12.", "\\boxed{12}").items()}
            for i in range(2)]  # fmt: skip
    write_rows(tmp_path / "traces.jsonl", rows)
    verify.main(VerifyArguments(str(tmp_path / "traces.jsonl"), str(tmp_path / "kept.jsonl")))
    assert [row["id"] for row in read_rows(tmp_path / "kept.jsonl")] == ["p0", "p1"]
    write_rows(
        tmp_path / "uid.jsonl", [{("uid" if k == "problem_id" else k): v for k, v in row.items()} for row in rows]
    )
    with pytest.raises(StageInputError, match="no id column \\('id' or 'problem_id'"):
        verify.main(VerifyArguments(str(tmp_path / "uid.jsonl"), str(tmp_path / "kept.jsonl")))
    verify.main(
        VerifyArguments(str(tmp_path / "uid.jsonl"), str(tmp_path / "kept.jsonl")),
        TraceColumnArguments(id_column="uid"),
    )
    assert [row["id"] for row in read_rows(tmp_path / "kept.jsonl")] == ["p0", "p1"]


def test_a_raw_completion_with_a_literal_closing_tag_is_dropped_not_split_wrongly(tmp_path, caplog):
    rows = [
        {"id": "plain", "question": "What is 3 * 4?", "answer": "12", "completion": "<think>3 * 4 = 12.</think>\\boxed{12}"},
        {"id": "code", "question": "What is 3 * 4?", "answer": "12",
         "completion": "<think>In code, s = '</think>' ends it. 3 * 4 = 12.</think>\\boxed{12}"},
    ]  # fmt: skip
    write_rows(tmp_path / "raw.jsonl", rows)
    with caplog.at_level("WARNING"):
        stats = verify.main(VerifyArguments(str(tmp_path / "raw.jsonl"), str(tmp_path / "kept.jsonl")))
    assert [row["id"] for row in read_rows(tmp_path / "kept.jsonl")] == ["plain"]
    assert stats["dropped"]["stray_tag"] == 1 and "dropped 1 rows as stray_tag (line 2)" in caplog.text
