"""The vLLM backend (`generate/vllm.py`): the argument mapping against the real installed vLLM
classes, the engine against a stand-in, and the real engine where a GPU is.

vLLM's engine needs a CUDA GPU, which the test machines do not have, so `StandInLLM` stands in
for `vllm.LLM`: it takes what the backend sends a real engine (token-id prompts, the real
`vllm.SamplingParams` the backend built) and answers with real `vllm.CompletionOutput`s, each
sample's tokens scripted from its seed (the request's seed + j for sample j, as vLLM seeds n
samples). Where a request has a thinking token budget, vLLM's own forcing code decides its
tokens: the Triton kernels of Model Runner V2 (vLLM 0.33's default), run on CPU by Triton's
interpreter. What the stand-in cannot show (vLLM's model, scheduler and batching, sleep mode
and weight reloading on a GPU) is left to `test_real_engine_on_a_gpu`, skipped without one.

Everything but the first two tests needs vLLM; in the main venv those skip (vLLM is installed
in an environment of its own: `make test-vllm`, which CI runs).
"""

from __future__ import annotations

import importlib.util
import random
from types import SimpleNamespace
from typing import Any

import pytest

from tpo.config import GenerationConfig, LLMJudgeConfig, PromptConfig, VLLMConfig, load_config
from tpo.generate import SamplingParams
from tpo.generate.forcing import Budget, generate_forced
from tpo.generate.pool import Generators
from tpo.records import Instruction
from tpo.seeds import derive_seed
from tpo.thoughts import build_prompt, thought_format

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAVE_VLLM,
    reason="vLLM is not installed in this environment (make test-vllm runs these in its venv)",
)
FMT = thought_format("tpo", PromptConfig())
MARK = "Here is my response:"
END = "\n" + MARK + "\n"  # what forcing appends


