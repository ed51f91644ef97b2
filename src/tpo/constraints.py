"""IFEval-style verifiable constraints: rules a response can be checked against without a model.

An instruction may carry constraints such as "answer in lowercase" or "end with this phrase",
each a dict `{"type": NAME, **params}`. Every type has one small check function
`(response, params) -> bool` in the plain dict `CHECKS`, and its parameter names in `PARAMS`.
They sit below the stages because two of them use them: the data loader validates every
constraint of an instruction file up front, and the verifier judge (`tpo.judge.verifier`)
scores a response by the fraction of its instruction's constraints it meets.

Why not reuse `if-verifiable` (the maintained IFEval checks on PyPI): importing any part of it
runs its package `__init__`, which imports `datasets`; it requires datasets, nltk, langdetect,
emoji, immutabledict and syllapy; its `ifbench` module downloads NLTK data on import; and its
semantics differ from what we want to state exactly (keywords are regex substrings, not whole
words; lowercase also needs langdetect to say "English"; every line starting with "-" counts as
a bullet, "---" included). The checks below are a few lines each, offline and deterministic.

Deliberate differences from IFEval: paragraphs are separated by blank lines rather than `***`
(small models do that naturally); word limits are "at least"/"at most" (inclusive); bullets may
use "* " or "- "; highlights count single-asterisk italics only, not **bold**. The kinds that
count (sentences, a keyword's frequency, numbered items, capitalised words), place (a keyword in
the first sentence, the first word of a paragraph) or shape (numbered sections) an answer are
where small models fail in telling ways: they state the count and then miss it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

Check = Callable[[str, dict[str, Any]], bool]

RELATIONS = ("at least", "at most")


def _compare(count: int, relation: str, n: int) -> bool:
    return count >= n if relation == "at least" else count <= n


def contains_word(text: str, word: str) -> bool:
    """`word` (stripped; may hold spaces) occurs in `text`, case-insensitive, with no letter,
    digit or underscore right before or after it.

    >>> contains_word("Rivers meet the river.", "RIVER")
    True
    >>> contains_word("Rivers everywhere", "river")
    False
    """
    pattern = r"(?<!\w)" + re.escape(word.strip()) + r"(?!\w)"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def count_words(text: str) -> int:
    """Whitespace-separated tokens holding at least one letter or digit ("-" bullets do not
    count, "don't" is one word).

    >>> count_words("* don't stop - now 42")
    4
    """
    return sum(1 for token in text.split() if any(ch.isalnum() for ch in token))


def sentences(text: str) -> list[str]:
    """The sentences of `text`: pieces split after ".", "!" or "?" followed by whitespace, and
    at line breaks; a piece counts when it holds a letter or digit ("e.g. this" splits too).

    >>> sentences("One. Two!\\n* three\\n\\n...")
    ['One.', 'Two!', '* three']
    """
    pieces = re.split(r"(?<=[.!?])\s+|\n+", text.strip())
    return [p.strip() for p in pieces if any(ch.isalnum() for ch in p)]


def count_word(text: str, word: str) -> int:
    """How often `word` occurs as a whole word (see `contains_word`), case-insensitive.

    >>> count_word("Tea, tea and teapots: TEA.", "tea")
    3
    """
    pattern = r"(?<!\w)" + re.escape(word.strip()) + r"(?!\w)"
    return len(re.findall(pattern, text, flags=re.IGNORECASE))


def _blocks(text: str) -> list[str]:
    """Paragraphs: non-blank blocks of the stripped text separated by blank lines."""
    return [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]


def lowercase(response: str, params: dict[str, Any]) -> bool:
    """At least one lowercase letter and no uppercase letter anywhere.

    >>> lowercase("all quiet, 42 times", {})
    True
    >>> lowercase("all quiet, Mostly", {})
    False
    """
    return any(ch.islower() for ch in response) and not any(ch.isupper() for ch in response)


def uppercase(response: str, params: dict[str, Any]) -> bool:
    """At least one uppercase letter and no lowercase letter anywhere.

    >>> uppercase("STOP, 3 TIMES!", {})
    True
    >>> uppercase("STOP now", {})
    False
    """
    return any(ch.isupper() for ch in response) and not any(ch.islower() for ch in response)


def keywords_include(response: str, params: dict[str, Any]) -> bool:
    """Every keyword in `keywords` occurs as a whole word, case-insensitive ("river" is not
    found in "rivers").

    >>> keywords_include("The River ran past a stone.", {"keywords": ["river", "stone"]})
    True
    >>> keywords_include("Rivers and stones.", {"keywords": ["river", "stone"]})
    False
    """
    return all(contains_word(response, word) for word in params["keywords"])


def keywords_exclude(response: str, params: dict[str, Any]) -> bool:
    """No keyword in `keywords` occurs as a whole word, case-insensitive.

    >>> keywords_exclude("Rivers are wet.", {"keywords": ["river"]})
    True
    >>> keywords_exclude("A river is wet.", {"keywords": ["lake", "RIVER"]})
    False
    """
    return not any(contains_word(response, word) for word in params["keywords"])


def word_count(response: str, params: dict[str, Any]) -> bool:
    """The number of words (see `count_words`) is `relation` ("at least" means >=, "at most"
    means <=) `n`.

    >>> word_count("one two three", {"relation": "at most", "n": 3})
    True
    >>> word_count("one two three", {"relation": "at least", "n": 4})
    False
    """
    return _compare(count_words(response), params["relation"], params["n"])


def bullets(response: str, params: dict[str, Any]) -> bool:
    """Exactly `n` lines start, after optional indentation, with "* " or "- " (so "**bold**"
    and "---" are not bullets; nested bullets count).

    >>> bullets("Tips:\\n* one\\n- two\\n**three**", {"n": 2})
    True
    >>> bullets("* one\\n* two\\n* three", {"n": 2})
    False
    """
    found = re.findall(r"^[ \t]*[*-] ", response, flags=re.MULTILINE)
    return len(found) == int(params["n"])


def paragraphs(response: str, params: dict[str, Any]) -> bool:
    """Exactly `n` paragraphs: non-blank blocks of the stripped response separated by one or
    more blank lines (a title line or a list is a block too). IFEval separates paragraphs with
    `***`; we use blank lines because small models write them naturally.

    >>> paragraphs("First part.\\n\\n  \\nSecond part,\\nstill second.", {"n": 2})
    True
    >>> paragraphs("Only one\\nparagraph here.", {"n": 2})
    False
    """
    return len(_blocks(response)) == int(params["n"])


def ends_with(response: str, params: dict[str, Any]) -> bool:
    """The response with surrounding whitespace stripped ends with `phrase` (stripped), exactly
    and case-sensitively: nothing, not even a period, may follow it.

    >>> ends_with("Done. Any questions?\\n", {"phrase": "Any questions?"})
    True
    >>> ends_with("Done. Any questions?!", {"phrase": "Any questions?"})
    False
    """
    return response.strip().endswith(params["phrase"].strip())


def starts_with(response: str, params: dict[str, Any]) -> bool:
    """The response with surrounding whitespace stripped starts with `phrase` (stripped),
    exactly and case-sensitively; a plain string prefix, so "In" also matches "Inside".

    >>> starts_with("  Here is my plan.", {"phrase": "Here is"})
    True
    >>> starts_with("here is my plan.", {"phrase": "Here is"})
    False
    """
    return response.strip().startswith(params["phrase"].strip())


def json_format(response: str, params: dict[str, Any]) -> bool:
    """The whole stripped response parses as one JSON value (Python's `json.loads`), optionally
    wrapped in a markdown fence: "```" or "```json" (any case) at the start, "```" at the end.

    >>> json_format('```json\\n{"tips": ["rest", "drink water"]}\\n```', {})
    True
    >>> json_format('Here you go: {"tips": []}', {})
    False
    """
    text = response.strip()
    fenced = re.fullmatch(r"```(?:json)?(.*)```", text, flags=re.DOTALL | re.IGNORECASE)
    if fenced:
        text = fenced.group(1)
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def no_commas(response: str, params: dict[str, Any]) -> bool:
    """No ASCII comma "," anywhere in the response.

    >>> no_commas("Short and plain.", {})
    True
    >>> no_commas("Short, plain.", {})
    False
    """
    return "," not in response


def title(response: str, params: dict[str, Any]) -> bool:
    """Somewhere a title in double angular brackets on one line, with non-blank text inside,
    like <<a day at sea>>.

    >>> title("<<A Day at Sea>>\\nThe waves...", {})
    True
    >>> title("<< >> and <b>bold</b>", {})
    False
    """
    return any(inner.strip() for inner in re.findall(r"<<([^\n<>]*)>>", response))


def quotation(response: str, params: dict[str, Any]) -> bool:
    """The stripped response begins and ends with an ASCII double quote (") with non-blank text
    between them.

    >>> quotation('  "All of it is quoted."  ', {})
    True
    >>> quotation('"Only the start is quoted." he said.', {})
    False
    """
    text = response.strip()
    return len(text) >= 2 and text[0] == text[-1] == '"' and bool(text[1:-1].strip())


def placeholders(response: str, params: dict[str, Any]) -> bool:
    """At least `n` placeholders: non-blank text in square brackets on one line, like
    [address].

    >>> placeholders("Dear [name], see you at [place].", {"n": 2})
    True
    >>> placeholders("Dear [name], see you [ ].", {"n": 2})
    False
    """
    found = re.findall(r"\[([^\[\]\n]*)\]", response)
    return sum(1 for inner in found if inner.strip()) >= int(params["n"])


def highlights(response: str, params: dict[str, Any]) -> bool:
    """At least `n` highlighted sections in markdown italics with single asterisks, like
    *this part*: on one line, no space just inside the asterisks; **bold** does not count.

    >>> highlights("Keep *calm* and *carry on*.", {"n": 2})
    True
    >>> highlights("* a bullet\\n**bold** and 2 * 3 * 4", {"n": 1})
    False
    """
    found = re.findall(r"(?<![*\w])\*(?![\s*])[^*\n]*?(?<![\s*])\*(?![*\w])", response)
    return len(found) >= int(params["n"])


def postscript(response: str, params: dict[str, Any]) -> bool:
    """Some line starts, after optional indentation, with `marker` (stripped), exactly and
    case-sensitively, e.g. "P.S.".

    >>> postscript("Best wishes.\\n\\nP.S. Bring a coat.", {"marker": "P.S."})
    True
    >>> postscript("Best wishes. P.S. Bring a coat.", {"marker": "P.S."})
    False
    """
    marker = params["marker"].strip()
    return any(line.lstrip().startswith(marker) for line in response.splitlines())


def letter_frequency(response: str, params: dict[str, Any]) -> bool:
    """The number of times `letter` occurs, case-insensitive, is `relation` ("at least" means
    >=, "at most" means <=) `n`.

    >>> letter_frequency("Keep kicking", {"letter": "k", "relation": "at least", "n": 3})
    True
    >>> letter_frequency("Zebra zone", {"letter": "z", "relation": "at most", "n": 1})
    False
    """
    count = response.lower().count(params["letter"].lower())
    return _compare(count, params["relation"], params["n"])


def sentence_count(response: str, params: dict[str, Any]) -> bool:
    """The number of sentences (see `sentences`) is `relation` ("at least" means >=, "at most"
    means <=) `n`.

    >>> sentence_count("It rains. Take a coat!", {"relation": "at most", "n": 2})
    True
    >>> sentence_count("It rains. Take a coat! And boots.", {"relation": "at most", "n": 2})
    False
    """
    return _compare(len(sentences(response)), params["relation"], params["n"])


def keyword_frequency(response: str, params: dict[str, Any]) -> bool:
    """`keyword` occurs as a whole word, case-insensitive, `relation` `n` times.

    >>> keyword_frequency("Tea first. Then more tea.", {"keyword": "tea", "relation": "at least",
    ...     "n": 2})
    True
    >>> keyword_frequency("Tea first, teapots later.", {"keyword": "tea", "relation": "at least",
    ...     "n": 2})
    False
    """
    return _compare(count_word(response, params["keyword"]), params["relation"], params["n"])


def numbered_list(response: str, params: dict[str, Any]) -> bool:
    """Exactly `n` lines start, after optional indentation, with a number followed by "." or
    ")" and a space, and they are numbered 1, 2, ..., n in that order.

    >>> numbered_list("Steps:\\n1. Boil water.\\n2) Add tea.", {"n": 2})
    True
    >>> numbered_list("1. Boil water.\\n3. Add tea.", {"n": 2})
    False
    """
    found = re.findall(r"^[ \t]*(\d+)[.)] ", response, flags=re.MULTILINE)
    return [int(x) for x in found] == list(range(1, int(params["n"]) + 1))


def keyword_in_first_sentence(response: str, params: dict[str, Any]) -> bool:
    """`keyword` occurs as a whole word, case-insensitive, in the first sentence (see
    `sentences`).

    >>> keyword_in_first_sentence("The tide rises. It falls.", {"keyword": "tide"})
    True
    >>> keyword_in_first_sentence("The sea rises. The tide falls.", {"keyword": "tide"})
    False
    """
    first = sentences(response)[:1]
    return bool(first) and contains_word(first[0], params["keyword"])


def paragraph_first_word(response: str, params: dict[str, Any]) -> bool:
    """Paragraph `n` (1-based; paragraphs as in `paragraphs`) exists and its first word, with
    leading punctuation and markdown marks (quotes, "*", "#") stripped, is `word`,
    case-insensitive.

    >>> paragraph_first_word("Tea is old.\\n\\n*Also*, it is cheap.", {"n": 2, "word": "Also"})
    True
    >>> paragraph_first_word("Tea is old. Also cheap.", {"n": 2, "word": "Also"})
    False
    """
    blocks = _blocks(response)
    n = int(params["n"])
    if not 1 <= n <= len(blocks):
        return False
    first = re.match(r"[^\w]*(\w+)", blocks[n - 1])
    return first is not None and first.group(1).lower() == params["word"].lower()


def sections(response: str, params: dict[str, Any]) -> bool:
    """Exactly `n` sections: lines that start, after optional indentation and markdown marks
    ("#", "*"), with `marker` (exactly, case-sensitively) and a number, numbered 1, 2, ..., n
    in order, like "SECTION 1".

    >>> sections("SECTION 1\\nTea.\\n## SECTION 2: Coffee", {"marker": "SECTION", "n": 2})
    True
    >>> sections("Section 1\\nTea.\\nSECTION 2", {"marker": "SECTION", "n": 2})
    False
    """
    marker = re.escape(params["marker"].strip())
    found = re.findall(rf"^[ \t#*]*{marker} (\d+)\b", response, flags=re.MULTILINE)
    return [int(x) for x in found] == list(range(1, int(params["n"]) + 1))


def capital_words(response: str, params: dict[str, Any]) -> bool:
    """The number of words written in capitals (two or more letters, none lowercase, like
    "NEVER" or "UK") is `relation` `n`.

    >>> capital_words("Do NOT skip the WARM-UP.", {"relation": "at least", "n": 2})
    True
    >>> capital_words("Do not skip it. I mean It.", {"relation": "at least", "n": 1})
    False
    """
    count = sum(
        1
        for token in response.split()
        if sum(ch.isalpha() for ch in token) >= 2 and not any(ch.islower() for ch in token)
    )
    return _compare(count, params["relation"], params["n"])


CHECKS: dict[str, Check] = {
    "lowercase": lowercase,
    "uppercase": uppercase,
    "keywords_include": keywords_include,
    "keywords_exclude": keywords_exclude,
    "word_count": word_count,
    "bullets": bullets,
    "paragraphs": paragraphs,
    "ends_with": ends_with,
    "starts_with": starts_with,
    "json_format": json_format,
    "no_commas": no_commas,
    "title": title,
    "quotation": quotation,
    "placeholders": placeholders,
    "highlights": highlights,
    "postscript": postscript,
    "letter_frequency": letter_frequency,
    "sentence_count": sentence_count,
    "keyword_frequency": keyword_frequency,
    "numbered_list": numbered_list,
    "keyword_in_first_sentence": keyword_in_first_sentence,
    "paragraph_first_word": paragraph_first_word,
    "sections": sections,
    "capital_words": capital_words,
}

# The parameters each type takes, all required, no others allowed.
PARAMS: dict[str, tuple[str, ...]] = {
    "lowercase": (),
    "uppercase": (),
    "keywords_include": ("keywords",),
    "keywords_exclude": ("keywords",),
    "word_count": ("relation", "n"),
    "bullets": ("n",),
    "paragraphs": ("n",),
    "ends_with": ("phrase",),
    "starts_with": ("phrase",),
    "json_format": (),
    "no_commas": (),
    "title": (),
    "quotation": (),
    "placeholders": ("n",),
    "highlights": ("n",),
    "postscript": ("marker",),
    "letter_frequency": ("letter", "relation", "n"),
    "sentence_count": ("relation", "n"),
    "keyword_frequency": ("keyword", "relation", "n"),
    "numbered_list": ("n",),
    "keyword_in_first_sentence": ("keyword",),
    "paragraph_first_word": ("n", "word"),
    "sections": ("marker", "n"),
    "capital_words": ("relation", "n"),
}


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_keywords(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_text(word) for word in value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_word(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z]+", value) is not None


def _is_letter(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 1 and value.isascii() and value.isalpha()


# Parameter name -> (is the value valid, what a valid value is).
_PARAM_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "keywords": (_is_keywords, "a non-empty list of non-empty strings"),
    "relation": (lambda value: value in RELATIONS, "'at least' or 'at most'"),
    "n": (_is_count, "a non-negative integer"),
    "phrase": (_is_text, "a non-empty string"),
    "marker": (_is_text, "a non-empty string"),
    "letter": (_is_letter, "a single ASCII letter"),
    "keyword": (_is_text, "a non-empty string"),
    "word": (_is_word, "one word of ASCII letters"),
}


def validate_constraint(constraint: Any) -> None:
    """Raise a one-line `ValueError` naming the type (and parameter) unless `constraint` is a
    dict with a known `type` and exactly that type's parameters, each of a valid value."""
    kind = constraint.get("type") if isinstance(constraint, dict) else None
    if kind is None:
        raise ValueError(f"a constraint must be an object with a 'type' key, got {constraint!r}")
    if not isinstance(kind, str) or kind not in CHECKS:
        raise ValueError(f"unknown constraint type {kind!r}; known: {', '.join(CHECKS)}")
    expected = PARAMS[kind]
    for param in expected:
        if param not in constraint:
            raise ValueError(f"constraint {kind!r} is missing parameter {param!r}")
        is_valid, description = _PARAM_RULES[param]
        if not is_valid(constraint[param]):
            raise ValueError(
                f"constraint {kind!r} parameter {param!r} must be {description}, "
                f"got {constraint[param]!r}"
            )
    extra = [key for key in constraint if key != "type" and key not in expected]
    if extra:
        raise ValueError(f"constraint {kind!r} got unexpected parameter(s) {extra!r}")


def check_constraint(response: str, constraint: dict[str, Any]) -> bool:
    """Validate one constraint and say whether `response` meets it."""
    validate_constraint(constraint)
    params = {key: value for key, value in constraint.items() if key != "type"}
    return CHECKS[constraint["type"]](response, params)


def constraint_results(response: str, constraints: Sequence[dict[str, Any]]) -> list[bool]:
    """One bool per constraint, in order; raises `ValueError` on an invalid constraint."""
    return [check_constraint(response, constraint) for constraint in constraints]


def all_met(response: str, constraints: Sequence[dict[str, Any]]) -> bool:
    """Whether every constraint is met (True for an empty list)."""
    return all(constraint_results(response, constraints))
