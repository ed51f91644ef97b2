"""Budget forcing over a scripted generator, and the transformers backend on a tiny model.

`Scripted` is a real Generator (it implements the protocol) whose continuations are fixed, so
the forcing logic can be checked case by case; the HF tests use a real random model.
"""

from tpo.config import PromptConfig
from tpo.generation import Budget, Completion, SamplingParams, generate_outputs
from tpo.generation.hf import HFGenerator
from tpo.prompts import DIRECT, build_prompt, thought_format

FMT = thought_format("tpo", PromptConfig())
MARK = "Here is my response:"


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
    budget = Budget(thought_budget=10, response_max_tokens=20, max_new_tokens=99)
    outs = generate_outputs(gen, ["p0", "p1", "p2", "p3"], FMT, budget, 0.8, 0.95, seed=1)
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
    outs = generate_outputs(gen, ["p"], FMT, Budget(None, 20, 50), 0.8, 0.95, 0)
    assert len(gen.calls) == 1 and gen.calls[0][1].max_new_tokens == 50
    assert outs[0].output == "no marker" and not outs[0].forced


def test_direct_arm_is_never_forced():
    gen = Scripted([Completion("plain answer", True, 3)], [])
    outs = generate_outputs(gen, ["p"], DIRECT, Budget(10, 20, 50), 0.8, 0.95, 0)
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
    outs = generate_outputs(gen, prompts, FMT, Budget(5, 5, 10), 1.0, 1.0, seed=0)
    for o in outs:  # a random model never writes the marker, so every output is forced
        assert o.forced and MARK in o.output and 6 <= o.num_tokens <= 10


def test_forced_thought_is_cut_back_to_its_last_finished_sentence():
    first = [Completion("Plan the answer carefully.\nThen write it in lowerc", False, 10)]
    gen = Scripted(first, [Completion("ok", True, 1)])
    outs = generate_outputs(gen, ["p"], FMT, Budget(10, 5, 50), 0.8, 0.95, seed=0)
    assert outs[0].output == f"Plan the answer carefully.\n{MARK}\nok"
    assert gen.calls[1][0] == [f"pPlan the answer carefully.\n{MARK}\n"]
