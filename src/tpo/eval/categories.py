"""Per-category results: where does thinking help?

The paper breaks its TPO-vs-direct comparison down into 20 instruction categories and finds
gains well outside reasoning (marketing, health, general knowledge, ...). A category comes
either from the data (`Instruction.category`; the built-in set's category is its task type) or
from an LLM classifier that picks one of `CATEGORIES`. PAPER.md names seven of the paper's
twenty (Marketing, Health, General Knowledge, Creative Writing, Math, Coding, Translation);
the other thirteen here are our own split of common instruction topics, with "Other" last.

A `Classifier` is anything with `classify(instructions) -> list[str | None]`; the LLM one only
needs a text completer (`complete(prompts) -> list[str]`), so a test can pass a fake.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from tpo.eval.winrate import summarize
from tpo.generate import Generator, GeneratorSource, SamplingParams
from tpo.records import Instruction
from tpo.store import RunDir, StoreError, read_json, write_json
from tpo.thoughts import DIRECT, build_prompt

CATEGORIES = (
    "Marketing",
    "Health",
    "General Knowledge",
    "Creative Writing",
    "Math",
    "Coding",
    "Translation",
    "Reasoning and Puzzles",
    "Science",
    "Technology",
    "Business and Finance",
    "Law",
    "Education",
    "History",
    "Travel",
    "Food and Cooking",
    "Entertainment",
    "Personal Advice",
    "Editing and Summarizing",
    "Other",
)
UNLABELLED = "(none)"

PROMPT = (
    "Which category does the user request below belong to? Choose exactly one of these "
    "categories:\n{choices}\n\nUser request:\n<<<\n{instruction}\n>>>\n\n"
    "Answer with the category name only."
)


class Classifier(Protocol):
    def classify(self, instructions: Sequence[Instruction]) -> list[str | None]: ...


class DataCategories:
    """The category written in the data (None where there is none)."""

    def classify(self, instructions: Sequence[Instruction]) -> list[str | None]:
        return [ins.category for ins in instructions]


def classifier_prompt(instruction: str) -> str:
    choices = "\n".join(f"{i}. {name}" for i, name in enumerate(CATEGORIES, start=1))
    return PROMPT.format(choices=choices, instruction=instruction)


def parse_category(answer: str) -> str | None:
    """The category an answer names: a category name (the earliest one mentioned, the longest
    at one position), or its number from the prompt's list; None if it names none.

    >>> parse_category("Category: creative writing."), parse_category("7"), parse_category("??")
    ('Creative Writing', 'Translation', None)
    >>> parse_category("This is about Health, not Math"), parse_category("another one")
    ('Health', None)
    """
    text = answer.strip().lower()
    hits = sorted(
        (m.start(), -len(name), name)
        for name in CATEGORIES
        if (m := re.search(rf"\b{re.escape(name.lower())}\b", text))
    )
    if hits:
        return hits[0][2]
    number = re.match(r"^\W*(\d{1,2})\b", text)
    if number and 1 <= int(number.group(1)) <= len(CATEGORIES):
        return CATEGORIES[int(number.group(1)) - 1]
    return None


class LLMClassifier:
    """Asks a language model for one of `CATEGORIES`; an unparsable answer gives None."""

    def __init__(self, complete: Callable[[Sequence[str]], list[str]]):
        self.complete = complete

    def classify(self, instructions: Sequence[Instruction]) -> list[str | None]:
        answers = self.complete([classifier_prompt(ins.text) for ins in instructions])
        return [parse_category(a) for a in answers]


def per_category(
    preferences: Mapping[str, float | None], categories: Mapping[str, str | None]
) -> dict[str, dict[str, Any]]:
    """Win rate, standard error and counts per category, sorted by category name.

    >>> out = per_category({"a": 1.0, "b": 0.0, "c": 0.5}, {"a": "Math", "b": "Math"})
    >>> out["Math"]["win_rate"], out["Math"]["n"], out["(none)"]["ties"]
    (0.5, 2, 1)
    """
    groups: dict[str, list[float | None]] = {}
    for iid, pref in preferences.items():
        groups.setdefault(categories.get(iid) or UNLABELLED, []).append(pref)
    return {name: summarize(groups[name]).to_dict() for name in sorted(groups)}


# --- the categories of a run's instructions -----------------------------------------------


def completer(
    generator: Generator, tokenizer: Any, max_new_tokens: int = 12
) -> Callable[[Sequence[str]], list[str]]:
    """A greedy text completer over a chat model, for the LLM category classifier."""

    def complete(prompts: Sequence[str]) -> list[str]:
        texts = [build_prompt(tokenizer, DIRECT, p) for p in prompts]
        params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens)
        return [c.text for c in generator.generate(texts, params, seed=0)]

    return complete


def categories_of(
    run: RunDir, models: GeneratorSource | None, instructions: Sequence[Instruction]
) -> dict[str, str | None]:
    """Category per instruction id: from the data, or from `eval.category_classifier`
    (assigned once and kept in data/categories.json)."""
    spec = run.config.eval.category_classifier
    if spec is None:
        return {ins.id: ins.category for ins in instructions}
    path = run.root / "data" / "categories.json"
    saved = read_json(path) if path.exists() else {}
    known: dict[str, str | None] = saved.get("categories", {}) if saved.get("by") == spec else {}
    todo = [ins for ins in instructions if ins.id not in known]
    if todo:
        if models is None:
            raise StoreError(f"eval.category_classifier {spec!r} needs a model to run")
        name = run.config.model.name_or_path if spec == "seed" else spec
        generator, tokenizer = models.generator(name, run.config.eval.batch_size)
        labels = LLMClassifier(completer(generator, tokenizer)).classify(todo)
        known.update((ins.id, label) for ins, label in zip(todo, labels, strict=True))
        write_json(path, {"by": spec, "categories": known})
    return {ins.id: known.get(ins.id) for ins in instructions}
