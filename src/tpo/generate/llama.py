"""A Llama-family forward pass for batched decoding on CPU: the model part of the native backend.

transformers' forward is written for every model and every device; on this CPU, decoding the
embedded model at batch 128 in bf16 spends most of its time outside the matrix products: its
SDPA call with grouped-query heads (`enable_gqa`) takes ~26 ms a layer where the same
attention written as one product per KV head takes ~5, and its cache grows by concatenation
(`torch.cat`, ~19% of a step). This forward keeps the maths of `LlamaForCausalLM` and changes
how it is laid out:

- q, k, v are one product, gate and up one product (the weights concatenated once);
- the residual stream stays in float32, the products run in the compute dtype (bf16 or fp32),
  RMSNorm in float32 as transformers does;
- the KV cache is one preallocated tensor per K and V (`KVCache`, rows x positions), written
  in place; a decode step attends to each row's own length through one additive mask;
- grouped-query attention multiplies the query heads of one KV head together
  (`[rows, kv_heads, group, head_dim]`), so the keys are never expanded to all heads;
- rotary tables come from transformers' own rotary module (every static rope type it knows).

Only the architectures tested against transformers are accepted (`check_supported`): Llama
(`model_type` llama, no biases, SiLU, static rope), which SmolLM2 is; anything else is refused
in one line, and the hf backend stays the choice for it. `tests/test_generate_native.py`
compares the logits with transformers' forward on the tiny and the embedded model.
"""

from __future__ import annotations

import functools
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tpo.models import CPUINFO, ModelLoadError, cpu_has

STATIC_ROPE = ("default", "linear", "llama3")


def check_supported(config: Any) -> None:
    """Refuse, in one line, a model this forward was not written and tested for."""
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    problems = [
        (config.model_type != "llama", f"model_type {config.model_type!r} (llama only)"),
        (bool(getattr(config, "attention_bias", False)), "attention biases"),
        (bool(getattr(config, "mlp_bias", False)), "MLP biases"),
        (getattr(config, "hidden_act", "silu") != "silu", f"activation {config.hidden_act!r}"),
        (getattr(config, "pretraining_tp", 1) != 1, "pretraining_tp != 1"),
        (rope not in STATIC_ROPE, f"rope type {rope!r} ({', '.join(STATIC_ROPE)} only)"),
    ]
    found = [what for bad, what in problems if bad]
    if found:
        raise ModelLoadError(
            f"generation.backend native runs Llama-family models only; this one has "
            f"{', '.join(found)}: use generation.backend hf"
        )


