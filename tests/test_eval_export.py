"""Exports in AlpacaEval and Arena-Hard formats, read back and checked against their schemas."""

from __future__ import annotations

import json

import pytest

from tpo.data import DataError
from tpo.eval.export import (
    check_alpaca_eval,
    check_arena_hard,
    read_alpaca_eval,
    read_question_file,
    read_questions,
    write_exports,
)
from tpo.records import Instruction, Response

ROWS = [
    (
        Instruction("q1", "Write a haiku about rain.", category="poem"),
        Response("Rain on the roof."),
    ),
    (Instruction("q2", 'Say "hi" — in JSON.'), Response('{"greeting": "hi"}')),
    (Instruction("q3", "Explain tides."), None),  # a parse failure
]


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_exports_read_back_by_the_formats_schemas(tmp_path):
    files = write_exports(tmp_path, "my run/tpo iter 1", ROWS)
    names = sorted(str(p.relative_to(tmp_path)) for p in files)
    assert names == [
        "alpaca_eval/my-run-tpo-iter-1.json",
        "arena-hard-v0.1/model_answer/my-run-tpo-iter-1.jsonl",
        "arena-hard-v0.1/question.jsonl",
        "arena-hard-v2.0/model_answer/my-run-tpo-iter-1.jsonl",
        "arena-hard-v2.0/question.jsonl",
    ]
    alpaca = json.loads((tmp_path / "alpaca_eval" / "my-run-tpo-iter-1.json").read_text())
    check_alpaca_eval(alpaca)
    assert [r["output"] for r in alpaca] == ["Rain on the roof.", '{"greeting": "hi"}', ""]
    assert {r["generator"] for r in alpaca} == {"my-run-tpo-iter-1"}

    v01 = tmp_path / "arena-hard-v0.1"
    answers, questions = (
        _jsonl(v01 / "model_answer" / "my-run-tpo-iter-1.jsonl"),
        _jsonl(v01 / "question.jsonl"),
    )
    check_arena_hard(answers, "v0.1-answer")
    check_arena_hard(questions, "v0.1-question")
    assert answers[1]["choices"][0]["turns"][0]["content"] == '{"greeting": "hi"}'
    assert [a["question_id"] for a in answers] == [q["question_id"] for q in questions]
    assert len({a["answer_id"] for a in answers}) == 3

    v2 = tmp_path / "arena-hard-v2.0"
    answers2 = _jsonl(v2 / "model_answer" / "my-run-tpo-iter-1.jsonl")
    check_arena_hard(answers2, "v2.0-answer")
    check_arena_hard(_jsonl(v2 / "question.jsonl"), "v2.0-question")
    assert answers2[0]["messages"][1]["content"]["answer"] == "Rain on the roof."

    # round trip: the question files and the AlpacaEval file read back as the instructions
    for path in (v01 / "question.jsonl", v2 / "question.jsonl"):
        back = read_questions(path)
        assert [(i.id, i.text) for i in back] == [(i.id, i.text) for i, _ in ROWS]
    refs = read_alpaca_eval(tmp_path / "alpaca_eval" / "my-run-tpo-iter-1.json")
    assert (refs[0][0].text, refs[0][1]) == (
        "Write a haiku about rain.",
        "Rain on the roof.",
    )


def _categories(path):
    return [(r["category"], r.get("cluster", r.get("subcategory"))) for r in _jsonl(path)]


def test_arena_hard_categories_are_the_judges_settings_keys(tmp_path):
    """gen_judgment.py looks up JUDGE_SETTINGS[question["category"]]: hard_prompt, coding,
    math, creative_writing (v2.0) and arena-hard-v0.1 (v0.1). Our own questions get the
    defaults, with our category as the cluster / subcategory."""
    write_exports(tmp_path, "m", ROWS)
    expected = ["poem", "", ""]
    v01 = _categories(tmp_path / "arena-hard-v0.1" / "question.jsonl")
    v2 = _categories(tmp_path / "arena-hard-v2.0" / "question.jsonl")
    assert v01 == [("arena-hard-v0.1", c) for c in expected]
    assert v2 == [("hard_prompt", c) for c in expected]
    alpaca = json.loads((tmp_path / "alpaca_eval" / "m.json").read_text())
    assert [r["dataset"] for r in alpaca] == ["tpo"] * 3


