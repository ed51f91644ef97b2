"""Stand-ins for what the evaluation tests do not need to run: models (a `GeneratorSource`
whose outputs are written by the test) and a pairwise LLM judge's backend with scripted
verdicts. The stages, files, judges' parsing and comparisons under them are the real ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tpo.generate import Completion, SamplingParams


class NoModels:
    def generator(self, path: str, batch_size: int):
        raise AssertionError("no model should be needed here")

    dtype = None  # the engine picks its own (GeneratorSource.dtype)

    def release(self) -> None:
        pass


class FakeTokenizer:
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return f"<user>{messages[-1]['content']}</user><assistant>"


class FakeGenerator:
    def __init__(self, text: str):
        self.text = text
        self.prompts: list[str] = []

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seed: int
    ) -> list[Completion]:
        self.prompts += list(prompts)
        return [Completion(self.text, True, 4) for _ in prompts]


class FakeModels:
    def __init__(self, text: str):
        self.gen = FakeGenerator(text)
        self.paths: list[str] = []

    def generator(self, path: str, batch_size: int):
        self.paths.append(path)
        return self.gen, FakeTokenizer()

    dtype = None  # the engine picks its own (GeneratorSource.dtype)

    def release(self) -> None:
        pass


Answer = Callable[[str, str, SamplingParams, int], str]  # (model path, prompt, params, seed)


class ScriptedModels:
    """Models whose output is `answer(path, prompt, params, seed)`; every call is recorded as
    (path, prompt, params, seed), and `released` counts release() calls."""

    def __init__(self, answer: Answer):
        self.answer = answer
        self.calls: list[tuple[str, str, SamplingParams, int]] = []
        self.released = 0
        self.loaded: str | None = None

    def generator(self, path: str, batch_size: int):
        self.loaded = path
        return self, FakeTokenizer()

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seed: int
    ) -> list[Completion]:
        assert self.loaded is not None
        out = []
        for prompt in prompts:
            self.calls.append((self.loaded, prompt, params, seed))
            out.append(Completion(self.answer(self.loaded, prompt, params, seed), True, 4))
        return out

    dtype = None  # the engine picks its own (GeneratorSource.dtype)

    def release(self) -> None:
        self.released += 1
        self.loaded = None


class ScriptedVerdicts:
    """A pairwise LLM backend whose verdict is `decide(response_a, response_b)`."""

    chunk_size = 64

    def __init__(self, identity: str, decide) -> None:
        self.identity, self.decide, self.calls = identity, decide, 0

    def complete(self, conversations):
        from tpo.judge.backends import Reply

        replies = []
        for messages in conversations:
            self.calls += 1
            text = messages[-1]["content"]
            a = text.split("[Response A]\n", 1)[1].split("\n\n[Response B]", 1)[0]
            b = text.split("[Response B]\n", 1)[1].split("\n\nFirst explain", 1)[0]
            replies.append(Reply(f"Reasons.\nVerdict: {self.decide(a, b)}"))
        return replies


def write_verified_eval(run, arm: str, t: int, heldout, outputs, fmt, baseline=None):
    """An eval stage's files for `arm` at iteration `t` as the real stage writes them: the
    given held-out `outputs` parsed with `fmt`, scored by the real verifier, eval.json with
    the real metrics (win rates against `baseline`, a score map), marked done; returns the
    scores."""
    from tpo.eval.metrics import eval_metrics
    from tpo.generate.forcing import Generated
    from tpo.generate.stage import make_sample
    from tpo.judge import JudgeItem
    from tpo.judge.verifier import VerifierJudge
    from tpo.records import Score
    from tpo.store import write_json, write_jsonl

    samples = [
        make_sample(ins.id, 0, "prompt", Generated(out, False, 3), arm=arm, fmt=fmt)
        for ins, out in zip(heldout, outputs, strict=True)
    ]
    values = VerifierJudge().score(
        [JudgeItem(i, s.response) for i, s in zip(heldout, samples, strict=True)]
    )
    scores = [
        Score(s.instruction_id, 0, "verifier", v if s.parsed_ok else None)
        for s, v in zip(samples, values, strict=True)
    ]
    d = run.iter_dir(arm, t)
    write_jsonl(d / "eval_samples.jsonl", (s.to_dict() for s in samples))
    write_jsonl(d / "eval_scores.jsonl", (s.to_dict() for s in scores))
    metrics = eval_metrics(samples, scores, baseline)
    write_json(d / "eval.json", {"arm": arm, "iteration": t, **metrics})
    run.mark_done("eval", arm, t)
    return scores
