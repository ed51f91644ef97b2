"""The thought splitter, on scripted text deltas (no model: the splitting is pure text logic).

The expected values are written out by hand. The property checked everywhere: whatever way an
output is cut into deltas (every single cut point, every character alone, random cuts), no
content delta ever carries thought text or marker text, and on outputs with at most one
response marker the stream gives exactly what the offline parser gives.
"""

from __future__ import annotations

import random

import pytest

from tpo.config import PromptConfig
from tpo.serve.stream import ThoughtSplitter, split_full
from tpo.thoughts import DIRECT, thought_format

GENERIC = thought_format("tpo", PromptConfig(thought_prompt="generic"))
SPECIFIC = thought_format("tpo", PromptConfig(thought_prompt="specific"))
MARK = "Here is my response:"


def run(deltas: list[str], fmt=GENERIC, no_marker: str = "content", passthrough: bool = False):
    """All (reasoning, content) pairs, the finish() pair last, and the joined texts."""
    splitter = ThoughtSplitter(fmt, no_marker, passthrough)
    pairs = [splitter.feed(d) for d in deltas] + [splitter.finish()]
    return pairs, "".join(r for r, _ in pairs), "".join(c for _, c in pairs)


def cuttings(text: str, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    out = [[text], list(text)]
    out += [[text[:i], text[i:]] for i in range(1, len(text))]
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(6, len(text) - 1)))
        out.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    return out


OUTPUTS = [
    (GENERIC, "Plan: greet.\nHere is my response:\nHello there!", "Plan: greet.", "Hello there!"),
    (GENERIC, "  Think  \n\nHere's my response:   Hi\n", "Think", "Hi"),
    (GENERIC, "Here is my thought process:\nA plan.\nHere is my response: Yes.", "A plan.", "Yes."),
    (GENERIC, "Here is my answer, Here is nothing. Here is my response: Ok", None, "Ok"),
    (SPECIFIC, "Draft: hi. Evaluation: fine.\n<R>\nHi <b>!</b> a < b", None, "Hi <b>!</b> a < b"),
    (GENERIC, "Plan.\nHere is my response:", "Plan.", ""),
    # a thought marker that does not open the output is thought text, whole and streamed
    (
        GENERIC,
        "Okay. Here is my thought process: X\nHere is my response: Y",
        "Okay. Here is my thought process: X",
        "Y",
    ),
    (
        GENERIC,
        " Here is my thought process:\nA.\nHere is my thought process: B.\nHere's my response: C",
        "A.\nHere is my thought process: B.",
        "C",
    ),
]


@pytest.mark.parametrize(("fmt", "output", "thought", "response"), OUTPUTS)
def test_stream_equals_offline_parser_for_every_cutting(fmt, output, thought, response):
    if thought is None:
        thought = output[: output.index(fmt.response_marker)].strip()
    assert split_full(output, fmt) == (thought, response)
    for no_marker in ("content", "reasoning"):
        for deltas in cuttings(output):
            pairs, reasoning, content = run(deltas, fmt, no_marker)
            assert (reasoning, content) == (thought, response), deltas
            first_content = next((i for i, (_, c) in enumerate(pairs) if c), len(pairs))
            assert not any(r for r, _ in pairs[first_content + 1 :])  # thought, then response
            seen_content = [c for _, c in pairs if c]
            assert not any(part in thought for part in seen_content if len(part) > 3)


def test_marker_split_across_tokens_never_reaches_content():
    deltas = ["I should greet", " them.\nHere", " is", " my resp", "onse", ":", "\nHello", "!"]
    splitter = ThoughtSplitter(GENERIC, no_marker="reasoning")
    got = [splitter.feed(d) for d in deltas]
    assert got == [
        ("I should greet", ""),
        (" them.", ""),  # "\nHere" is held: it could start the marker
        ("", ""),
        ("", ""),
        ("", ""),
        ("", ""),  # the marker is complete: the held text was the marker, dropped
        ("", "Hello"),
        ("", "!"),
    ]
    assert not splitter.thinking
    assert splitter.finish() == ("", "")


