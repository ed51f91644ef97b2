"""Model outputs in the formats of the official evaluators, and the files those use as input.

The paper's headline numbers come from AlpacaEval 2 and Arena-Hard with GPT-4 judges. We cannot
call those judges offline, so we write each model's responses (never its thoughts) in their
formats and let users run the official tools themselves:

- AlpacaEval (`alpaca_eval --model_outputs FILE`): a JSON list of
  {"instruction", "output", "generator", "dataset"}. Reference outputs use the same format,
  which is what `tpo eval --against FILE` reads.
- Arena-Hard-Auto v0.1 (the version in the paper): `question.jsonl` with {"question_id",
  "category", "cluster", "turns": [{"content"}]} and `model_answer/MODEL.jsonl` with
  {"question_id", "answer_id", "model_id", "choices": [{"index": 0, "turns": [{"content"}]}],
  "tstamp"}.
- Arena-Hard-Auto v2.0: `question.jsonl` with {"uid", "category", "subcategory", "prompt"} and
  `model_answer/MODEL.jsonl` with {"uid", "ans_id", "model", "messages": [user, assistant with
  content {"answer"}], "tstamp"}.

Arena-Hard's judge settings are looked up by each question's `category` (v2.0: hard_prompt,
coding, math, creative_writing; v0.1: arena-hard-v0.1), so a question read from a benchmark's
own file (`tpo eval --questions`) keeps its category, cluster or subcategory, and an AlpacaEval
question its `dataset`; other questions get "hard_prompt" (v2.0), "arena-hard-v0.1" (v0.1) and
"tpo" (AlpacaEval), with our category as the cluster or subcategory.

Arena-Hard's style control needs token counts and markdown statistics per answer; its own
`add_markdown_info.py` adds them, with its own tokenizer, so we leave them out. Answer ids are
derived from the model and question (not random), so an export is reproducible. A response
that failed to parse is exported as an empty answer: that is what a user would have seen.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tpo.data import DataError, load_instructions
from tpo.data.split import heldout_instructions
from tpo.eval.outputs import eval_responses, responses_for
from tpo.generate import GeneratorSource
from tpo.records import Instruction, Response
from tpo.store import RunDir, atomic_write_text

ALPACA_REQUIRED: dict[str, type] = {"instruction": str, "output": str, "generator": str}
ARENA_V01_ANSWER: dict[str, type] = {
    "question_id": str,
    "answer_id": str,
    "model_id": str,
    "choices": list,
    "tstamp": float,
}
ARENA_V01_QUESTION: dict[str, type] = {
    "question_id": str,
    "category": str,
    "cluster": str,
    "turns": list,
}
ARENA_V2_ANSWER: dict[str, type] = {
    "uid": str,
    "ans_id": str,
    "model": str,
    "messages": list,
    "tstamp": float,
}
ARENA_V2_QUESTION: dict[str, type] = {
    "uid": str,
    "category": str,
    "subcategory": str,
    "prompt": str,
}

ARENA_SCHEMAS = {
    "v0.1-question": ARENA_V01_QUESTION,
    "v0.1-answer": ARENA_V01_ANSWER,
    "v2.0-question": ARENA_V2_QUESTION,
    "v2.0-answer": ARENA_V2_ANSWER,
}


V01 = "arena-hard-v0.1"
V2 = "arena-hard-v2.0"
ALPACA = "alpaca_eval"
DEFAULT_CATEGORY = {V01: "arena-hard-v0.1", V2: "hard_prompt"}

# question id -> the benchmark fields of its source record: {"format": V01 | V2 | ALPACA, and
# "category" + "cluster" (v0.1), "category" + "subcategory" (v2.0) or "dataset" (AlpacaEval)}
Sources = dict[str, dict[str, str]]


def safe_name(name: str) -> str:
    """A model name usable as a file name.

    >>> safe_name("runs/demo tpo@iter 1")
    'runs-demo-tpo-iter-1'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def _answer_id(model: str, question: str) -> str:
    return hashlib.sha256(f"{model}\0{question}".encode()).hexdigest()[:22]


# --- records ---------------------------------------------------------------------------


def _source(sources: Sources | None, ins: Instruction, fmt: str) -> dict[str, str]:
    """The fields of the question's source record when it came from a file of format `fmt`."""
    src = (sources or {}).get(ins.id, {})
    return src if src.get("format") == fmt else {}


def alpaca_eval_records(
    rows: Sequence[tuple[Instruction, str]],
    generator: str,
    dataset: str = "tpo",
    sources: Sources | None = None,
) -> list[dict[str, str]]:
    return [
        {
            "instruction": ins.text,
            "output": out,
            "generator": generator,
            "dataset": _source(sources, ins, ALPACA).get("dataset", dataset),
        }
        for ins, out in rows
    ]


