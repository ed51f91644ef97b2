"""Budget forcing over a scripted generator, and the transformers backend on a tiny model.

`Scripted` is a real Generator (it implements the protocol) whose continuations are fixed, so
the forcing logic can be checked case by case; `ScriptedStream` streams the same continuations,
so the batched and streamed drivers can be held to one rule. The HF tests use a real random
model.
"""

from collections.abc import Sequence

import pytest

from tpo.config import PromptConfig
from tpo.generate import Completion, Delta, SamplingParams
from tpo.generate.forcing import Budget, generate_forced, stream_forced
from tpo.generate.hf import HFGenerator
from tpo.thoughts import DIRECT, build_prompt, thought_format

FMT = thought_format("tpo", PromptConfig())
MARK = "Here is my response:"


def forced(gen, prompts, budget, *, cap, seed=0, fmt=FMT):
    params = SamplingParams(0.8, 0.95, cap)
    return generate_forced(gen, prompts, params=params, fmt=fmt, budget=budget, seed=seed)


class Scripted:
    def __init__(self, first, second):
        self.answers = [list(first), list(second)]
        self.calls: list[tuple[list[str], SamplingParams]] = []

    def generate(self, prompts, params, seed):
        self.calls.append((list(prompts), params))
        return self.answers[len(self.calls) - 1][: len(prompts)]


def test_forcing_appends_the_marker_only_where_the_model_did_not_write_it():
    first = [
        Completion(f"natural end\n{MARK}\nDone.", finished=True, num_tokens=8),  # complete
        Completion(f"natural\n{MARK}\nhalf", finished=False, num_tokens=10),  # cut by the budget
        Completion("still thinking about", finished=False, num_tokens=10),  # no marker: force
        Completion("answered without marker", finished=True, num_tokens=4),  # no marker: force
    ]
    second = [
        Completion(" rest", True, 2),
        Completion("Forced answer.", True, 3),
        Completion("Again.", True, 2),
    ]
    gen = Scripted(first, second)
    outs = forced(gen, ["p0", "p1", "p2", "p3"], Budget(10, 20), cap=30, seed=1)
    assert [o.forced for o in outs] == [False, False, True, True]
    assert outs[0].output == f"natural end\n{MARK}\nDone." and outs[0].num_tokens == 8
    assert outs[1].output == f"natural\n{MARK}\nhalf rest" and outs[1].num_tokens == 12
    assert outs[2].output == f"still thinking about\n{MARK}\nForced answer."
    assert outs[3].output == f"answered without marker\n{MARK}\nAgain."
    (_, params1), (p2, params2) = gen.calls
    assert params1.max_new_tokens == 10 and params2.max_new_tokens == 20
    assert p2 == [
        f"p1natural\n{MARK}\nhalf",
        f"p2still thinking about\n{MARK}\n",
        f"p3answered without marker\n{MARK}\n",
    ]


def test_no_budget_means_one_call_and_no_forcing():
    gen = Scripted([Completion("no marker", True, 3)], [])
    outs = forced(gen, ["p"], Budget(None, 20), cap=50)
    assert len(gen.calls) == 1 and gen.calls[0][1].max_new_tokens == 50
    assert outs[0].output == "no marker" and not outs[0].forced


def test_direct_arm_is_never_forced():
    gen = Scripted([Completion("plain answer", True, 3)], [])
    outs = forced(gen, ["p"], Budget(10, 20), cap=50, fmt=DIRECT)
    assert not outs[0].forced and gen.calls[0][1].max_new_tokens == 50


def test_prompt_prefills_the_thought_marker_through_the_chat_template(tiny):
    _, tok = tiny
    text = build_prompt(tok, FMT, "Name a colour.")
    assert text.endswith("<|im_start|>assistant\nHere is my thought process:\n")
    assert "Query: Name a colour." in text
    assert build_prompt(tok, DIRECT, "Name a colour.").endswith("<|im_start|>assistant\n")


def test_hf_generator_is_seeded_and_respects_limits(tiny):
    model, tok = tiny
    gen = HFGenerator(model, tok, batch_size=2, progress=False)
    prompts = [build_prompt(tok, DIRECT, t) for t in ("Hi", "A much longer prompt here", "Yo")]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=6)
    a = gen.generate(prompts, params, seed=3)
    b = gen.generate(prompts, params, seed=3)
    c = gen.generate(prompts, params, seed=4)
    assert a == b and a != c
    assert all(1 <= x.num_tokens <= 6 for x in a)
    greedy = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=6)
    assert gen.generate(prompts, greedy, 1) == gen.generate(prompts, greedy, 2)


