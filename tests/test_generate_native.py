"""The native backend (`generation.backend: native`) against transformers on real models.

Everything here runs the real tiny random Llama (and, where marked slow, the embedded
SmolLM2): the forward against transformers' forward, greedy decoding against `generate`,
budget forcing in one run against the two-phase rule over `HFGenerator`, the sampling
distribution against transformers' own logits warpers, and a whole `tpo run` on the backend.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tpo.config import NativeConfig, PromptConfig
from tpo.generate import SamplingParams
from tpo.generate.batcher import Batcher, PrefixStore, Request
from tpo.generate.forcing import Budget, generate_forced, two_phase
from tpo.generate.hf import HFGenerator
from tpo.generate.llama import KVCache, LlamaModel, check_supported, mkldnn_linear
from tpo.generate.native import NativeGenerator, load_native
from tpo.generate.sampling import candidate_probs, sample
from tpo.models import ModelLoadError
from tpo.thoughts import build_prompt, thought_format

FMT = thought_format("tpo", PromptConfig())
GREEDY = SamplingParams(0.0, 1.0, 12)
INSTRUCTIONS = ["Say hi.", "Write a haiku about rain.", "What is 2 + 2?", "Name a colour."]


def native(model, tok, rows: int = 256) -> NativeGenerator:
    return NativeGenerator(LlamaModel(model, torch.float32), tok, NativeConfig(), rows)


def prompts(tok, fmt=FMT) -> list[str]:
    return [build_prompt(tok, fmt, text) for text in INSTRUCTIONS]


def test_forward_matches_transformers(tiny):
    """Prefill of two rows (one continuing cached positions) and a decode step give
    transformers' logits for the same tokens."""
    model, _ = tiny
    m = LlamaModel(model, torch.float32)
    a, b = [5, 17, 99, 3, 42, 7], [8, 1, 250, 64]
    cache = KVCache(m, 2, 32)
    m.prefill(cache, [0], [0], [a[:2]])
    got = m.prefill(cache, [0, 1], [2, 0], [a[2:], b])
    step = m.decode(cache, torch.tensor([11, 12]), torch.tensor([len(a), len(b)]))
    with torch.no_grad():
        want_a = model(torch.tensor([[*a, 11]])).logits[0]
        want_b = model(torch.tensor([[*b, 12]])).logits[0]
    torch.testing.assert_close(got, torch.stack([want_a[-2], want_b[-2]]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(step, torch.stack([want_a[-1], want_b[-1]]), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(
    not mkldnn_linear(torch.bfloat16), reason="torch or this CPU without oneDNN's bf16 linear"
)
def test_onednn_packed_weights_compute_the_plain_products(tiny):
    """The weights handed to oneDNN in its layout (the default) give the products of the plain
    weights: the same bf16 logits, float32 ones equal to rounding, at a decode step of 3 rows
    and a prefill of 9 tokens."""
    model, _ = tiny
    for dtype, tol in ((torch.bfloat16, 0.0), (torch.float32, 1e-5)):
        packed, plain = LlamaModel(model, dtype), LlamaModel(model, dtype, pack=False)
        assert packed.lm_head.onednn is not None and packed.lm_head.weight.numel() == 0
        assert plain.lm_head.onednn is None
        outs = []
        for m in (packed, plain):
            cache = KVCache(m, 3, 16)
            first = m.prefill(cache, [0, 1, 2], [0, 0, 0], [[5, 17, 99, 3], [8, 1], [2, 4, 6]])
            step = m.decode(cache, torch.tensor([11, 12, 13]), torch.tensor([4, 2, 3]))
            outs.append((first, step))
        for got, want in zip(outs[0], outs[1], strict=True):
            torch.testing.assert_close(got, want, atol=tol, rtol=tol)


def test_greedy_equals_transformers_generate(tiny):
    model, tok = tiny
    ps = prompts(tok)
    want = HFGenerator(model, tok, batch_size=1, progress=False).generate(ps, GREEDY, 0)
    # a batch of 2 rows: sequences wait, join as others end, and share the prompt's head
    assert native(model, tok, rows=2).generate(ps, GREEDY, 0) == want
    assert native(model, tok).generate(ps, GREEDY, 0) == want


@pytest.mark.slow
def test_greedy_equals_transformers_generate_on_the_embedded_model():
    from tpo.models import load_model, load_tokenizer, resolve_model_path

    path = resolve_model_path("embedded")
    model, tok = load_model(path, "float32", "cpu"), load_tokenizer(path)
    ps = prompts(tok)
    params = SamplingParams(0.0, 1.0, 24)
    want = HFGenerator(model, tok, batch_size=1, progress=False).generate(ps, params, 0)
    assert native(model, tok).generate(ps, params, 0) == want


@pytest.fixture(scope="module")
def ends_early(tiny):
    """The tiny model, changed so that greedy decoding ends with EOS after a few tokens:
    the EOS row of the LM head becomes a scaled copy of the row of the token greedy decoding
    of the first prompt writes third."""
    model, tok = tiny
    early = copy.deepcopy(model)
    ids = tok(prompts(tok)[0], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = early.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
        third = int(out[0, -1])
        head = early.lm_head.weight
        head[tok.eos_token_id] = head[third] * 1.5
    return early, tok


@pytest.mark.parametrize(
    ("case", "budget", "cap"),
    [
        ("budget hit: forced", Budget(5, 6), 12),
        ("budget hit, no room left", Budget(6, None), 6),
        ("response tokens cap phase 2", Budget(4, 3), 12),
    ],
)
def test_forcing_follows_the_two_phase_rule(tiny, case, budget, cap):
    """One run with phase 2 continuing phase 1's rows gives what two batched calls over
    `HFGenerator` give from the same greedy tokens: texts, forced flags, token counts."""
    model, tok = tiny
    params = replace(GREEDY, max_new_tokens=cap)
    hf = HFGenerator(model, tok, batch_size=4, progress=False)
    want = two_phase(hf, prompts(tok), params=params, fmt=FMT, budget=budget, seed=3)
    got = generate_forced(
        native(model, tok), prompts(tok), params=params, fmt=FMT, budget=budget, seed=3
    )
    assert got == want, case
    assert any(g.forced for g in got) == (budget.thought_tokens < cap)


def test_forcing_of_a_thought_that_ends_early_or_writes_the_marker(tiny, ends_early):
    """A thought the model ends itself (EOS before the budget), and one where it writes the
    response marker itself (here a marker made of what it greedily writes), are planned as
    the two-phase rule plans them."""
    model, tok = ends_early
    params = replace(GREEDY, max_new_tokens=14)
    budget = Budget(8, 6)
    hf = HFGenerator(model, tok, batch_size=4, progress=False)
    want = two_phase(hf, prompts(tok), params=params, fmt=FMT, budget=budget, seed=0)
    first = hf.generate(prompts(tok)[:1], replace(params, max_new_tokens=8), 0)[0]
    assert first.finished and first.num_tokens < 8  # the thought did end early
    got = native(model, tok).generate_budgeted(
        prompts(tok), params=params, fmt=FMT, budget=budget, seed=0
    )
    assert got == want

    plain, _ = tiny
    words = HFGenerator(plain, tok, batch_size=4, progress=False).generate(
        prompts(tok), replace(params, max_new_tokens=3), 0
    )
    marked = replace(FMT, response_marker=words[0].text)  # non-empty: what it writes first
    assert marked.response_marker and marked.response_marker not in prompts(tok)[0]
    hf_plain = HFGenerator(plain, tok, batch_size=4, progress=False)
    want = two_phase(hf_plain, prompts(tok), params=params, fmt=marked, budget=budget, seed=0)
    got = native(plain, tok).generate_budgeted(
        prompts(tok), params=params, fmt=marked, budget=budget, seed=0
    )
    assert got == want
    assert not got[0].forced and marked.response_marker in got[0].output


def test_no_budget_means_one_plain_call(tiny):
    model, tok = tiny
    gen = native(model, tok)
    got = generate_forced(gen, prompts(tok), params=GREEDY, fmt=FMT, budget=Budget(), seed=0)
    want = gen.generate(prompts(tok), GREEDY, 0)
    assert [(g.output, g.forced, g.num_tokens) for g in got] == [
        (c.text, False, c.num_tokens) for c in want
    ]


def test_sampling_is_deterministic_per_seed(tiny):
    model, tok = tiny
    params = SamplingParams(1.0, 0.95, 10)
    ps = prompts(tok) * 2  # the K samples of one prompt share its prefill, not its draws
    a = native(model, tok).generate(ps, params, 5)
    assert native(model, tok).generate(ps, params, 5) == a
    assert native(model, tok).generate(ps, params, 6) != a
    assert [c.text for c in a[:4]] != [c.text for c in a[4:]]
    forced = generate_forced(
        native(model, tok), ps, params=params, fmt=FMT, budget=Budget(5, 5), seed=5
    )
    again = generate_forced(
        native(model, tok), ps, params=params, fmt=FMT, budget=Budget(5, 5), seed=5
    )
    assert forced == again and all(g.forced for g in forced)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 0.95), (0.7, 0.5), (1.3, 1.0)])
def test_candidate_distribution_is_transformers_top_k_then_top_p(temperature, top_p):
    """The distribution sampled from equals what transformers' warpers (temperature, its
    default top-k 50, top-p) leave of the whole vocabulary, ties included."""
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(6, 500) * 3
    logits[0, :80] = 4.0  # ties with the 50th candidate
    logits[1] = logits[1].round()  # many ties everywhere
    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    scores = TopPLogitsWarper(top_p)(None, TopKLogitsWarper(50)(None, scores))
    want = scores.softmax(-1)
    probs, ids = candidate_probs(logits, torch.full((6,), temperature), torch.full((6,), top_p))
    got = torch.zeros_like(want).scatter_(1, ids, probs)
    torch.testing.assert_close(got, want)


def test_batcher_continues_a_row_with_its_follow_up(tiny):
    """A follow-up request continues the row it follows, from the common prefix, and gives
    what the same ids give as a fresh request."""
    model, _ = tiny
    m = LlamaModel(model, torch.float32)
    first = Request([5, 6, 7, 8], 4)
    follow = {}

    def then(r: Request) -> Request:
        follow["r"] = Request([5, 6, 7, 8, *r.out[:2], 9], 5)
        return follow["r"]

    first.then = then
    Batcher(m, eos_ids=set(), max_rows=4, store=PrefixStore(0)).run([first])
    fresh = Request(list(follow["r"].ids), 5)
    Batcher(m, eos_ids=set(), max_rows=4, store=PrefixStore(0)).run([fresh])
    assert follow["r"].done and follow["r"].out == fresh.out and len(fresh.out) == 5


def test_a_batch_of_greedy_and_sampled_rows_draws_each_as_alone():
    torch.manual_seed(1)
    logits = torch.randn(3, 300) * 2
    temps, tops, keys, steps = [0.0, 0.8, 0.0], [1.0, 0.9, 1.0], [1, 2, 3], [4, 5, 6]
    mixed = sample(logits, temps, tops, keys, steps)
    alone = [
        sample(logits[i : i + 1], [temps[i]], [tops[i]], [keys[i]], [steps[i]])[0] for i in range(3)
    ]
    assert mixed == alone
    assert mixed[0] == int(logits[0].argmax()) and mixed[2] == int(logits[2].argmax())


def test_other_models_and_devices_are_refused_in_one_line(tiny_path):
    config = SimpleNamespace(model_type="gpt2", hidden_act="gelu_new")
    with pytest.raises(ModelLoadError, match="Llama-family models only") as err:
        check_supported(config)
    assert "model_type 'gpt2'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match=r"runs on the CPU, not model\.device 'cuda'"):
        load_native(tiny_path, "float32", "cuda", False)


def _tpo_run(out: Path, *settings: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tpo.cli", "run", "--preset", "tiny", "--out", str(out)]
    return subprocess.run(
        [*cmd, "--set", "generation.backend=native", *settings],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=600,
    )


def test_cli_refuses_native_on_another_device(tmp_path):
    proc = _tpo_run(tmp_path / "run", "model.device=cuda")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("tpo: error: generation.backend")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_tiny_run_on_the_native_backend(tmp_path):
    """The whole loop (generation, forcing, evaluation) on the native backend."""
    out = tmp_path / "run"
    proc = _tpo_run(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = [json.loads(line) for line in (out / "tpo" / "iter_1" / "samples.jsonl").open()]
    assert len(samples) == 8 * 4
    rows = json.loads((out / "results.json").read_text())
    assert {r["arm"] for r in rows} == {"tpo", "direct"}


def test_int8_weights_stay_close_to_float32(tiny):
    """int8 linears (per-row scales) change the logits by rounding only: within 5% of the
    largest float32 logit, and not equal to it (the int8 path did run)."""
    model, _ = tiny
    tokens = [[5, 17, 99, 3, 42, 7, 8, 1, 250, 64]]
    logits = {}
    for int8 in (False, True):
        m = LlamaModel(model, torch.float32, int8=int8)
        cache = KVCache(m, 1, 16)
        logits[int8] = m.prefill(cache, [0], [0], tokens)
    gap = (logits[True] - logits[False]).abs().max() / logits[False].abs().max()
    assert 0 < gap < 0.05


def test_int8_inputs_take_7_bits_where_fbgemm_would_saturate(tmp_path, monkeypatch):
    """On x86 without avx512_vnni (AVX-VNNI alone included: fbgemm has no kernel for it) the
    int8 linears quantize their inputs to 7 bits; with avx512_vnni, or off x86, 8 bits. And on
    this machine, whichever it is, a worst case (all-ones inputs and weights, where 8-bit
    pair sums overflow int16 without VNNI) gives the exact product."""
    import platform

    from tpo.generate.llama import Linear, int8_needs_reduce_range

    flags = "flags\t\t: fpu sse2 avx avx2 fma {}\n"
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    for extra, needed in {"": True, "avx_vnni": True, "avx512f avx512_vnni": False}.items():
        (tmp_path / "cpuinfo").write_text(flags.format(extra))
        assert int8_needs_reduce_range(tmp_path / "cpuinfo") is needed, extra
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    (tmp_path / "cpuinfo").write_text("Features\t: fp asimd\n")
    assert int8_needs_reduce_range(tmp_path / "cpuinfo") is False
    monkeypatch.undo()
    out = Linear(torch.ones(4, 64), torch.float32, int8=True)(torch.ones(1, 64))
    torch.testing.assert_close(out, torch.full((1, 4), 64.0), rtol=0.02, atol=0)