def test_config_takes_the_vllm_backend_and_its_settings():
    cfg = load_config(
        preset="tiny",
        overrides=["generation.backend=vllm", "generation.vllm.gpu_memory_utilization=0.5"],
    )
    assert cfg.generation.backend == "vllm" and cfg.generation.vllm.gpu_memory_utilization == 0.5
    with pytest.raises(ValueError, match=r"generation.backend: hf \| vllm"):
        load_config(preset="tiny", overrides=["generation.backend=sglang"])
    with pytest.raises(ValueError, match=r"generation.vllm.forcing: two_phase \| thinking_budget"):
        load_config(preset="tiny", overrides=["generation.vllm.forcing=vllm"])


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed here")
def test_without_vllm_the_backend_is_a_one_line_error(tmp_path, capsys):
    from tpo.cli import main

    code = main(
        ["run", "--preset", "tiny", "--set", "generation.backend=vllm", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (
        "tpo: error: generation.backend vllm needs vLLM: pip install 'tpo[vllm]' "
        "(a CUDA build of vLLM with its own torch, ~9 GB)"
    )


# --- the stand-in engine -----------------------------------------------------------------


class StandInLLM:
    """Stands in for `vllm.LLM` (see the module doc). `script(prompt_ids, seed)` gives a
    sample's tokens; past its end the sample stops with EOS."""

    def __init__(self, tokenizer: Any, script: Any, forcing: Any = None, **kwargs: Any):
        self.tokenizer = tokenizer
        self.script = script
        self.forcing = forcing  # vLLM's thinking-budget forcing (`V2Forcing`), if any
        self.kwargs = kwargs  # what the backend started the engine with
        self.calls: list[list[tuple[list[int], Any]]] = []
        self.events: list[tuple[Any, ...]] = []
        self.forced: list[bool] = []  # per sample: whether vLLM's forcing chose a token
        self.llm_engine = SimpleNamespace(
            engine_core=SimpleNamespace(shutdown=lambda: self.events.append(("shutdown",)))
        )

    def generate(self, prompts: Any, sampling_params: Any, use_tqdm: bool = True) -> list[Any]:
        from vllm import SamplingParams as VLLMSamplingParams

        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        assert all(isinstance(sp, VLLMSamplingParams) for sp in sampling_params)
        pairs = list(zip(prompts, sampling_params, strict=True))
        self.calls.append([(p["prompt_token_ids"], sp) for p, sp in pairs])
        return [
            SimpleNamespace(
                outputs=[self._sample(p["prompt_token_ids"], sp, j) for j in range(sp.n)]
            )
            for p, sp in pairs
        ]

    def _sample(self, prompt_ids: list[int], sp: Any, j: int) -> Any:
        import torch
        from vllm.outputs import CompletionOutput

        eos = self.tokenizer.eos_token_id
        # greedy depends on the prompt only; sampling on the seed (vLLM: sample j, seed + j)
        script = self.script(prompt_ids, sp.seed + j if sp.temperature > 0 else sum(prompt_ids))
        budget = sp.thinking_token_budget
        assert budget is None or self.forcing is not None, "vLLM refuses a budget without one"
        out: list[int] = []
        forced = False
        for step in range(sp.max_tokens):
            logits = torch.zeros(1, len(self.tokenizer))
            logits[0, script[step] if step < len(script) else eos] = 10.0
            if budget is not None:
                forced |= self.forcing(logits, prompt_ids + out, budget, fresh=step == 0)
            out.append(int(logits.argmax()))
            if out[-1] == eos:
                break
        self.forced.append(forced)
        return CompletionOutput(
            index=j,
            text=self.tokenizer.decode(out, skip_special_tokens=True),
            token_ids=out,
            cumulative_logprob=None,
            logprobs=None,
            finish_reason="stop" if out[-1] == eos else "length",
        )

    def sleep(self, level: int = 1) -> None:
        self.events.append(("sleep", level))

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.events.append(("wake_up", tags))

    def collective_rpc(self, method: str, kwargs: dict[str, Any] | None = None) -> list[Any]:
        self.events.append(("rpc", method, kwargs))
        return [None]

    def reset_prefix_cache(self) -> bool:
        self.events.append(("reset_prefix_cache",))
        return True


def words(tokenizer: Any, seed: int, n: int = 40) -> list[int]:
    """A seeded script of plain words (no marker, no EOS)."""
    rng = random.Random(seed)
    text = " ".join(
        rng.choice(["plan", "think", "the", "user", "wants", "a", "poem."]) for _ in range(n)
    )
    return tokenizer(" " + text, add_special_tokens=False)["input_ids"]


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch, tiny: Any) -> list[StandInLLM]:
    """Every `vllm.LLM` the backend starts is a stand-in (word scripts); the list holds them."""
    from tpo.generate import vllm as backend

    started: list[StandInLLM] = []

    def start(**kwargs: Any) -> StandInLLM:
        llm = StandInLLM(tiny[1], lambda ids, seed: words(tiny[1], seed), **kwargs)
        started.append(llm)
        return llm

    monkeypatch.setattr(backend, "start_llm", start)
    monkeypatch.setattr(backend.Engine, "open", [])
    return started


@pytest.fixture(scope="module")
def model_config(tiny_path: str) -> Any:
    """vLLM's ModelConfig of the tiny model (builds on CPU; the engine itself does not)."""
    pytest.importorskip("vllm", reason="vLLM is not installed in this environment")
    from vllm.config import ModelConfig

    return ModelConfig(model=tiny_path)


def checkpoint(tiny_path: str, where: Any) -> str:
    """Another model directory (the tiny model's files): what a trained iteration leaves."""
    where.symlink_to(tiny_path, target_is_directory=True)
    return str(where)


def vllm_config(path: str, *more: str) -> Any:
    return load_config(
        preset="tiny",
        overrides=[f"model.name_or_path={path}", "generation.backend=vllm", "seed=3", *more],
    )


# --- the argument mapping, against the real vLLM classes ---------------------------------


@needs_vllm
def test_sampling_params_are_vllms_own():
    import vllm

    from tpo.generate.vllm import sampling_params

    sp = sampling_params(SamplingParams(0.8, 0.95, 48), n=8, seed=11, thinking_budget=20)
    assert isinstance(sp, vllm.SamplingParams)
    assert (sp.n, sp.temperature, sp.top_p, sp.max_tokens, sp.seed) == (8, 0.8, 0.95, 48, 11)
    assert sp.thinking_token_budget == 20 and sp.skip_special_tokens
    greedy = sampling_params(SamplingParams(0.0, 0.9, 16), n=1, seed=0)
    assert (greedy.temperature, greedy.top_p, greedy.thinking_token_budget) == (0.0, 1.0, None)
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError, match="n must be 1 when using greedy"):  # so n = 1
        sampling_params(SamplingParams(0.0, 1.0, 16), n=2, seed=0)