def test_a_false_start_of_the_marker_is_released_as_thought():
    _, reasoning, content = run(["Here is", " my plan", ".\nHere is my response: Go."])
    assert (reasoning, content) == ("Here is my plan.", "Go.")
    splitter = ThoughtSplitter(GENERIC, no_marker="reasoning")
    assert splitter.feed("Here is my re") == ("", "")
    assert splitter.feed("cipe.") == ("Here is my recipe.", "")


def test_two_markers_first_marker_rule_while_streaming_last_marker_rule_when_whole():
    output = "Plan.\nHere is my response: Draft.\nHere is my response: Final."
    assert split_full(output, GENERIC) == ("Plan.\nHere is my response: Draft.", "Final.")
    for deltas in cuttings(output):
        pairs, reasoning, content = run(deltas)
        assert reasoning == "Plan."
        assert content == "Draft.\n Final."  # the later marker is removed, never shown
        assert all(MARK not in c and "Here is my" not in c for _, c in pairs)


def test_no_marker_all_content_holds_the_thought_until_the_end():
    deltas = ["Just", " an answer", " without marker."]
    splitter = ThoughtSplitter(GENERIC, no_marker="content")
    assert [splitter.feed(d) for d in deltas] == [("", "")] * 3
    assert splitter.thinking
    assert splitter.finish() == ("", "Just an answer without marker.")
    assert split_full("".join(deltas), GENERIC, "content") == ("", "Just an answer without marker.")


def test_no_marker_all_reasoning_streams_the_thought_live():
    pairs, _, _ = run(["Just", " thinking", " forever "], no_marker="reasoning")
    assert pairs == [("Just", ""), (" thinking", ""), (" forever", ""), ("", "")]
    assert split_full("Just thinking forever ", GENERIC, "reasoning") == (
        "Just thinking forever",
        "",
    )


def test_held_thought_is_released_as_reasoning_when_the_marker_comes():
    splitter = ThoughtSplitter(GENERIC, no_marker="content")
    assert splitter.feed("A long") == ("", "")
    assert splitter.feed(" thought.\nHere is my response:\nAnswer") == ("A long thought.", "Answer")


def test_leading_thought_marker_written_by_the_model_is_dropped():
    for deltas in cuttings("Here is my thought process: plan\nHere's my response: done"):
        assert run(deltas)[1:] == ("plan", "done")
    assert run(["Here is my thought"], no_marker="reasoning")[1:] == ("Here is my thought", "")


def test_a_marker_prefix_at_the_very_end_of_the_content_is_flushed():
    pairs, _, content = run(["T\nHere is my response: read ", "Here is"])
    assert pairs[-2] == ("", "")  # "Here is" held: it could have become a second marker
    assert pairs[-1] == ("", " Here is")
    assert content == "read Here is"
    _, _, content = run(["x\n<R>\nuse a <", "R"], SPECIFIC)
    assert content == "use a <R"


def test_direct_format_is_all_content():
    _, reasoning, content = run(["  Hello", " Here is my response: x  "], DIRECT)
    assert (reasoning, content) == ("", "Hello Here is my response: x")
    assert split_full("  Hello ", DIRECT) == ("", "Hello")


def test_passthrough_streams_content_as_it_comes_and_no_marker_means_reasoning():
    splitter = ThoughtSplitter(GENERIC, passthrough=True)
    assert splitter.feed("Plan\nHere is my response:") == ("Plan", "")
    assert splitter.feed("\n Hi ") == ("", "Hi ")
    assert splitter.feed("Here") == ("", "Here")  # nothing held back: no finish() will come
    _, reasoning, content = run(["only thought"], passthrough=True)
    assert (reasoning, content) == ("only thought", "")


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="no_marker"):
        ThoughtSplitter(GENERIC, no_marker="drop")
    with pytest.raises(ValueError, match="no_marker"):
        split_full("x", GENERIC, no_marker="drop")