def test_question_files_keep_their_categories_and_datasets(tmp_path):
    """Questions from a benchmark's own file keep its fields in that benchmark's export (and
    only there: a v2.0 category is no key of v0.1's settings, and the other way round)."""
    v2 = tmp_path / "v2.jsonl"
    v2.write_text(
        "".join(
            json.dumps({"uid": u, "category": c, "subcategory": s, "prompt": f"Q {u}?"}) + "\n"
            for u, c, s in [("u1", "coding", "python"), ("u2", "creative_writing", "poems")]
        )
    )
    instructions, sources = read_question_file(v2)
    rows = [(ins, Response("answer")) for ins in instructions]
    write_exports(tmp_path / "a", "m", rows, sources)
    assert _categories(tmp_path / "a" / "arena-hard-v2.0" / "question.jsonl") == [
        ("coding", "python"),
        ("creative_writing", "poems"),
    ]
    assert _categories(tmp_path / "a" / "arena-hard-v0.1" / "question.jsonl") == [
        ("arena-hard-v0.1", "coding"),  # our category of a v2.0 question is its category
        ("arena-hard-v0.1", "creative_writing"),
    ]

    v01 = tmp_path / "v01.jsonl"
    v01.write_text(
        json.dumps(
            {"question_id": "q9", "category": "arena-hard-v0.1", "cluster": "Python GUIs",
             "turns": [{"content": "Write a Tk app."}]}
        ) + "\n"
    )  # fmt: skip
    instructions, sources = read_question_file(v01)
    write_exports(tmp_path / "b", "m", [(instructions[0], Response("ok"))], sources)
    assert _categories(tmp_path / "b" / "arena-hard-v0.1" / "question.jsonl") == [
        ("arena-hard-v0.1", "Python GUIs")
    ]
    assert _categories(tmp_path / "b" / "arena-hard-v2.0" / "question.jsonl") == [
        ("hard_prompt", "")
    ]

    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(
        json.dumps(
            [
                {"instruction": "A?", "output": "", "generator": "g", "dataset": "helpful_base"},
                {"instruction": "B?", "output": "", "generator": "g"},
            ]
        )
    )
    instructions, sources = read_question_file(alpaca)
    files = write_exports(
        tmp_path / "c", "m", [(ins, Response("x")) for ins in instructions], sources
    )
    assert [r["dataset"] for r in json.loads(files[0].read_text())] == ["helpful_base", "tpo"]


def test_answer_ids_are_reproducible(tmp_path):
    answers = "arena-hard-v0.1/model_answer/m.jsonl"
    write_exports(tmp_path / "a", "m", ROWS)
    write_exports(tmp_path / "b", "m", ROWS)
    a, b = (tmp_path / "a" / answers).read_text(), (tmp_path / "b" / answers).read_text()
    assert [r["answer_id"] for r in map(json.loads, a.splitlines())] == [
        r["answer_id"] for r in map(json.loads, b.splitlines())
    ]


def test_alpaca_eval_reads_our_export(tmp_path):
    """alpaca_eval's own loader takes the file and finds the columns it evaluates."""
    utils = pytest.importorskip("alpaca_eval.utils", reason="alpaca_eval not installed")
    path = write_exports(tmp_path, "m", ROWS)[0]
    df = utils.load_or_convert_to_dataframe(path)
    assert {"instruction", "output", "generator"} <= set(df.columns)
    assert len(df) == 3


@pytest.mark.parametrize(
    ("record", "kind", "message"),
    [
        ({"instruction": "x", "output": "y"}, "alpaca", "missing 'generator'"),
        ({"instruction": "x", "output": 3, "generator": "g"}, "alpaca", "'output' must be str"),
        ({"question_id": "1", "answer_id": "a", "model_id": "m", "choices": [], "tstamp": 1.0},
         "v0.1-answer", "choices"),
        ({"uid": "1", "ans_id": "a", "model": "m", "tstamp": 1.0,
          "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
         "v2.0-answer", "assistant"),
        ({"question_id": "1", "category": "c", "cluster": "", "turns": [{"text": "q"}]},
         "v0.1-question", "turns"),
    ],
)  # fmt: skip
def test_schema_checks_reject_bad_records(record, kind, message):
    with pytest.raises(ValueError, match=message):
        if kind == "alpaca":
            check_alpaca_eval([record])
        else:
            check_arena_hard([record], kind)


def test_reading_bad_files_names_the_file(tmp_path):
    path = tmp_path / "ref.json"
    path.write_text('{"instruction": "x"}')
    with pytest.raises(DataError, match=r"ref\.json: not an AlpacaEval outputs file"):
        read_alpaca_eval(path)
    path.write_text("[")
    with pytest.raises(DataError, match=r"ref\.json:1: malformed JSON"):
        read_alpaca_eval(path)
    q = tmp_path / "question.jsonl"
    q.write_text('{"question_id": "1", "turns": [{"content": "hi"}]}\n')
    with pytest.raises(DataError, match=r"question\.jsonl:1: missing 'category'"):
        read_questions(q)
    plain = tmp_path / "mine.jsonl"
    plain.write_text('{"text": "Say hi."}\n')
    assert [i.text for i in read_questions(plain)] == ["Say hi."]
