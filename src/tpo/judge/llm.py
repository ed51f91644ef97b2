"""LLM judges: pairwise comparisons turned into Bradley-Terry scores, and a 1-10 pointwise score.

Pairwise (the paper's Self-Taught Evaluator setup). For the K responses of one instruction, the
judge model is asked which of two responses follows the instruction better, for every pair in
both orders, because LLM judges favour one position; a judge that always says "A" then gives
every pair one win each way, a tie. Verdicts count win +1, loss -1, and tie, unparsable answer
or failed call 0; `bradley_terry` turns them into per-sample strengths, reported on the Elo
scale (1000 = the prompt's average sample). K(K-1) calls per prompt grow fast, so
`pairs_per_sample: m` compares each sample with only its ceil(m/2) neighbours on each side of a
random cycle (seeded by the run seed and the instruction id): at least m opponents each, 2K *
ceil(m/2) calls, and the cycle keeps the comparison graph connected, so the fit stays defined.
Identical responses tie without a call. A prompt whose every comparison failed gets null scores
(no information), and a lone response gets 1000.

Pointwise: the judge model rates one response on a written 1-10 rubric; the last line that
states "Score: N" is the score (a loose mention such as "I would rate it 9" only when there is
no such line), and no score (or one outside 1-10) is a null.

Both let the judge reason first and read a fixed final line, and both parsers tolerate free
text around it. The prompts are ours; their hash is part of every cache key, so editing a
prompt never reuses answers given to the old one.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Sequence
from typing import Literal

from tpo.judge import JudgeError, JudgeItem, JudgeStats
from tpo.judge.backends import FatalCallError, LLMBackend, Messages, Reply
from tpo.judge.bradley_terry import ELO_BASE, bradley_terry, elo, win_matrix
from tpo.judge.cache import JudgeCache, cache_key
from tpo.seeds import derive_seed

Verdict = Literal["A", "B", "tie"]
MIN_FAILING_STREAK = 8

PAIRWISE_PROMPT = """\
Please act as an impartial judge. Below are an instruction and two responses to it. Decide \
which response follows the instruction better: consider whether it does what was asked, and \
how helpful, accurate, complete and clear it is. Do not let the order of the responses or \
their length influence you; a response is not better for being longer.

[Instruction]
{instruction}

[Response A]
{response_a}

[Response B]
{response_b}

First explain your reasoning briefly. Then write your verdict on the last line, in exactly \
one of these forms:
Verdict: A
Verdict: B
Verdict: tie"""

POINTWISE_PROMPT = """\
Please act as an impartial judge. Below are an instruction and a response to it. Rate how well \
the response follows the instruction: whether it does what was asked, and how helpful, \
accurate, complete and clear it is.

1-2: ignores the instruction, or is wrong or harmful
3-4: attempts the task but misses important parts or has serious errors
5-6: acceptable, with noticeable gaps or mistakes
7-8: good: correct and helpful, with minor issues
9-10: excellent: follows the instruction fully, accurate, complete and clear

[Instruction]
{instruction}

[Response]
{response}