def test_forcing_on_a_real_model_marks_forced_outputs(tiny):
    model, tok = tiny
    gen = HFGenerator(model, tok, batch_size=4, progress=False)
    prompts = [build_prompt(tok, FMT, "Say hi.")] * 3
    outs = generate_forced(
        gen, prompts, params=SamplingParams(1.0, 1.0, 10), fmt=FMT, budget=Budget(5, 5), seed=0
    )
    for o in outs:  # a random model never writes the marker, so every output is forced
        assert o.forced and MARK in o.output and 6 <= o.num_tokens <= 10


def test_forced_thought_is_cut_back_to_its_last_finished_sentence():
    first = [Completion("Plan the answer carefully.\nThen write it in lowerc", False, 10)]
    gen = Scripted(first, [Completion("ok", True, 1)])
    outs = forced(gen, ["p"], Budget(10, 5), cap=15)
    assert outs[0].output == f"Plan the answer carefully.\n{MARK}\nok"
    assert gen.calls[1][0] == [f"pPlan the answer carefully.\n{MARK}\n"]


class ScriptedStream:
    """A StreamingGenerator over fixed continuations: call k streams `texts[k]` word by word,
    one token a word, stopping at `max_new_tokens` (EOS after the last word when `eos[k]`)."""

    def __init__(self, texts: Sequence[str], eos: Sequence[bool]):
        self.texts, self.eos = list(texts), list(eos)
        self.prompts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, prompt, params, seed):
        k = len(self.prompts)
        self.prompts.append(prompt)
        words = self.texts[k].split(" ")
        for i, word in enumerate(words[: params.max_new_tokens]):
            last = i == len(words) - 1
            yield Delta(word if i == 0 else " " + word, 1, eos=last and self.eos[k])


@pytest.mark.parametrize(
    ("first", "first_eos", "budget", "cap"),
    [
        ("thinking about a poem. And then some more", False, Budget(4, 6), 10),  # forced, trimmed
        (f"short plan {MARK} the answer", True, Budget(10, 6), 16),  # natural, complete
        (f"plan {MARK} half of it", False, Budget(4, 6), 10),  # natural, cut by the budget
        ("no marker but ends", True, Budget(8, 6), 14),  # ended early without marker: forced
        ("a b c d e f", False, Budget(6, None), 6),  # no room left after the thought
    ],
)
def test_batched_and_streamed_forcing_follow_one_rule(first, first_eos, budget, cap):
    """`generate_forced` and `stream_forced` (what `tpo serve` uses) make the same output,
    forced flag, token count and second-phase prompt from the same continuations."""
    second = "Here is the answer text"
    stream = ScriptedStream([first, second], [first_eos, True])
    params = SamplingParams(0.8, 0.95, cap)
    steps = list(stream_forced(stream, "P:", params=params, fmt=FMT, budget=budget, seed=1))
    streamed = "".join(text for text, _, _ in steps)

    words = first.split(" ")[: budget.thought_tokens]
    head = " ".join(words)
    used = len(words)
    finished = first_eos and len(first.split(" ")) <= (budget.thought_tokens or 0)
    batch = Scripted(
        [Completion(head, finished, used)],
        [Completion(" ".join(second.split(" ")[: cap - used]), True, min(5, cap - used))],
    )
    (made,) = forced(batch, ["P:"], budget, cap=cap, seed=1)
    assert streamed == made.output
    assert sum(tokens for _, tokens, _ in steps) == made.num_tokens
    assert [p for p, _ in batch.calls[1:]] == [[q] for q in stream.prompts[1:]]
    assert (MARK in streamed) == (MARK in made.output)


def test_sampling_plans_cap_tokens_as_the_config_says():
    """A forced output may take thought_budget + response_max_tokens; an output that is never
    forced (the direct arm, or forcing off) max_new_tokens. Eval plans sample one output per
    instruction at the eval settings, with the same caps."""
    from tpo.config import load_config
    from tpo.generate.stage import SamplingPlan

    cfg = load_config(
        preset="tiny",
        overrides=[
            "generation.max_new_tokens=50",
            "generation.thought_budget=7",
            "generation.response_max_tokens=11",
            "eval.temperature=0",
        ],
    )
    tpo, direct = (SamplingPlan.training(cfg, arm, 1) for arm in ("tpo", "direct"))
    assert tpo.params.max_new_tokens == 18 and tpo.budget == Budget(7, 11)
    assert direct.params.max_new_tokens == 50 and direct.num_samples == 4
    heldout = SamplingPlan.evaluation(cfg, "direct", 0, "eval")
    assert (heldout.params.max_new_tokens, heldout.params.temperature) == (50, 0.0)
    assert heldout.num_samples == 1 and heldout.seed_parts == (0, "eval", "direct", 0)
    off = load_config(preset="tiny", overrides=["generation.thought_budget=null"])
    assert SamplingPlan.training(off, "tpo", 1).params.max_new_tokens == 8  # max_new_tokens