def arena_hard_v01(
    rows: Sequence[tuple[Instruction, str]], model: str, sources: Sources | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(questions, answers) in Arena-Hard-Auto v0.1's format."""
    questions = []
    for ins, _ in rows:
        src = _source(sources, ins, V01)
        questions.append(
            {
                "question_id": ins.id,
                "category": src.get("category", DEFAULT_CATEGORY[V01]),
                "cluster": src.get("cluster", ins.category or ""),
                "turns": [{"content": ins.text}],
            }
        )
    now = time.time()
    answers = [
        {
            "question_id": ins.id,
            "answer_id": _answer_id(model, ins.id),
            "model_id": model,
            "choices": [{"index": 0, "turns": [{"content": out}]}],
            "tstamp": now,
        }
        for ins, out in rows
    ]
    return questions, answers


def arena_hard_v2(
    rows: Sequence[tuple[Instruction, str]], model: str, sources: Sources | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(questions, answers) in Arena-Hard-Auto v2.0's format."""
    questions = []
    for ins, _ in rows:
        src = _source(sources, ins, V2)
        questions.append(
            {
                "uid": ins.id,
                "category": src.get("category", DEFAULT_CATEGORY[V2]),
                "subcategory": src.get("subcategory", ins.category or ""),
                "prompt": ins.text,
            }
        )
    now = time.time()
    answers = [
        {
            "uid": ins.id,
            "ans_id": _answer_id(model, ins.id),
            "model": model,
            "messages": [
                {"role": "user", "content": ins.text},
                {"role": "assistant", "content": {"answer": out}},
            ],
            "tstamp": now,
        }
        for ins, out in rows
    ]
    return questions, answers


def _jsonl(records: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_exports(
    out_dir: Path,
    model: str,
    rows: Sequence[tuple[Instruction, Response | None]],
    sources: Sources | None = None,
) -> list[Path]:
    """Write the AlpacaEval and both Arena-Hard exports of one model; returns the files.
    `sources` (from `question_sources`) keeps the benchmark fields of the question files."""
    model = safe_name(model)
    texts = [(ins, response or "") for ins, response in rows]
    files = {
        out_dir / ALPACA / f"{model}.json": json.dumps(
            alpaca_eval_records(texts, model, sources=sources), indent=2, ensure_ascii=False
        )
        + "\n"
    }
    for version, build in ((V01, arena_hard_v01), (V2, arena_hard_v2)):
        questions, answers = build(texts, model, sources)
        files[out_dir / version / "question.jsonl"] = _jsonl(questions)
        files[out_dir / version / "model_answer" / f"{model}.jsonl"] = _jsonl(answers)
    for path, text in files.items():
        atomic_write_text(path, text)
    return list(files)


# --- checks (the formats' schemas) ------------------------------------------------------


def _check_keys(record: Any, schema: dict[str, type]) -> None:
    if not isinstance(record, dict):
        raise ValueError("expected an object")
    for key, kind in schema.items():
        if key not in record:
            raise ValueError(f"missing {key!r}")
        ok = isinstance(record[key], kind) or (kind is float and isinstance(record[key], int))
        if not ok or isinstance(record[key], bool):
            raise ValueError(f"{key!r} must be {kind.__name__}")


def _has_text(obj: Any, key: str) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get(key), str)


def check_alpaca_eval(data: Any) -> None:
    """Raise ValueError unless `data` is an AlpacaEval outputs list."""
    if not isinstance(data, list):
        raise ValueError("AlpacaEval outputs must be a JSON list")
    for i, record in enumerate(data):
        try:
            _check_keys(record, ALPACA_REQUIRED)
            if "dataset" in record and not isinstance(record["dataset"], str):
                raise ValueError("'dataset' must be str")
        except ValueError as exc:
            raise ValueError(f"item {i}: {exc}") from None


def check_arena_record(record: Any, kind: str) -> None:
    """Raise ValueError unless `record` is an Arena-Hard `kind` record: v0.1-question,
    v0.1-answer, v2.0-question or v2.0-answer."""
    _check_keys(record, ARENA_SCHEMAS[kind])
    if kind == "v0.1-question":
        turns = record["turns"]
        if not turns or not all(_has_text(t, "content") for t in turns):
            raise ValueError("'turns' must hold {'content': str} objects")
    if kind == "v0.1-answer":
        choice = record["choices"][0] if record["choices"] else {}
        turns = choice.get("turns") if isinstance(choice, dict) else None
        if not isinstance(turns, list) or not turns or not _has_text(turns[0], "content"):
            raise ValueError("choices[0].turns[0].content must be a string")
    if kind == "v2.0-answer":
        messages = record["messages"]
        roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
        answer = messages[-1].get("content") if roles == ["user", "assistant"] else None
        if not isinstance(answer, dict):
            raise ValueError("messages must be user then assistant {'answer': str}")
        if not _has_text(answer, "answer"):
            raise ValueError("the assistant's 'answer' must be a string")


def check_arena_hard(records: Sequence[Any], kind: str) -> None:
    """`check_arena_record` for every record, naming the line of the first bad one."""
    for i, record in enumerate(records):
        try:
            check_arena_record(record, kind)
        except ValueError as exc:
            raise ValueError(f"line {i + 1}: {exc}") from None


# --- readers -----------------------------------------------------------------------------


def _alpaca_records(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    try:
        check_alpaca_eval(data)
    except ValueError as exc:
        raise DataError(f"{path}: not an AlpacaEval outputs file: {exc}") from None
    if not data:
        raise DataError(f"{path}: no outputs")
    return list(data)


def _alpaca_id(index: int) -> str:
    return f"alpaca-{index + 1:04d}"


def read_alpaca_eval(path: str | Path) -> list[tuple[Instruction, Response, str]]:
    """(instruction, output, generator) from an AlpacaEval-format JSON file. Ids are
    `alpaca-0001`... in file order; matching with other outputs is by instruction text."""
    return [
        (Instruction(_alpaca_id(i), r["instruction"]), Response(r["output"]), r["generator"])
        for i, r in enumerate(_alpaca_records(Path(path)))
    ]


def _question(record: Any) -> tuple[Instruction, dict[str, str]]:
    if isinstance(record, dict) and "question_id" in record:
        check_arena_record(record, "v0.1-question")
        qid = str(record["question_id"])
        src = {"format": V01, "category": record["category"], "cluster": record["cluster"]}
        return Instruction(qid, record["turns"][0]["content"]), src
    if isinstance(record, dict) and "uid" in record:
        check_arena_record(record, "v2.0-question")
        src = {"format": V2, "category": record["category"], "subcategory": record["subcategory"]}
        return Instruction(record["uid"], record["prompt"], record.get("category")), src
    raise ValueError("expected an Arena-Hard question (question_id + turns, or uid + prompt)")


def read_question_file(path: str | Path) -> tuple[list[Instruction], Sources]:
    """Instructions from an AlpacaEval JSON file, an Arena-Hard question.jsonl (v0.1 or v2.0),
    or a tpo instruction JSONL file, with the benchmark fields of each source record (what
    `write_exports` keeps: Arena-Hard's category and cluster/subcategory, AlpacaEval's dataset)."""
    path = Path(path)
    if path.suffix == ".json":
        records = _alpaca_records(path)
        instructions = [Instruction(_alpaca_id(i), r["instruction"]) for i, r in enumerate(records)]
        sources = {
            _alpaca_id(i): {"format": ALPACA, "dataset": r["dataset"]}
            for i, r in enumerate(records)
            if "dataset" in r
        }
        return instructions, sources
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    first = next((ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()), "")
    if '"question_id"' not in first and '"uid"' not in first:
        return load_instructions(path), {}
    out, found = [], {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ins, src = _question(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: malformed JSON: {exc.msg}") from None
        except ValueError as exc:
            raise DataError(f"{path}:{number}: {exc}") from None
        out.append(ins)
        found[ins.id] = src
    return out, found


def read_questions(path: str | Path) -> list[Instruction]:
    """The instructions of `read_question_file`."""
    return read_question_file(path)[0]


def export_responses(
    run: RunDir,
    models: GeneratorSource,
    out_dir: str | Path,
    questions: str | Path | None = None,
    *,
    arm: str,
    iteration: int,
) -> list[Path]:
    """Write ARM's responses at ITERATION in AlpacaEval and Arena-Hard formats: to the
    held-out instructions, or to a question file's (generated if needed)."""
    sources = None
    if questions is None:
        instructions = heldout_instructions(run)
        responses = eval_responses(run, arm, iteration)
    else:
        instructions, sources = read_question_file(questions)
        responses = responses_for(
            run, models, instructions, arm=arm, iteration=iteration, prefix="questions"
        )
    rows = [(ins, responses[ins.id]) for ins in instructions if ins.id in responses]
    return write_exports(Path(out_dir), f"{run.root.name}-{arm}-iter{iteration}", rows, sources)