@needs_vllm
def test_engine_arguments_are_vllm_engine_args(tiny_path: str):
    from vllm import EngineArgs
    from vllm.config import ReasoningConfig

    from tpo.generate.vllm import EngineSettings, engine_kwargs, reasoning_strings

    settings = EngineSettings(
        dtype="bfloat16",
        seed=7,
        trust_remote_code=False,
        vllm=VLLMConfig(tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=512),
        reasoning=reasoning_strings(FMT),
    )
    args = EngineArgs(**engine_kwargs(tiny_path, settings))  # refuses unknown names
    assert (args.model, args.dtype, args.seed, args.tensor_parallel_size) == (
        tiny_path,
        "bfloat16",
        7,
        2,
    )
    assert (args.gpu_memory_utilization, args.max_model_len, args.enable_sleep_mode) == (
        0.5,
        512,
        False,
    )
    rc = args.reasoning_config
    assert isinstance(rc, ReasoningConfig)
    assert (rc.reasoning_start_str, rc.reasoning_end_str) == ("Here is my thought process:", END)
    plain = EngineArgs(
        **engine_kwargs(tiny_path, EngineSettings("float32", 0, False, VLLMConfig()))
    )
    assert args.load_format == "safetensors" and plain.load_format == "safetensors"
    pickled = EngineSettings("float32", 0, False, VLLMConfig(), allow_pickle=True)
    assert EngineArgs(**engine_kwargs(tiny_path, pickled)).load_format == "auto"
    assert plain.max_model_len is None and "reasoning_config" not in engine_kwargs(
        tiny_path, EngineSettings("float32", 0, False, VLLMConfig())
    )
    assert reasoning_strings(thought_format("tpo", PromptConfig(thought_prompt="specific"))) is None


@needs_vllm
def test_vllm_tokenizes_our_markers_as_the_backend_counts_them(model_config: Any, tiny: Any):
    """The reasoning config vLLM builds from our strings has the token ids the backend uses to
    count the prompt's thought tokens and to tell forced outputs."""
    from vllm.config import ReasoningConfig

    from tpo.generate.vllm import BudgetedVLLMGenerator, reasoning_strings

    start, end = reasoning_strings(FMT)  # type: ignore[misc]
    rc = ReasoningConfig(reasoning_start_str=start, reasoning_end_str=end)
    rc.initialize_token_ids(model_config)
    gen = BudgetedVLLMGenerator(None, tiny[1], (start, end))
    assert rc.enabled
    assert (rc.reasoning_start_token_ids, rc.reasoning_end_token_ids) == (
        gen.start_ids,
        gen.end_ids,
    )
    prompt = gen.token_ids(build_prompt(tiny[1], FMT, "Say hi."))
    assert gen.thought_in_prompt(prompt) == 1  # the "\n" after the prefilled marker
    no_prefill = thought_format("tpo", PromptConfig(prefill_thought_marker=False))
    assert gen.thought_in_prompt(gen.token_ids(build_prompt(tiny[1], no_prefill, "Hi"))) is None


# --- the backend over the stand-in engine -------------------------------------------------


