import json

import pytest

from cotx_rl import problems
from cotx_rl.arithmetic import make_problems, parse_question
from cotx_rl.io import StageInputError, gold_text, read_rows
from cotx_rl.problems import ProblemsArguments


def test_embedded_domain_is_deterministic_graded_and_split(tmp_path):
    paths = problems.main(ProblemsArguments(output_dir=str(tmp_path / "a"), num_train=300, num_test=60, seed=3))
    again = problems.main(ProblemsArguments(output_dir=str(tmp_path / "b"), num_train=300, num_test=60, seed=3))
    train, test = read_rows(paths["train"]), read_rows(paths["test"])
    assert train == read_rows(again["train"]) and test == read_rows(again["test"])
    assert len(train) == 300 and len(test) == 60
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert {r["difficulty"] for r in train} == set(range(1, 7))
    for row in train + test:
        problem = parse_question(row["question"])
        assert problem.steps == row["difficulty"] and str(problem.answer) == row["answer"]
        assert all(0 <= v <= 99 for v in problem.values())


def test_other_seed_other_problems():
    assert make_problems(50, "train", seed=1) != make_problems(50, "train", seed=2)


def test_gsm8k_preset_reads_gold_after_hashes(tmp_path, shared_data):
    args = ProblemsArguments(
        output_dir=str(tmp_path), source=str(shared_data / "gsm8k_test.jsonl"), preset="gsm8k", test_size=0.1
    )
    paths = problems.main(args)
    rows = read_rows(paths["train"]) + read_rows(paths["test"])
    assert len(rows) == 1319
    by_question = {r["question"]: r for r in rows}
    raw = [json.loads(line) for line in (shared_data / "gsm8k_test.jsonl").read_text().splitlines()]
    for record in raw[:50]:
        assert by_question[record["question"]]["answer"] == record["answer"].split("####")[-1].strip()
    assert len({r["id"] for r in rows}) == len(rows)


def test_math_preset_uses_answer_level_and_unique_id(tmp_path, shared_data):
    args = ProblemsArguments(output_dir=str(tmp_path), source=str(shared_data / "math500_test.jsonl"), preset="math")
    rows = read_rows(problems.main(args)["train"])
    assert len(rows) == 500
    assert rows[0]["id"].startswith("test/") and rows[0]["difficulty"] in range(1, 6)
    assert {r["difficulty"] for r in rows} == {1, 2, 3, 4, 5}
    assert "subject" in rows[0]  # extra columns pass through


def test_math_preset_falls_back_to_last_boxed_of_solution(tmp_path):
    source = tmp_path / "math.jsonl"
    source.write_text(
        json.dumps(
            {
                "problem": "2+2?",
                "solution": "First $\\boxed{3}$. That was wrong. So $\\boxed{\\frac{8}{2}}$.",
                "level": "Level 2",
                "unique_id": "a",
            }
        )
        + "\n"
    )
    rows = read_rows(
        problems.main(ProblemsArguments(output_dir=str(tmp_path / "out"), source=str(source), preset="math"))["train"]
    )
    assert rows[0]["answer"] == "\\frac{8}{2}" and rows[0]["difficulty"] == 2


def test_math_preset_reads_math_train_copies_without_ids_or_levels(tmp_path, shared_data, caplog):
    """DeepScaleR's MATH train copy (`problem`, `answer`, `difficulty`, no `unique_id`), and MATH's own training set
    (`problem`, `level`, `solution`, no `unique_id`): ids are made up, difficulty comes from what there is."""
    source = shared_data / "real" / "problems" / "math_train_7474_deepscaler.json"
    raw = json.loads(source.read_text())
    with caplog.at_level("INFO", logger="cotx_rl.problems"):
        args = ProblemsArguments(output_dir=str(tmp_path / "a"), source=str(source), preset="math", test_size=0.1)
        written = problems.main(args)
    rows = read_rows(written["train"]) + read_rows(written["test"])
    readable = [record for record in raw if gold_text(record["answer"]) is not None]  # 4 golds are empty
    assert len(rows) == len(readable) == len(raw) - 4 and len({row["id"] for row in rows}) == len(rows)
    by_question = {record["problem"]: record for record in raw}
    for row in rows[:50]:
        assert (row["answer"], row["difficulty"]) == (str(by_question[row["question"]]["answer"]).strip(),
                                                      by_question[row["question"]]["difficulty"])  # fmt: skip
    assert "no 'unique_id' column (preset math): ids made up" in caplog.text
    assert "no 'level' column (preset math): using 'difficulty'" in caplog.text
    hub_style = tmp_path / "math_train.jsonl"
    hub_style.write_text(json.dumps({"problem": "2+2?", "level": "Level 1", "type": "Algebra",
                                     "solution": "So $\\boxed{4}$."}) + "\n")  # fmt: skip
    (row,) = read_rows(problems.main(ProblemsArguments(output_dir=str(tmp_path / "b"), source=str(hub_style),
                                                       preset="math"))["train"])  # fmt: skip
    assert (row["answer"], row["difficulty"]) == ("4", 1) and row["id"]


