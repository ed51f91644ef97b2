"""The built-in instruction set and the JSONL instruction loader."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tpo.constraints import CHECKS, validate_constraint
from tpo.data import DataError, builtin_split, load_instructions
from tpo.data.builtin import (
    INCOMPATIBLE,
    N_HELDOUT,
    N_TRAIN,
    SENTENCES,
    TASKS,
    TOPICS,
    WEIGHTS,
    build_instructions,
    consistent,
    write_jsonl,
)
from tpo.records import Instruction

TRAIN, HELDOUT = build_instructions(seed=0)
EVERYTHING = TRAIN + HELDOUT

# Contradictions written out by hand, independent of the generator's own table.
CONTRADICTORY = [
    ("lowercase", "uppercase"),
    ("json_format", "bullets"),
    ("json_format", "paragraphs"),
    ("json_format", "title"),
    ("json_format", "ends_with"),
    ("json_format", "starts_with"),
    ("quotation", "starts_with"),
    ("quotation", "ends_with"),
    ("bullets", "paragraphs"),
    ("lowercase", "capital_words"),
    ("bullets", "numbered_list"),
    ("sentence_count", "bullets"),  # every bullet line is a sentence
    ("sections", "paragraph_first_word"),
]
# Kinds a 135M model can sometimes meet; they should make up most of the set.
EASY = {
    "keywords_include",
    "word_count",
    "ends_with",
    "starts_with",
    "lowercase",
    "no_commas",
    "title",
    "bullets",
    "keywords_exclude",
}


def test_same_seed_same_set_other_seed_differs() -> None:
    assert build_instructions(seed=0) == (TRAIN, HELDOUT)
    assert build_instructions(seed=1) != (TRAIN, HELDOUT)


def test_sizes_ids_and_disjoint_splits() -> None:
    assert (len(TRAIN), len(HELDOUT)) == (N_TRAIN, N_HELDOUT) == (1200, 400)
    assert [i.id for i in TRAIN] == [f"builtin-train-{n:04d}" for n in range(1, 1201)]
    assert [i.id for i in HELDOUT] == [f"builtin-heldout-{n:04d}" for n in range(1, 401)]
    assert len({i.text for i in EVERYTHING}) == 1600


def _prompt_and_types(instruction: Instruction) -> tuple[str, tuple[str, ...]]:
    sentences = " ".join(SENTENCES[c["type"]](c) for c in instruction.constraints)
    assert instruction.text.endswith(" " + sentences)
    prompt = instruction.text[: -len(sentences) - 1]
    return prompt, tuple(sorted(c["type"] for c in instruction.constraints))


def test_no_prompt_and_constraint_types_shared_between_splits() -> None:
    train_keys = {_prompt_and_types(i) for i in TRAIN}
    assert not train_keys & {_prompt_and_types(i) for i in HELDOUT}


def test_coverage_of_topics_tasks_and_types() -> None:
    assert len(TOPICS) >= 30 and len({t.name for t in TOPICS}) == len(TOPICS)
    assert len(TASKS) >= 8
    assert set(WEIGHTS) == set(SENTENCES) == set(CHECKS)
    for split in (TRAIN, HELDOUT):
        assert {i.category for i in split} == set(TASKS)
    kinds = Counter(c["type"] for i in EVERYTHING for c in i.constraints)
    assert sum(kinds[k] for k in EASY) / sum(kinds.values()) > 0.7


def test_every_constraint_validates_and_none_contradict() -> None:
    for instruction in EVERYTHING:
        kinds = [c["type"] for c in instruction.constraints]
        assert 1 <= len(kinds) <= 3 and len(set(kinds)) == len(kinds)
        for constraint in instruction.constraints:
            validate_constraint(constraint)
        for a, b in [*CONTRADICTORY, *INCOMPATIBLE]:
            assert not (a in kinds and b in kinds), (instruction.id, a, b)
        assert consistent(instruction.constraints)
        for c in instruction.constraints:
            if c["type"] == "word_count":
                assert 30 <= c["n"] <= 120
            if "phrase" in c and "lowercase" in kinds:
                assert c["phrase"] == c["phrase"].lower()


def test_consistency_rejects_phrases_that_break_other_rules() -> None:
    ending = {"type": "ends_with", "phrase": "Is there anything else I can help with?"}
    assert not consistent([{"type": "lowercase"}, ending])
    assert not consistent([{"type": "keywords_exclude", "keywords": ["help"]}, ending])
    assert not consistent([{"type": "no_commas"}, {"type": "starts_with", "phrase": "Yes, so"}])
    assert consistent([{"type": "no_commas"}, ending])
    part = {"type": "sections", "marker": "PART", "n": 2}
    assert not consistent([{"type": "lowercase"}, part])  # the marker is in capitals
    assert consistent([{"type": "uppercase"}, part])
    tide = {"type": "keyword_frequency", "keyword": "tide", "relation": "at least", "n": 2}
    assert not consistent([{"type": "keywords_exclude", "keywords": ["tide"]}, tide])
    first = {"type": "paragraph_first_word", "n": 2, "word": "Next"}
    assert not consistent([{"type": "keywords_exclude", "keywords": ["next"]}, first])


def test_shipped_files_equal_a_fresh_generation(tmp_path: Path) -> None:
    assert builtin_split("train") == TRAIN
    assert builtin_split("heldout") == HELDOUT
    shipped = Path(__file__).parents[1] / "src" / "tpo" / "data"
    for split, instructions in (("train", TRAIN), ("heldout", HELDOUT)):
        write_jsonl(instructions, tmp_path / f"{split}.jsonl")
        fresh = (tmp_path / f"{split}.jsonl").read_bytes()
        assert (shipped / f"builtin_{split}.jsonl").read_bytes() == fresh
        assert load_instructions(tmp_path / f"{split}.jsonl") == instructions
    with pytest.raises(DataError, match="unknown built-in split 'test'"):
        builtin_split("test")


def test_load_aliases_default_ids_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    lines = [
        json.dumps({"prompt": "Say hi.", "constraints": [{"type": "lowercase"}]}),
        "",
        json.dumps({"instruction": "Say bye.", "category": "chat"}),
        "   ",
        json.dumps({"id": "own", "text": "Say yes.", "reference": "yes"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    loaded = load_instructions(path)
    assert [i.id for i in loaded] == ["mine-1", "mine-3", "own"]
    assert [i.text for i in loaded] == ["Say hi.", "Say bye.", "Say yes."]
    assert loaded[0].constraints == [{"type": "lowercase"}]
    assert (loaded[1].category, loaded[2].reference) == ("chat", "yes")


GOOD = json.dumps({"id": "a", "text": "Fine."})


@pytest.mark.parametrize(
    ("bad_line", "words"),
    [
        ('{"text": "unclosed"', ["malformed JSON"]),
        ('["a", "list"]', ["JSON object", "list"]),
        ('"just a string"', ["JSON object", "str"]),
        (json.dumps({"text": "   "}), ["empty text"]),
        (json.dumps({"id": "b"}), ["missing field 'text'"]),
        (json.dumps({"text": "x", "constraint": []}), ["unknown field", "'constraint'"]),
        (json.dumps({"text": "x", "prompt": "y"}), ["'text'", "'prompt'"]),
        (json.dumps({"text": "x", "constraints": [{"type": "rhymes"}]}), ["'rhymes'"]),
        (json.dumps({"text": "x", "constraints": [{"type": "bullets"}]}), ["'bullets'", "'n'"]),
        (json.dumps({"text": "x", "constraints": {"type": "lowercase"}}), ["'constraints'"]),
        (json.dumps({"text": "x", "category": 3}), ["'category'"]),
        (json.dumps({"id": "", "text": "x"}), ["id"]),
        (json.dumps({"id": "a", "text": "Again."}), ["duplicate id 'a'", "line 1"]),
    ],
)
def test_load_errors_name_file_and_line(tmp_path: Path, bad_line: str, words: list[str]) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(f"{GOOD}\n\n{bad_line}\n{GOOD.replace('a', 'c')}\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_instructions(path)
    message = str(info.value)
    assert "\n" not in message
    assert "prompts.jsonl:3:" in message  # blank lines still count towards line numbers
    for word in words:
        assert word in message


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_instructions(tmp_path / "nowhere.jsonl")
    assert "nowhere.jsonl" in str(info.value) and "not found" in str(info.value)
    assert "\n" not in str(info.value)