@needs_vllm
def test_k_samples_of_an_instruction_are_one_request(tiny: Any):
    from tpo.generate.vllm import VLLMGenerator

    llm = StandInLLM(tiny[1], lambda ids, seed: words(tiny[1], seed))
    gen = VLLMGenerator(llm, tiny[1])
    a, b = (build_prompt(tiny[1], FMT, t) for t in ("Say hi.", "Name a colour."))
    params = SamplingParams(0.8, 0.95, 6)
    out = gen.generate([a, a, a, b, b, b], params, seed=5)
    ((req_a, sp_a), (_, sp_b)) = llm.calls[0]
    assert req_a == tiny[1](a, add_special_tokens=False)["input_ids"]  # no BOS added twice
    assert (sp_a.n, sp_b.n) == (3, 3)
    assert (sp_a.seed, sp_b.seed) == (derive_seed(5, 0), derive_seed(5, 1))
    # sample j of a request is seeded seed + j: here its words say which seed made it
    assert out[1].text == tiny[1].decode(words(tiny[1], sp_a.seed + 1)[:6])
    assert all(o.num_tokens == 6 and not o.finished for o in out)
    assert (
        out
        == gen.generate([a, a, a, b, b, b], params, seed=5)
        != gen.generate([a] * 3 + [b] * 3, params, seed=6)
    )
    greedy = gen.generate([a, a], SamplingParams(0.0, 1.0, 4), seed=0)
    assert [sp.n for _, sp in llm.calls[-1]] == [1, 1] and greedy[0] == greedy[1]


@needs_vllm
def test_an_output_that_ends_counts_its_eos_token(tiny: Any):
    from tpo.generate.vllm import VLLMGenerator

    tok = tiny[1]
    llm = StandInLLM(
        tok, lambda ids, seed: tok("Hello there", add_special_tokens=False)["input_ids"]
    )
    (done,) = VLLMGenerator(llm, tok).generate(["p"], SamplingParams(0.8, 1.0, 20), 0)
    assert done.finished and done.text == "Hello there" and done.num_tokens == 3  # 2 + EOS


@needs_vllm
def test_sample_outputs_on_vllm_keeps_records_seeds_and_resume(tiny: Any, tmp_path):
    """sample_outputs over the vLLM backend, two-phase forcing: K samples per instruction in
    requests of n (a batch may split an instruction's samples), the same records as with hf,
    and a killed run resumes at the first missing batch and writes the same file."""
    from tpo.generate.stage import SamplingPlan, sample_outputs
    from tpo.generate.vllm import VLLMGenerator

    tok = tiny[1]
    llm = StandInLLM(tok, lambda ids, seed: words(tok, seed))
    gen = VLLMGenerator(llm, tok)
    plan = SamplingPlan(
        arm="tpo",
        fmt=FMT,
        params=SamplingParams(0.8, 0.95, 12),
        budget=Budget(5, 7),
        num_samples=4,
        batch_size=6,
        seed_parts=(0, "generate", "tpo", 1),
        desc="test",
    )
    instructions = [Instruction(f"i{k}", text) for k, text in enumerate(["Hi", "Name one", "Go"])]
    path = tmp_path / "samples.jsonl"
    samples = sample_outputs(path, instructions, plan, generator=gen, tokenizer=tok)
    assert [(s.instruction_id, s.index) for s in samples] == [
        (f"i{k}", j) for k in range(3) for j in range(4)
    ]
    phase1 = [c for c in llm.calls[::2]]  # each batch: phase 1, then phase 2 (the heads)
    assert [[sp.n for _, sp in c] for c in phase1] == [[4, 2], [2, 4]]
    assert [sp.max_tokens for _, sp in phase1[0]] == [5, 5]
    assert all(sp.n == 1 and sp.max_tokens == 7 for _, sp in llm.calls[1])
    assert all(s.forced and s.parsed_ok and MARK in s.output for s in samples)  # words only
    assert all(s.output_tokens == 12 for s in samples)
    full = path.read_text()
    path.write_text("".join(full.splitlines(keepends=True)[:6]))  # killed after batch 0
    again = StandInLLM(tok, lambda ids, seed: words(tok, seed))
    sample_outputs(path, instructions, plan, generator=VLLMGenerator(again, tok), tokenizer=tok)
    assert path.read_text() == full and len(again.calls) == 2  # only batch 1 was generated