First explain your reasoning briefly. Then write your score on the last line, exactly in the \
form "Score: N", where N is a whole number from 1 to 10."""


def _version(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:8]


# --- parsing -----------------------------------------------------------------------------

# The fixed final line the prompt asks for, with any markdown around it: "**Verdict:** [[B]]".
_D = r"[ \t*_`'\"\[\]()<>{}#]*"  # spaces and markdown, within one line
_EXACT_VERDICT = re.compile(
    rf"^{_D}(?:(?:final|overall|my)\s+)?verdict{_D}[:=\-]?{_D}(?:response\s+)?(a|b|tie)"
    rf"{_D}[.!]?{_D}$",
    re.IGNORECASE | re.MULTILINE,
)
_VERDICT_LINE = re.compile(r"verdict\b[^\n\w]*(?:is\b)?([^\n]*)", re.IGNORECASE)
_DECORATION = re.compile(r"[*_`\"\[\]()<>{}]")
_TIE_WORDS = re.compile(r"^(?:it'?s\s+)?(?:a\s+)?(?:tie|draw|equal|both|neither)\b")
# A bare letter is a verdict only where it stands alone: the article "a" never does.
_ALONE = (
    r"(?=\s*(?:$|[.,;:!?\-]|(?:is|was)\s+(?:\w+\s+)?(?:the\s+)?(?:better|best|winner|superior|"
    r"preferred|stronger)\b|wins?\b|won\b|over\b))"
)
_LETTER = re.compile(rf"^(?:(?:response|assistant|output|answer)\s*([ab])\b|([ab]){_ALONE})")
_FREE_TEXT: list[
    tuple[re.Pattern[str], Verdict | None]
] = [  # (pattern, verdict or None when the pattern's group names it)
    (re.compile(r"\[\[\s*([ABC])\s*\]\]"), None),
    (
        re.compile(
            r"\b(?:response|assistant|output)\s*\(?([AB])\)?\s+(?:is|was)\s+"
            r"(?:clearly\s+|slightly\s+|much\s+|far\s+)?(?:the\s+)?better",
            re.IGNORECASE,
        ),
        None,
    ),
    (
        re.compile(
            r"\b(?:prefer|choose|pick|select|go\s+with)\s+(?:(?:response|output|assistant)\s*"
            rf"\(?([AB])\)?|([AB]){_ALONE})",
            re.IGNORECASE,
        ),
        None,
    ),
    (
        re.compile(
            r"\b(?:better|best|preferred|stronger|superior|winning)\s+(?:response|answer|output|one)"
            rf"\s+(?:is|was)\s+(?:response\s+)?\(?([AB])\)?{_ALONE}",
            re.IGNORECASE,
        ),
        None,
    ),
    (
        re.compile(
            rf"\b(?:winner\s+is|win\s+(?:for|to)|goes\s+to)\s+(?:response\s+)?\(?([AB])\)?{_ALONE}",
            re.IGNORECASE,
        ),
        None,
    ),
    (re.compile(r"\b(?:it'?s|it\s+is)\s+a\s+(?:tie|draw)\b", re.IGNORECASE), "tie"),
    (re.compile(r"\bboth\s+(?:responses\s+)?are\s+equally\b", re.IGNORECASE), "tie"),
]


def _free_text(text: str) -> Verdict | None:
    """The last free-text verdict in `text`."""
    found: list[tuple[int, Verdict]] = []
    for pattern, fixed in _FREE_TEXT:
        for m in pattern.finditer(text):
            word = fixed or next(g for g in m.groups() if g).upper()
            verdict: Verdict = "tie" if word in ("C", "tie") else "A" if word == "A" else "B"
            found.append((m.start(), verdict))
    return max(found)[1] if found else None


def _verdict_word(tail: str) -> Verdict | None:
    clean = " ".join(_DECORATION.sub(" ", tail).lower().split())
    if _TIE_WORDS.match(clean):
        return "tie"
    letter = _LETTER.match(clean)
    if letter:
        return "A" if (letter.group(1) or letter.group(2)) == "a" else "B"
    return _free_text(tail)  # "Verdict: I choose B", "Verdict: a clear win for B"


def parse_verdict(text: str) -> Verdict | None:
    """The judge's verdict: its last line in the asked-for form ("Verdict: A", markdown
    allowed), else its last readable "Verdict ..." line, else the last free-text verdict
    ("[[A]]", "Response B is better", "I choose B", "it's a tie"); None when there is none.
    A bare letter counts only where it stands alone, so the article "a" is never "A".

    >>> parse_verdict("A is shorter, B is correct.\\n**Verdict:** [[B]]")
    'B'
    >>> parse_verdict("Both miss the point. Verdict - tie.")
    'tie'
    >>> parse_verdict("On balance, Response A is better than B.")
    'A'
    >>> parse_verdict("Verdict: a clear win for B")
    'B'
    >>> parse_verdict("I cannot decide what a or b means.") is None
    True
    """
    exact = _EXACT_VERDICT.findall(text)
    if exact:
        word = exact[-1].lower()
        return "tie" if word == "tie" else "A" if word == "a" else "B"
    for match in reversed(list(_VERDICT_LINE.finditer(text))):
        verdict = _verdict_word(match.group(1))
        if verdict is not None:
            return verdict
    return _free_text(text)


_NUMBER = r"(\d+(?:\.\d+)?)"
# A whole line that states the score, as the prompt asks: "Score: 7", "**Rating:** [[6]]",
# "Final score = 8/10", "Actually, revised score: 5". Prose that merely mentions a score
# ("the score of 10 is for perfect answers") is not such a line.
_SCORE_LINE = re.compile(
    rf"^{_D}(?:[\w,'-]+\s+){{0,3}}?(?:score|rating){_D}(?:[:=\-]|\s+is\b)?{_D}{_NUMBER}{_D}"
    rf"(?:(?:/|out\s+of)\s*10)?{_D}[.!]?{_D}$",
    re.IGNORECASE | re.MULTILINE,
)
_SCORE = re.compile(
    rf"\b(?:score|rating)\b[^\n\d]{{0,12}}?{_NUMBER}(?:\s*(?:/|out\s+of)\s*10)?", re.I
)
_OUT_OF_TEN = re.compile(
    rf"(?:\[\[\s*{_NUMBER}\s*\]\])|\b{_NUMBER}\s*(?:/|out\s+of)\s*10\b"
    rf"|\b(?:rate|grade|give)\s+(?:it|this(?:\s+response)?|the\s+response)\s+(?:an?\s+)?{_NUMBER}"
    r"(?!\.?\d)(?!\s*(?:%|/|out\b))",
    re.IGNORECASE,
)


def parse_score(text: str) -> float | None:
    """The last line that states the score ("Score: N", "Rating: N/10", markdown allowed),
    else the last loose mention ("score of N", "N/10", "[[N]]", "I would rate it N");
    None unless 1 <= N <= 10.

    >>> parse_score("Clear and correct.\\nScore: 8/10")
    8.0
    >>> parse_score("Score: 7\\n(The score of 10 is for perfect answers.)")
    7.0
    >>> parse_score("I would give it a 7 out of 10.")
    7.0
    >>> parse_score("Score: 11") is None, parse_score("Looks fine to me.") is None
    (True, True)
    """
    lines = _SCORE_LINE.findall(text)
    if lines:
        value = float(lines[-1])
    else:
        matches = [(m.start(), m.group(1)) for m in _SCORE.finditer(text)]
        if not matches:
            matches = [
                (m.start(), next(g for g in m.groups() if g)) for m in _OUT_OF_TEN.finditer(text)
            ]
        if not matches:
            return None
        value = float(max(matches)[1])
    return value if 1.0 <= value <= 10.0 else None


# --- pair scheduling ---------------------------------------------------------------------


def comparison_pairs(n: int, per_sample: int | None, rng: random.Random) -> list[tuple[int, int]]:
    """Unordered pairs (i < j) of n samples to compare: all of them when `per_sample` is None
    or large enough, else each sample with its ceil(m/2) neighbours on each side of a random
    cycle, so every sample meets at least m others and all n stay connected.

    >>> comparison_pairs(3, None, random.Random(0))
    [(0, 1), (0, 2), (1, 2)]
    >>> len(comparison_pairs(8, 2, random.Random(0)))  # a cycle: 8 pairs instead of 28
    8
    """
    if per_sample is None or 2 * math.ceil(per_sample / 2) >= n - 1:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    order = list(range(n))
    rng.shuffle(order)
    pairs = set()
    for offset in range(1, math.ceil(per_sample / 2) + 1):
        for pos in range(n):
            a, b = order[pos], order[(pos + offset) % n]
            pairs.add((min(a, b), max(a, b)))
    return sorted(pairs)


def outcome(verdict: str | None) -> float:
    """Points for the response shown first (as A): win +1, loss -1, and 0 for a tie, no
    verdict or a failed call.

    >>> [outcome(v) for v in ("A", "B", "tie", None, "failed")]
    [1.0, -1.0, 0.0, 0.0, 0.0]
    """
    return 1.0 if verdict == "A" else -1.0 if verdict == "B" else 0.0


# --- asking ------------------------------------------------------------------------------


def failing_streak_limit(backend: LLMBackend) -> int:
    """Consecutive failed calls after which the endpoint counts as down: at least 8, and at
    least half a chunk (2 x concurrency), so one burst of errors alone does not stop a run."""
    return max(MIN_FAILING_STREAK, backend.chunk_size // 2)


def ask(
    backend: LLMBackend,
    cache: JudgeCache | None,
    stats: JudgeStats,
    requests: Sequence[tuple[str, Messages]],
) -> list[str | None]:
    """The judge's answer to each (cache key, conversation), None where the call failed.

    Answers come from the cache where present; the rest are asked once per distinct key, in
    chunks, and each chunk's answers are cached before the next is sent (also when a refused
    key or a wrong URL stops the chunk). The first chunk raises JudgeError if every call this
    judge has made failed (a dead endpoint, a wrong URL), and any chunk does once the last
    `failing_streak_limit` calls all failed (an endpoint that died mid-run), rather than wait
    out the retries of thousands more."""
    texts: dict[str, str | None] = {}
    if cache is not None:
        hits = cache.get([key for key, _ in requests])
        texts.update((key, value["text"]) for key, value in hits.items())
    stats.cached += sum(key in texts for key, _ in requests)
    todo = list({key: msgs for key, msgs in requests if key not in texts}.items())
    limit = failing_streak_limit(backend)
    for start in range(0, len(todo), backend.chunk_size):
        part = todo[start : start + backend.chunk_size]
        try:
            replies: Sequence[Reply | None] = backend.complete([msgs for _, msgs in part])
        except FatalCallError as exc:
            _record(part, exc.replies, texts, cache, stats)  # keep what did come back
            raise
        _record(part, replies, texts, cache, stats)
        if stats.failed == stats.calls:
            raise JudgeError(
                f"all {stats.calls} calls of the judge {backend.identity} failed "
                f"(last: {stats.last_error})"
            )
        if stats.failing_streak >= limit:
            raise JudgeError(
                f"the last {stats.failing_streak} calls of the judge {backend.identity} failed "
                f"(last: {stats.last_error}); stopped; answers so far are cached, rerun to resume"
            )
    return [texts[key] for key, _ in requests]


def _record(
    part: Sequence[tuple[str, Messages]],
    replies: Sequence[Reply | None],
    texts: dict[str, str | None],
    cache: JudgeCache | None,
    stats: JudgeStats,
) -> None:
    """Count and cache the replies of one chunk; None: a call never made."""
    fresh = {}
    for (key, _), reply in zip(part, replies, strict=True):
        if reply is None:
            continue
        stats.calls += 1
        stats.retries += reply.attempts - 1
        texts[key] = reply.text
        if reply.text is None:
            stats.failed += 1
            stats.failing_streak += 1
            stats.last_error = reply.error
        else:
            stats.failing_streak = 0
            fresh[key] = {"text": reply.text}
    if cache is not None:
        cache.put(fresh)


def _user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


class PairwiseJudge:
    def __init__(
        self,
        backend: LLMBackend,
        cache: JudgeCache | None = None,
        *,
        pairs_per_sample: int | None,
        seed: int,
    ):
        self.backend = backend
        self.cache = cache
        self.pairs_per_sample = pairs_per_sample
        self.seed = seed
        self.stats = JudgeStats()
        self.identity = f"pairwise:{_version(PAIRWISE_PROMPT)}:{backend.identity}"

    @property
    def name(self) -> str:
        return f"pairwise:{self.backend.identity}"

    def score(self, items: Sequence[JudgeItem]) -> list[float | None]:
        groups: dict[str, list[int]] = {}
        for pos, item in enumerate(items):
            groups.setdefault(item.instruction.id, []).append(pos)
        plan: list[tuple[str, int, int]] = []  # (instruction id, shown as A, shown as B)
        for iid, members in groups.items():
            rng = random.Random(derive_seed(self.seed, "judge_pairs", iid))
            for i, j in comparison_pairs(len(members), self.pairs_per_sample, rng):
                plan += [(iid, members[i], members[j]), (iid, members[j], members[i])]
        verdicts = self.verdicts([(items[a], items[b]) for _, a, b in plan])
        games: dict[str, list[tuple[int, int, str | None]]] = {iid: [] for iid in groups}
        for (iid, a, b), verdict in zip(plan, verdicts, strict=True):
            games[iid].append((a, b, verdict))
        scores: list[float | None] = [ELO_BASE] * len(items)
        for iid, members in groups.items():
            local = {pos: k for k, pos in enumerate(members)}
            if games[iid] and all(v == "failed" for _, _, v in games[iid]):
                for pos in members:
                    scores[pos] = None
                continue
            outcomes = [(local[a], local[b], outcome(v)) for a, b, v in games[iid]]
            strengths = bradley_terry(win_matrix(len(members), outcomes))
            for pos, value in zip(members, elo(strengths), strict=True):
                scores[pos] = value
        return scores

    def verdicts(self, pairs: Sequence[tuple[JudgeItem, JudgeItem]]) -> list[str | None]:
        """Per ordered pair: "A", "B", "tie", None (no verdict in the answer) or "failed"."""
        asked = [k for k, (a, b) in enumerate(pairs) if a.response != b.response]
        requests = []
        for k in asked:
            a, b = pairs[k]
            text = a.instruction.text
            key = cache_key(self.identity, text, a.response, b.response)
            prompt = PAIRWISE_PROMPT.format(
                instruction=text, response_a=a.response, response_b=b.response
            )
            requests.append((key, _user(prompt)))
        answers = dict(zip(asked, ask(self.backend, self.cache, self.stats, requests), strict=True))
        out: list[str | None] = []
        for k in range(len(pairs)):
            if k not in answers:  # identical responses
                verdict: str | None = "tie"
            else:
                answer = answers[k]
                verdict = "failed" if answer is None else parse_verdict(answer)
                self.stats.answers += answer is not None
                self.stats.unparsed += answer is not None and verdict is None
            self.stats.ties += verdict == "tie"
            out.append(verdict)
        return out


class PointwiseJudge:
    def __init__(self, backend: LLMBackend, cache: JudgeCache | None = None):
        self.backend = backend
        self.cache = cache
        self.stats = JudgeStats()
        self.identity = f"pointwise:{_version(POINTWISE_PROMPT)}:{backend.identity}"

    @property
    def name(self) -> str:
        return f"pointwise:{self.backend.identity}"

    def score(self, items: Sequence[JudgeItem]) -> list[float | None]:
        requests = [
            (
                cache_key(self.identity, item.instruction.text, item.response),
                _user(
                    POINTWISE_PROMPT.format(
                        instruction=item.instruction.text, response=item.response
                    )
                ),
            )
            for item in items
        ]
        scores: list[float | None] = []
        for answer in ask(self.backend, self.cache, self.stats, requests):
            value = None if answer is None else parse_score(answer)
            self.stats.answers += answer is not None
            self.stats.unparsed += answer is not None and value is None
            scores.append(value)
        return scores
