"""Parser cases: the response starts after the last response marker; the rest is thought."""

from tpo.config import PromptConfig
from tpo.thoughts import DIRECT, split_output, thought_format

GENERIC = thought_format("tpo", PromptConfig(thought_prompt="generic"))
SPECIFIC = thought_format("tpo", PromptConfig(thought_prompt="specific"))


def test_plain_split():
    p = split_output("Think about cats.\nHere is my response:\nCats purr.", GENERIC)
    assert (p.thought, p.response, p.ok) == ("Think about cats.", "Cats purr.", True)


def test_marker_missing_is_a_failure_with_everything_as_thought():
    p = split_output("Cats purr, I think.", GENERIC)
    assert not p.ok
    assert p.response == ""
    assert p.thought == "Cats purr, I think."


def test_repeated_marker_takes_the_last_one_and_keeps_drafts_in_the_thought():
    out = "Draft.\nHere is my response:\nfirst try\nHmm, better:\nHere is my response:\nfinal"
    p = split_output(out, GENERIC)
    assert p.ok and p.response == "final"
    assert "first try" in p.thought and "Here is my response:" in p.thought


def test_marker_at_the_very_start_gives_an_empty_thought():
    p = split_output("Here is my response: Hello.", GENERIC)
    assert p.ok and p.thought == "" and p.response == "Hello."


def test_marker_at_the_very_end_is_a_failure():
    p = split_output("All thought, no answer.\nHere is my response:\n  ", GENERIC)
    assert not p.ok and p.response == ""
    assert p.thought == "All thought, no answer."


def test_other_prompts_marker_is_not_accepted():
    assert not split_output("thinking <R> answer", GENERIC).ok
    assert not split_output("thinking\nHere is my response: answer", SPECIFIC).ok
    p = split_output("draft, evaluation\n<R>\nanswer", SPECIFIC)
    assert p.ok and p.response == "answer"


def test_heres_variant_is_accepted_for_the_generic_marker():
    p = split_output("plan\nHere's my response: Hi!", GENERIC)
    assert p.ok and p.response == "Hi!"


def test_thought_marker_written_by_the_model_is_removed():
    out = "Here is my thought process: be brief.\nHere is my response: Ok."
    p = split_output(out, GENERIC)
    assert p.thought == "be brief." and p.response == "Ok."


def test_thought_marker_later_in_the_output_stays_in_the_thought():
    out = "Okay. Here is my thought process: X\nHere is my response: Y"
    p = split_output(out, GENERIC)
    assert (p.thought, p.response) == ("Okay. Here is my thought process: X", "Y")
    p = split_output("  Here is my thought process: a\nHere is my thought process: b", GENERIC)
    assert p.thought == "a\nHere is my thought process: b" and not p.ok


def test_direct_outputs_are_all_response():
    p = split_output("  Hello there. Here is my response: x  ", DIRECT)
    assert p.ok and p.thought == "" and p.response == "Hello there. Here is my response: x"
    assert not split_output("   ", DIRECT).ok