# vLLM's forcing kernels, in a process of their own: vLLM, finding no GPU, gives its modules a
# stand-in Triton, and Triton's interpreter must be chosen before Triton is first imported.
FORCING_WORKER = r"""
import json, sys
import torch, triton, triton.language as tl
import vllm.triton_utils
vllm.triton_utils.triton, vllm.triton_utils.tl = triton, tl
from vllm.v1.worker.gpu.sample.thinking_budget import apply_thinking_budget
start, natural_end, end = (torch.tensor(x, dtype=torch.int32) for x in json.loads(sys.argv[1]))
i32 = torch.int32
zero = torch.zeros(1, dtype=i32)
print("ready", flush=True)
for line in sys.stdin:
    tokens, budget, fresh = json.loads(line)
    if fresh:  # a new request: vLLM resets its cached marker positions
        cache = [torch.full((1,), -1, dtype=i32), torch.full((1,), -1, dtype=i32), zero.clone()]
    logits = torch.zeros(1, max(tokens + end.tolist()) + 1)
    apply_thinking_budget(
        logits, zero, zero, torch.tensor([budget], dtype=i32), torch.tensor([tokens], dtype=i32),
        torch.tensor([len(tokens)], dtype=i32), torch.tensor([tokens[-1]], dtype=i32), zero,
        *cache, start, natural_end, end,
    )
    print(int(logits.argmax()) if float(logits.max()) > 1e8 else -1, flush=True)
"""