def test_a_column_named_in_the_recipe_is_required_even_with_a_preset(tmp_path):
    source = tmp_path / "math.jsonl"
    source.write_text(json.dumps({"problem": "2+2?", "answer": "4"}) + "\n")
    args = ProblemsArguments(output_dir=str(tmp_path / "out"), source=str(source), preset="math", id_column="uid")
    with pytest.raises(StageInputError, match="lacks column\\(s\\) \\['uid'\\]"):
        problems.main(args)


def test_column_mapping_for_csv(tmp_path):
    source = tmp_path / "mine.csv"
    source.write_text("prompt,gold,lvl\nWhat is 2+3?,5,1\nWhat is 7*6?,42,3\n")
    args = ProblemsArguments(
        output_dir=str(tmp_path / "out"), source=str(source), question_column="prompt", answer_column="gold",
        difficulty_column="lvl",
    )  # fmt: skip
    rows = read_rows(problems.main(args)["train"])
    assert [(r["question"], r["answer"], r["difficulty"]) for r in rows] == [
        ("What is 2+3?", "5", 1),
        ("What is 7*6?", "42", 3),
    ]


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda d: None, "does not exist"),
        (lambda d: (d / "p.jsonl").write_text(""), "is empty"),
        (lambda d: (d / "p.jsonl").write_text('{"q": "x", "answer": "1"}\n'), "lacks column"),
    ],
)
def test_bad_sources_fail_before_writing(tmp_path, setup, message):
    setup(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text("keep me\n")
    with pytest.raises(StageInputError, match=message):
        problems.main(ProblemsArguments(output_dir=str(out), source=str(tmp_path / "p.jsonl")))
    assert (out / "train.jsonl").read_text() == "keep me\n"


def test_unknown_preset_names_it():
    with pytest.raises(StageInputError, match="'gsm9k'"):
        ProblemsArguments(output_dir="x", preset="gsm9k")


def test_recipe_keys_win_over_the_preset():
    args = ProblemsArguments(output_dir="x", preset="math", id_column="my_id")
    assert args.id_column == "my_id" and args.question_column == "problem"


@pytest.mark.parametrize(
    "preset,path,question_column",
    [
        ("gsm8k", "gsm8k_test.jsonl", "question"),
        ("math", "math500_test.jsonl", "problem"),
        ("aime", "real/problems/aime24_dynasor.jsonl", "problem"),
        ("qwq", "real/problems/aime24_qwq.jsonl", "prompt"),
        ("qwq", "real/problems/aime25_qwq.jsonl", "prompt"),
        ("amc", "real/problems/amc23_test.jsonl", "problem"),
    ],
)
def test_real_problem_sets_read_by_preset(shared_data, preset, path, question_column):
    raw = [json.loads(line) for line in (shared_data / path).read_text().splitlines() if line.strip()]
    rows = problems.read_problems(str(shared_data / path), preset)
    assert len(rows) == len(raw) and len({r["id"] for r in rows}) == len(rows)
    for row, record in zip(rows, raw):
        gold = record["answer"].split("####")[-1].strip() if preset == "gsm8k" else str(record["answer"]).strip()
        assert (row["question"], row["answer"]) == (record[question_column], gold)


def test_unreadable_golds_are_kept_for_evaluation_only(tmp_path):
    source = tmp_path / "p.jsonl"
    source.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": null}\n')
    assert [r["answer"] for r in problems.read_problems(str(source), "qwq")] == ["1"]
    kept = problems.read_problems(str(source), "qwq", keep_unreadable=True)
    assert [(r["question"], r["answer"]) for r in kept] == [("a", "1"), ("b", None)]