def mkldnn_linear(dtype: torch.dtype) -> bool:
    """Whether torch has oneDNN's prepacked linear (what inductor's freezing pass uses) and
    this CPU runs it in `dtype` (bf16 needs avx512bw/vl/dq or avx_ne_convert)."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
        and (dtype != torch.bfloat16 or bool(ops._is_mkldnn_bf16_supported()))
    )


PACK_HINT = 256  # rows oneDNN lays the packed weights out for; every row count still works


def int8_needs_reduce_range(cpuinfo: Path = CPUINFO) -> bool:
    """Whether int8 linears must quantize their inputs to 7 bits (`reduce_range`, as torch's
    own dynamic quantization always does): on an x86 CPU without avx512_vnni, fbgemm sums
    pairs of u8 x s8 products in int16, which saturates (AVX-VNNI alone does not help: fbgemm
    has no kernel for it). On an AVX2-only EPYC the tiny model's int8 logits were 35% of the
    largest logit off with 8-bit inputs and 2.4% with 7-bit ones. Other CPUs (ARM: qnnpack)
    keep 8 bits."""
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    return x86 and not cpu_has(("avx512_vnni",), cpuinfo)


_reduce_range = functools.cache(int8_needs_reduce_range)


class Linear:
    """A weight applied as `x @ weight.T`: dense in the compute dtype, or (`int8`) int8
    with one scale per output row, the input quantized per call (torch's dynamic quantized
    linear, fbgemm; float32 in and out). int8 is what llama.cpp runs on CPUs for the same
    reason: decode-shaped products are faster in it here (README, "Speed").

    Dense weights are handed to oneDNN once in its own blocked layout (`packed`, torch's
    `mkldnn._reorder_linear_weight`, as inductor's freezing does) when torch and the CPU run
    it in the compute dtype: generation ran 1.30-1.34x faster in bf16 (the same results) and
    1.43-1.67x in float32 than with `F.linear` on the plain weight here (README, "Speed");
    `pack=False` keeps `F.linear`."""

    def __init__(
        self, weight: torch.Tensor, dtype: torch.dtype, int8: bool = False, pack: bool = True
    ):
        self.weight = weight.detach().to(dtype).contiguous()
        self.packed: Any = None
        self.onednn: Any = None
        self.reduce_range = False
        if int8:
            w = weight.detach().float()
            scales = (w.abs().amax(1) / 127).clamp_min(1e-12).double()
            zeros = torch.zeros(w.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # torch marks quantized tensors deprecated
                warnings.simplefilter("ignore", UserWarning)
                q = torch.quantize_per_channel(w, scales, zeros, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(q, None)
            self.weight = torch.empty(0)
            self.reduce_range = _reduce_range(CPUINFO)
        elif pack and mkldnn_linear(dtype):
            self.onednn = torch.ops.mkldnn._reorder_linear_weight(self.weight, PACK_HINT)
            self.weight = torch.empty(0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)
        if self.onednn is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.onednn, None, "none", [], "")
        return F.linear(x, self.weight)


@dataclass(frozen=True)
class Layer:
    attn_norm: torch.Tensor  # float32
    qkv: Linear  # [(heads + 2 kv_heads) * head_dim, hidden]
    o: Linear  # [hidden, heads * head_dim]
    mlp_norm: torch.Tensor
    gate_up: Linear  # [2 * intermediate, hidden]
    down: Linear  # [hidden, intermediate]


class KVCache:
    """Keys and values of `rows` sequences up to `length` positions each, for every layer:
    `k[layer, row, kv_head, position]`. A row's valid length is kept by the caller."""

    def __init__(self, model: LlamaModel, rows: int, length: int):
        shape = (model.num_layers, rows, model.kv_heads, length, model.head_dim)
        self.k = torch.zeros(shape, dtype=model.dtype)
        self.v = torch.zeros(shape, dtype=model.dtype)

    @property
    def rows(self) -> int:
        return self.k.shape[1]

    @property
    def length(self) -> int:
        return self.k.shape[3]

    def copy_row(self, src: int, dst: int, n: int) -> None:
        """Positions [0, n) of row `src` into row `dst` (a shared prefix, a compaction)."""
        self.k[:, dst, :, :n] = self.k[:, src, :, :n]
        self.v[:, dst, :, :n] = self.v[:, src, :, :n]

    def read(self, row: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A copy of positions [0, n) of `row`, every layer (for a prefix store)."""
        return self.k[:, row, :, :n].clone(), self.v[:, row, :, :n].clone()

    def write(self, row: int, kv: tuple[torch.Tensor, torch.Tensor]) -> None:
        k, v = kv
        n = k.shape[2]
        self.k[:, row, :, :n] = k
        self.v[:, row, :, :n] = v


class LlamaModel:
    """The weights of a `LlamaForCausalLM`, laid out for `prefill` and `decode`; `int8`
    stores the linear layers' weights in int8 (compute dtype float32 around them); `pack`
    hands the dense weights to oneDNN in its layout (`Linear`)."""

    def __init__(self, hf_model: Any, dtype: torch.dtype, int8: bool = False, pack: bool = True):
        config = hf_model.config
        check_supported(config)
        self.int8 = int8
        self.pack = pack
        self.dtype = torch.float32 if int8 else dtype
        self.num_layers = config.num_hidden_layers
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.group = self.heads // self.kv_heads
        self.eps = config.rms_norm_eps
        self.vocab_size = config.vocab_size
        self.max_positions = config.max_position_embeddings
        inner = hf_model.model
        with torch.no_grad():
            self.embed = inner.embed_tokens.weight.detach().float().clone()
            self.norm = inner.norm.weight.detach().float().clone()
            self.lm_head = Linear(hf_model.lm_head.weight, self.dtype, int8, pack)
            self.layers = [self._layer(block) for block in inner.layers]
        self._rotary = inner.rotary_emb
        self._cos = self._sin = torch.empty(0)

    def _layer(self, block: Any) -> Layer:
        a, m = block.self_attn, block.mlp

        def w(*linears: Any) -> Linear:
            weight = torch.cat([x.weight.detach() for x in linears])
            return Linear(weight, self.dtype, self.int8, self.pack)

        return Layer(
            attn_norm=block.input_layernorm.weight.detach().float().clone(),
            qkv=w(a.q_proj, a.k_proj, a.v_proj),
            o=w(a.o_proj),
            mlp_norm=block.post_attention_layernorm.weight.detach().float().clone(),
            gate_up=w(m.gate_proj, m.up_proj),
            down=w(m.down_proj),
        )

    def rope_tables(self, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of positions [0, positions) in the compute dtype, as transformers'
        rotary module gives them (grown on demand)."""
        if self._cos.shape[0] < positions:
            n = max(positions, 2 * self._cos.shape[0], 512)
            probe = torch.empty(0, dtype=self.dtype)
            with torch.no_grad():
                cos, sin = self._rotary(probe, torch.arange(n)[None])
            self._cos, self._sin = cos[0].contiguous(), sin[0].contiguous()
        return self._cos, self._sin

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [tokens, heads, head_dim] rotated; cos, sin [tokens, 1, head_dim]."""
        half = self.head_dim // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _qkv(
        self, x: torch.Tensor, layer: Layer, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [tokens, heads, d], k and v [tokens, kv_heads, d] of the normed input, rotated."""
        h = F.rms_norm(x, (x.shape[-1],), layer.attn_norm, self.eps).to(self.dtype)
        qkv = layer.qkv(h).view(x.shape[0], self.heads + 2 * self.kv_heads, -1)
        qk = self._rope(qkv[:, : self.heads + self.kv_heads], cos, sin)
        return qk[:, : self.heads], qk[:, self.heads :], qkv[:, self.heads + self.kv_heads :]

    def _finish_layer(self, x: torch.Tensor, attn: torch.Tensor, layer: Layer) -> None:
        """Output projection, MLP, both residual adds, in place on x (float32)."""
        x.add_(layer.o(attn))
        h = F.rms_norm(x, (x.shape[-1],), layer.mlp_norm, self.eps).to(self.dtype)
        gate, up = layer.gate_up(h).chunk(2, dim=-1)
        x.add_(layer.down(F.silu(gate) * up))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """float32 logits [tokens, vocab] of final hidden states [tokens, hidden]."""
        h = F.rms_norm(x, (x.shape[-1],), self.norm, self.eps).to(self.dtype)
        return self.lm_head(h).float()

    @torch.inference_mode()
    def prefill(
        self, cache: KVCache, rows: list[int], starts: list[int], tokens: list[list[int]]
    ) -> torch.Tensor:
        """Run `tokens[i]` at positions starts[i].. of cache row rows[i] (the positions before
        it already cached), all rows' tokens in one set of products; returns the logits of
        each row's last token [len(rows), vocab]. Attention is per row, causal."""
        lengths = [len(t) for t in tokens]
        ids = torch.tensor([t for ts in tokens for t in ts], dtype=torch.long)
        positions = torch.cat(
            [torch.arange(s, s + n) for s, n in zip(starts, lengths, strict=True)]
        )
        cos_t, sin_t = self.rope_tables(int(positions.max()) + 1)
        cos, sin = cos_t[positions, None], sin_t[positions, None]
        x = F.embedding(ids, self.embed)
        ends = torch.tensor(lengths).cumsum(0).tolist()
        masks = [_causal(s, n) for s, n in zip(starts, lengths, strict=True)]
        for li, layer in enumerate(self.layers):
            q, k, v = self._qkv(x, layer, cos, sin)
            out = torch.empty(x.shape[0], self.heads * self.head_dim, dtype=self.dtype)
            for row, s, n, end, mask in zip(rows, starts, lengths, ends, masks, strict=True):
                a = end - n
                cache.k[li, row, :, s : s + n] = k[a:end].transpose(0, 1)
                cache.v[li, row, :, s : s + n] = v[a:end].transpose(0, 1)
                out[a:end] = self._attend_prefill(q[a:end], cache, li, row, s + n, mask)
            self._finish_layer(x, out, layer)
        last = torch.tensor(ends) - 1
        return self.logits(x[last])

    def _attend_prefill(
        self, q: torch.Tensor, cache: KVCache, li: int, row: int, total: int, mask: torch.Tensor
    ) -> torch.Tensor:
        """One row's queries [n, heads, d] against its keys [0, total): [n, heads * d]."""
        n = q.shape[0]
        # [kv_heads, group * n, d]: the query heads of one KV head side by side
        qg = q.view(n, self.kv_heads, self.group, self.head_dim).permute(1, 2, 0, 3)
        qg = qg.reshape(self.kv_heads, self.group * n, self.head_dim)
        k, v = cache.k[li, row, :, :total], cache.v[li, row, :, :total]
        out = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask.repeat(self.group, 1))
        out = out.view(self.kv_heads, self.group, n, self.head_dim).permute(2, 0, 1, 3)
        return out.reshape(n, self.heads * self.head_dim)

    @torch.inference_mode()
    def decode(self, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One new token for each of the first `len(tokens)` cache rows, row b's at
        `positions[b]` (its cached length); returns float32 logits [rows, vocab].

        Attention reads every position of the cache's rows, masked past each row's own: a
        slice of the positions would not be contiguous, and products of non-contiguous keys
        copy them first (2-5x slower here); the cache grows in small chunks instead."""
        b = tokens.shape[0]
        cos_t, sin_t = self.rope_tables(cache.length)
        cos, sin = cos_t[positions, None], sin_t[positions, None]
        # additive mask [rows, 1, 1, positions]: row b sees positions <= positions[b]
        span = torch.arange(cache.length)
        mask = torch.zeros(b, 1, 1, cache.length, dtype=self.dtype)
        mask.masked_fill_(span[None, None, None] > positions[:, None, None, None], float("-inf"))
        rows = torch.arange(b)
        scale = self.head_dim**-0.5
        x = F.embedding(tokens, self.embed)
        for li, layer in enumerate(self.layers):
            q, k, v = self._qkv(x, layer, cos, sin)
            cache.k[li, rows, :, positions] = k
            cache.v[li, rows, :, positions] = v
            keys, values = cache.k[li, :b], cache.v[li, :b]
            qg = q.reshape(b, self.kv_heads, self.group, self.head_dim)
            scores = torch.matmul(qg, keys.transpose(-1, -2)).mul_(scale).add_(mask)
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(self.dtype)
            attn = torch.matmul(probs, values).view(b, self.heads * self.head_dim)
            self._finish_layer(x, attn, layer)
        return self.logits(x)


def _causal(start: int, n: int) -> torch.Tensor:
    """Bool mask [n, start + n]: query i (at position start + i) sees keys <= start + i."""
    keys = torch.arange(start + n)
    return keys[None, :] <= (start + torch.arange(n))[:, None]
