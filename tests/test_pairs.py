"""Length control and pair selection against hand-computed values."""

import math

import pytest

from tpo.pairs import build_pairs, length_controlled_scores, select_pair, zscores
from tpo.records import Sample, Score


def sample(i, ok=True, response="x", iid="a"):
    output = ("thought\nHere is my response:\n" + response) if ok else "thought only"
    return Sample(
        instruction_id=iid,
        index=i,
        arm="tpo",
        prompt="P",
        output=output,
        thought="thought",
        response=response if ok else "",
        parsed_ok=ok,
        forced=False,
        thought_chars=7,
        response_chars=len(response) if ok else 0,
        output_tokens=5,
    )


def score(i, v, iid="a"):
    return Score(iid, i, "verifier", v, None if v is not None else "parse_failure")


def test_zscores_by_hand():
    # mean 2, population std sqrt(2/3): (1-2)/0.8165 = -1.2247
    assert zscores([1.0, 2.0, 3.0]) == pytest.approx([-1.2247449, 0.0, 1.2247449])
    assert zscores([4.0, 4.0, 4.0]) == [0.0, 0.0, 0.0]


def test_length_control_by_hand():
    # scores [1, 0.5, 0]: z = [1.2247, 0, -1.2247]
    # lengths [300, 100, 200]: z = [1.2247, -1.2247, 0]
    # rho = 0.5: s = [1.2247 - 0.6124, 0 + 0.6124, -1.2247 - 0] = [0.6124, 0.6124, -1.2247]
    s = length_controlled_scores([1.0, 0.5, 0.0], [300, 100, 200], rho=0.5)
    z = math.sqrt(1.5)
    assert s == pytest.approx([z - 0.5 * z, 0.5 * z, -z])
    # rho = 0 leaves the normalised scores alone
    assert length_controlled_scores([1.0, 0.5, 0.0], [300, 100, 200], 0) == pytest.approx(
        [z, 0, -z]
    )


def test_length_control_flips_the_choice_between_equal_scores():
    samples = [sample(0, response="long " * 20), sample(1, response="short")]
    scores = {0: score(0, 1.0), 1: score(1, 1.0)}
    # equal scores tie: no pair even though lengths differ
    pair, reason = select_pair(samples, scores, rho=0.5)
    assert pair is None and reason == "all_tied"
    samples.append(sample(2, response="mid length"))
    scores[2] = score(2, 0.0)
    pair, _ = select_pair(samples, scores, rho=0.5)
    assert pair is not None
    assert pair.chosen_index == 1  # the shorter of the two best wins once rho > 0
    assert pair.rejected_index == 2
    pair0, _ = select_pair(samples, scores, rho=0.0)
    assert pair0 is not None and pair0.chosen_index == 0  # without control: first best index


def test_parse_failures_are_rejected_and_never_chosen():
    samples = [sample(0, ok=False), sample(1), sample(2)]
    scores = {0: score(0, None), 1: score(1, 0.5), 2: score(2, 0.5)}
    pair, reason = select_pair(samples, scores, rho=0.0)
    assert reason == "parse_failure"
    assert pair is not None and pair.rejected_index == 0 and pair.chosen_index == 1
    assert pair.rejected == "thought only" and pair.rejected_score is None
    # the pair keeps full outputs (thought + response) and the prompt
    assert pair.chosen.startswith("thought\nHere is my response:") and pair.prompt == "P"


def test_all_failed_gives_no_pair_and_stats_count_each_reason():
    samples = [
        sample(0, ok=False, iid="a"),
        sample(1, ok=False, iid="a"),
        sample(0, iid="b"),
        sample(1, iid="b"),
        sample(0, iid="c"),
        sample(1, iid="c"),
    ]
    scores = [
        score(0, None, "a"),
        score(1, None, "a"),
        score(0, 0.5, "b"),
        score(1, 0.5, "b"),
        score(0, 1.0, "c"),
        score(1, 0.0, "c"),
    ]
    pairs, stats = build_pairs(samples, scores, rho=0.1)
    assert [p.instruction_id for p in pairs] == ["c"]
    assert (stats.prompts, stats.pairs, stats.all_failed, stats.all_tied) == (3, 1, 1, 1)
    assert pairs[0].chosen_score == 1.0 and pairs[0].rejected_score == 0.0


def test_forced_penalty_ranks_forced_below_natural_of_equal_score():
    """All three score 0.5; 0 and 2 were forced. Without a penalty the prompt is all tied.
    With 0.1: ranked [0.4, 0.5, 0.4], rho 0 -> chosen 1 (natural), rejected 0 (first lowest);
    the pair keeps the judge's scores. A real gap still wins: forced 1.0 against natural 0.5
    ranks 0.9 against 0.5."""
    import dataclasses

    def forced(s):
        return dataclasses.replace(s, forced=True)

    samples = [forced(sample(0)), sample(1), forced(sample(2))]
    scores = {i: score(i, 0.5) for i in range(3)}
    assert select_pair(samples, scores, rho=0.0) == (None, "all_tied")
    pair, reason = select_pair(samples, scores, rho=0.0, forced_penalty=0.1)
    assert reason == "score" and pair is not None
    assert (pair.chosen_index, pair.rejected_index) == (1, 0)
    assert (pair.chosen_score, pair.rejected_score) == (0.5, 0.5)
    gap = [forced(sample(0)), sample(1)]
    pair, _ = select_pair(gap, {0: score(0, 1.0), 1: score(1, 0.5)}, 0.0, forced_penalty=0.1)
    assert pair is not None and (pair.chosen_index, pair.rejected_index) == (0, 1)