class V2Forcing:
    """vLLM 0.33's thinking-budget forcing as its default engine runs it: the Triton kernels
    of Model Runner V2 (`apply_thinking_budget`), run on CPU by Triton's interpreter in a
    worker process, one decode step of one request at a time. Called before each token is
    chosen; forces the logits as vLLM does and says whether it did."""

    def __init__(self, config: Any):
        import json
        import os
        import subprocess
        import sys

        ids = [
            config.reasoning_start_token_ids,
            config.natural_reasoning_end_token_ids,
            config.reasoning_end_token_ids,
        ]
        self.worker = subprocess.Popen(
            [sys.executable, "-c", FORCING_WORKER, json.dumps(ids)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ | {"TRITON_INTERPRET": "1"},
        )
        assert self.worker.stdout is not None and self.worker.stdout.readline() == "ready\n"

    def __call__(self, logits: Any, tokens: list[int], budget: int, fresh: bool) -> bool:
        import json

        assert self.worker.stdin is not None and self.worker.stdout is not None
        self.worker.stdin.write(json.dumps([tokens, budget, fresh]) + "\n")
        self.worker.stdin.flush()
        token = int(self.worker.stdout.readline())
        if token >= 0:
            logits[0, token] = 1e9
        return token >= 0

    def close(self) -> None:
        assert self.worker.stdin is not None
        self.worker.stdin.close()
        self.worker.wait(timeout=60)


@pytest.fixture(scope="module")
def vllm_forcing(model_config: Any) -> Any:
    """`V2Forcing` with the reasoning config vLLM builds from our markers (token ids from
    vLLM's own tokenizer)."""
    from vllm.config import ReasoningConfig

    from tpo.generate.vllm import reasoning_strings

    start, end = reasoning_strings(FMT)  # type: ignore[misc]
    rc = ReasoningConfig(reasoning_start_str=start, reasoning_end_str=end)
    rc.initialize_token_ids(model_config)
    forcing = V2Forcing(rc)
    yield forcing
    forcing.close()


def scripts(tok: Any) -> list[tuple[list[int], bool]]:
    """Thoughts as a budget of 10 tokens meets them, each with whether vLLM forces it."""

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    plain = ids(" plan the user wants a poem and then more words here, a long thought")
    assert len(plain) > 12
    return [
        (plain, True),  # no marker
        (ids(" plan") + ids(END) + ids("Hello there friend"), False),  # the marker, early
        (plain[:7] + ids(END) + ids("Hello"), True),  # begun before the budget, ends after
        (plain[:9] + ids("\n") + plain, True),  # a newline (the marker's start) at the budget
        (ids(" plan.") + ids("\nHere's my response:\n") + plain, True),  # an alias
        (ids(" plan. Here is my response: Hello") + plain, True),  # other tokens, same words
        (ids(" short"), False),  # an early stop (EOS), no marker
    ]


@needs_vllm
def test_thinking_budget_forced_flags_agree_with_vllms_forcing(tiny: Any, vllm_forcing: Any):
    """With forcing by vLLM (thinking_token_budget), `forced` is told from the token ids;
    vLLM's own forcing code, run by the stand-in, is the truth it must match."""
    from tpo.generate.vllm import BudgetedVLLMGenerator, reasoning_strings

    tok = tiny[1]
    cases = scripts(tok)
    prompts = [build_prompt(tok, FMT, f"Question {k}") for k in range(len(cases))]
    by_prompt = {
        tuple(tok(p, add_special_tokens=False)["input_ids"]): c
        for p, (c, _) in zip(prompts, cases, strict=True)
    }
    llm = StandInLLM(tok, lambda ids, seed: by_prompt[tuple(ids)], vllm_forcing)
    gen = BudgetedVLLMGenerator(llm, tok, reasoning_strings(FMT))  # type: ignore[arg-type]
    made = generate_forced(
        gen, prompts, params=SamplingParams(0.8, 0.95, 20), fmt=FMT, budget=Budget(10, 10), seed=2
    )
    assert len(llm.calls) == 1  # one pass
    assert all(sp.thinking_token_budget == 10 + 1 for _, sp in llm.calls[0])  # + the prompt's "\n"
    assert llm.forced == [forced for _, forced in cases]  # vLLM's kernels forced these
    assert [m.forced for m in made] == llm.forced
    assert all(END in m.output for m in made if m.forced)
    assert made[1].output.count(END) == 1 and made[4].output.count(MARK) == 1  # + the alias
    assert all(m.num_tokens <= 20 for m in made)


@needs_vllm
def test_thinking_budget_departs_from_tpos_rule_where_the_readme_says(tiny: Any, vllm_forcing: Any):
    """An output that stops before the budget without a marker is not forced under vLLM (a
    parse failure); two-phase forcing appends the marker and continues."""
    from tpo.generate.vllm import BudgetedVLLMGenerator, VLLMGenerator, reasoning_strings

    tok = tiny[1]
    short = tok(" A short thought.", add_special_tokens=False)["input_ids"]
    params, budget = SamplingParams(0.8, 0.95, 16), Budget(8, 8)
    prompt = [build_prompt(tok, FMT, "Hi")]
    llm = StandInLLM(tok, lambda ids, seed: short, vllm_forcing)
    gen = BudgetedVLLMGenerator(llm, tok, reasoning_strings(FMT))  # type: ignore[arg-type]
    (vllm_made,) = generate_forced(gen, prompt, params=params, fmt=FMT, budget=budget, seed=0)
    (two_phase,) = generate_forced(
        VLLMGenerator(StandInLLM(tok, lambda ids, seed: short), tok),
        prompt,
        params=params,
        fmt=FMT,
        budget=budget,
        seed=0,
    )
    assert (vllm_made.output, vllm_made.forced) == (" A short thought.", False)
    assert two_phase.forced and two_phase.output.startswith(" A short thought.\n" + MARK)


@needs_vllm
def test_prompts_without_the_prefilled_marker_are_forced_two_phase(
    tiny: Any, vllm_forcing: Any, capsys
):
    from tpo.generate.vllm import BudgetedVLLMGenerator, reasoning_strings

    tok = tiny[1]
    fmt = thought_format("tpo", PromptConfig(prefill_thought_marker=False))
    llm = StandInLLM(tok, lambda ids, seed: words(tok, seed), vllm_forcing)
    gen = BudgetedVLLMGenerator(llm, tok, reasoning_strings(FMT))  # type: ignore[arg-type]
    made = generate_forced(
        gen,
        [build_prompt(tok, fmt, "Hi")],
        params=SamplingParams(0.8, 0.95, 10),
        fmt=fmt,
        budget=Budget(4, 6),
        seed=0,
    )
    assert len(llm.calls) == 2 and made[0].forced  # two phases
    assert all(sp.thinking_token_budget is None for c in llm.calls for _, sp in c)
    assert "two-phase forcing for them" in capsys.readouterr().err


# --- the engine's life: one per process, reloads, freeing the GPU -------------------------


@needs_vllm
def test_pool_starts_reuses_and_frees_the_engine(
    engines: list[StandInLLM], tiny_path: str, tmp_path, capsys
):
    models = Generators.for_run(vllm_config(tiny_path))
    models.generator(tiny_path, 16)
    assert len(engines) == 1 and models.loaded == tiny_path
    kwargs = engines[0].kwargs
    assert (kwargs["model"], kwargs["seed"], kwargs["dtype"]) == (tiny_path, 3, "float32")
    assert kwargs["load_format"] == "safetensors"  # never vLLM's unpickling fallback
    err = capsys.readouterr().err
    assert f"engine for {tiny_path}: budget forcing two-phase (tpo's rule)" in err
    models.generator(tiny_path, 16)
    assert len(engines) == 1  # the same model: the same engine
    other = checkpoint(tiny_path, tmp_path / "iter_1")
    models.generator(other, 16)  # another model, no sleep mode: a fresh engine
    assert engines[0].events == [("shutdown",)] and engines[1].kwargs["model"] == other
    models.release()  # before training: the engine is shut down
    assert engines[1].events == [("shutdown",)] and models.loaded is None
    models.generator(other, 16)
    assert len(engines) == 3
    models.release()
    Generators.for_run(vllm_config(tiny_path, "model.allow_pickle=true")).generator(tiny_path, 16)
    assert engines[3].kwargs["load_format"] == "auto"  # the setting lets vLLM take .bin


@needs_vllm
def test_sleep_mode_reloads_weights_and_sleeps_for_training(
    engines: list[StandInLLM], tiny_path: str, tmp_path
):
    cfg = load_config(
        preset="tiny",
        overrides=[
            f"model.name_or_path={tiny_path}",
            "generation.backend=vllm",
            "generation.vllm.sleep_mode=true",
        ],
    )
    models = Generators.for_run(cfg)
    models.generator(tiny_path, 16)
    assert engines[0].kwargs["enable_sleep_mode"] is True
    step = checkpoint(tiny_path, tmp_path / "iter_1")
    models.generator(step, 16)  # awake: reload in place, then forget the old prefixes
    assert engines[0].events == [
        ("rpc", "reload_weights", {"weights_path": step}),
        ("reset_prefix_cache",),
    ]
    models.release()  # training needs the GPU: level 2 frees weights and KV cache
    assert engines[0].events[-1] == ("sleep", 2) and models.loaded is None
    nxt = checkpoint(tiny_path, tmp_path / "iter_2")
    models.generator(nxt, 16)
    assert engines[0].events[-4:] == [
        ("wake_up", ["weights"]),
        ("rpc", "reload_weights", {"weights_path": nxt}),
        ("wake_up", ["kv_cache"]),
        ("reset_prefix_cache",),
    ]
    assert len(engines) == 1 and models.loaded == nxt


@needs_vllm
def test_one_engine_per_process_serves_policy_and_local_judge(
    engines: list[StandInLLM], tiny_path: str
):
    """A local LLM judge runs on the same backend: its engine closes the policy's, the policy's
    next request starts a new one, and releasing for training closes the judge's too."""
    from tpo.judge.backends import LocalLLM

    models = Generators.for_run(vllm_config(tiny_path))
    models.generator(tiny_path, 16)
    judge = LocalLLM(
        LLMJudgeConfig(model=tiny_path, max_new_tokens=5, batch_size=4),
        GenerationConfig(backend="vllm"),
    )
    replies = judge.complete([[{"role": "user", "content": "Rate: hi"}]] * 2)
    assert len(engines) == 2 and engines[0].events == [("shutdown",)]
    assert [r.text for r in replies] == [replies[0].text] * 2
    (calls,) = engines[1].calls
    assert [(sp.n, sp.temperature, sp.max_tokens) for _, sp in calls] == [(1, 0.0, 5)] * 2
    assert judge.identity.endswith(":vllm") and engines[1].kwargs["dtype"] == "bfloat16"
    assert models.loaded is None  # the judge's engine took the GPU
    models.generator(tiny_path, 16)
    assert len(engines) == 3 and engines[1].events == [("shutdown",)]
    judge.complete([[{"role": "user", "content": "again"}]])
    models.release()
    assert all(e.events[-1] == ("shutdown",) for e in engines)


@needs_vllm
def test_log_says_how_forcing_is_done(engines: list[StandInLLM], tiny_path: str, capsys):
    import vllm

    cfg = load_config(
        preset="tiny",
        overrides=[
            f"model.name_or_path={tiny_path}",
            "generation.backend=vllm",
            "generation.vllm.forcing=thinking_budget",
        ],
    )
    Generators.for_run(cfg).generator(tiny_path, 16)
    line = f"vLLM {vllm.__version__} engine for {tiny_path}: budget forcing by vLLM's "
    assert line + "thinking_token_budget" in capsys.readouterr().err
    assert engines[0].kwargs["reasoning_config"].reasoning_end_str == END
    specific = load_config(
        preset="tiny",
        overrides=[
            f"model.name_or_path={tiny_path}",
            "generation.backend=vllm",
            "generation.vllm.forcing=thinking_budget",
            "prompt.thought_prompt=specific",
        ],
    )
    models = Generators.for_run(specific)
    models.generator(tiny_path, 16)
    assert "two-phase (the thought prompt prefills no thought marker" in capsys.readouterr().err
    assert "reasoning_config" not in engines[1].kwargs


@needs_vllm
def test_an_engine_that_cannot_start_is_one_line(monkeypatch: pytest.MonkeyPatch, tiny_path: str):
    from tpo.generate import vllm as backend
    from tpo.models import ModelLoadError

    def fail(**kwargs: Any) -> Any:
        raise ValueError("No available memory for the cache blocks.\nTry increasing ...")

    monkeypatch.setattr(backend, "start_llm", fail)
    monkeypatch.setattr(backend.Engine, "open", [])
    with pytest.raises(
        ModelLoadError,
        match=r"^vLLM cannot start model '.*': No available memory for the cache blocks\.$",
    ):
        Generators.for_run(vllm_config(tiny_path)).generator(tiny_path, 16)


@needs_vllm
def test_a_request_vllm_refuses_is_one_line(tiny: Any):
    from vllm.exceptions import VLLMValidationError

    from tpo.config import ConfigError
    from tpo.generate.vllm import VLLMGenerator

    class Refusing(StandInLLM):
        def generate(self, prompts: Any, sampling_params: Any, use_tqdm: bool = True) -> Any:
            raise VLLMValidationError(
                "The decoder prompt (length 900) is longer than the maximum model length of "
                "512. Make sure that `max_model_len` is no smaller than ..."
            )

    gen = VLLMGenerator(Refusing(tiny[1], lambda ids, seed: []), tiny[1])
    with pytest.raises(ConfigError, match=r"^generation.vllm: vLLM refused a request: The decoder"):
        gen.generate(["p"], SamplingParams(0.8, 1.0, 8), 0)
    assert gen.generate([], SamplingParams(0.8, 1.0, 8), 0) == []


# --- the real engine ----------------------------------------------------------------------


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@needs_vllm
@pytest.mark.skipif(not _has_gpu(), reason="the vLLM engine needs a CUDA GPU; none on this machine")
def test_real_engine_on_a_gpu(tiny_path: str, tmp_path):
    """The tiny model on a real vLLM engine: K samples per instruction, both forcing modes,
    and sleep mode's reload and release."""
    from tpo.generate.stage import SamplingPlan, sample_outputs

    for forcing in ("two_phase", "thinking_budget"):
        cfg = load_config(
            preset="tiny",
            overrides=[
                f"model.name_or_path={tiny_path}",
                "generation.backend=vllm",
                f"generation.vllm.forcing={forcing}",
                "generation.vllm.sleep_mode=true",
                "generation.vllm.gpu_memory_utilization=0.3",
            ],
        )
        models = Generators.for_run(cfg)
        gen, tok = models.generator(tiny_path, 16)
        plan = SamplingPlan.training(cfg, "tpo", 1)
        instructions = [Instruction(f"i{k}", f"Say {k}.") for k in range(4)]
        samples = sample_outputs(
            tmp_path / f"{forcing}.jsonl", instructions, plan, generator=gen, tokenizer=tok
        )
        assert len(samples) == 4 * cfg.generation.num_samples
        assert all(s.forced for s in samples)  # a random model never writes the marker
        assert all(s.output_tokens <= plan.params.max_new_tokens for s in samples)
        models.release()
        models.generator(tiny_path, 16)  # wake up, reload
        models.release()
        from tpo.generate.vllm import close_engines

        close_engines()
