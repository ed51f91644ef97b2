"""torch.compile on the native backend's decode step, measured (issue 11's lever list).

    python benchmarks/compile_decode.py ROWS POSITIONS pre,att,post

One bf16 decode step of the embedded model at ROWS rows and a cache of POSITIONS positions:
`LlamaModel.decode` (eager) against the same step with its per-layer pieces compiled by
`torch.compile(dynamic=True)` (`pre`: norm, qkv product, rotary; `att`: attention; `post`:
output product, MLP, residuals), alternating, and the largest logit difference between the
compiled and the uncompiled step. The cache writes stay outside the compiled pieces: compiling
the whole step (cache included) copies the cache each call. Results in README, "Speed".
"""

import sys
import time

import torch
import torch.nn.functional as F

from tpo.generate.llama import KVCache, LlamaModel
from tpo.models import load_model, resolve_model_path

torch.set_num_threads(2)
hf = load_model(resolve_model_path("embedded"), "float32", "cpu")
m = LlamaModel(hf, torch.bfloat16, pack=False)  # its pieces take the plain weights
B, L = int(sys.argv[1]), int(sys.argv[2])
cache = KVCache(m, B, L)
tokens = torch.randint(0, 1000, (B,))
pos = torch.randint(L // 2, L - 1, (B,))
H, KV, D, G, eps, dt = m.heads, m.kv_heads, m.head_dim, m.group, m.eps, m.dtype


def pre(x, nw, w, cos, sin):
    h = F.rms_norm(x, (x.shape[-1],), nw, eps).to(dt)
    qkv = F.linear(h, w).view(x.shape[0], H + 2 * KV, -1)
    qk = qkv[:, : H + KV]
    half = D // 2
    rot = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
    qk = qk * cos + rot * sin
    return qk[:, :H], qk[:, H:], qkv[:, H + KV :]


def att(q, keys, values, mask):
    b = q.shape[0]
    qg = q.reshape(b, KV, G, D)
    scores = torch.matmul(qg, keys.transpose(-1, -2)) * (D**-0.5) + mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(dt)
    return torch.matmul(probs, values).view(b, H * D)


def post(x, attn, ow, nw, guw, dw):
    x = x + F.linear(attn, ow)
    h = F.rms_norm(x, (x.shape[-1],), nw, eps).to(dt)
    gate, up = F.linear(h, guw).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, dw)


mode = sys.argv[3]
cpre, catt, cpost = pre, att, post
if "pre" in mode:
    cpre = torch.compile(pre, dynamic=True)
if "att" in mode:
    catt = torch.compile(att, dynamic=True)
if "post" in mode:
    cpost = torch.compile(post, dynamic=True)


@torch.inference_mode()
def decode(cache, tokens, positions, fpre, fatt, fpost):
    b = tokens.shape[0]
    cos_t, sin_t = m.rope_tables(cache.length)
    cos, sin = cos_t[positions, None], sin_t[positions, None]
    span = torch.arange(cache.length)
    mask = torch.zeros(b, 1, 1, cache.length, dtype=dt)
    mask.masked_fill_(span[None, None, None] > positions[:, None, None, None], float("-inf"))
    rows = torch.arange(b)
    x = F.embedding(tokens, m.embed)
    for li, layer in enumerate(m.layers):
        q, k, v = fpre(x, layer.attn_norm, layer.qkv.weight, cos, sin)
        cache.k[li, rows, :, positions] = k
        cache.v[li, rows, :, positions] = v
        attn = fatt(q, cache.k[li, :b], cache.v[li, :b], mask)
        x = fpost(x, attn, layer.o.weight, layer.mlp_norm, layer.gate_up.weight, layer.down.weight)
    return m.logits(x)


def bench(f, n=20):
    for _ in range(3):
        f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n


t0 = time.perf_counter()
a = decode(cache, tokens, pos, cpre, catt, cpost)
print(f"first call {time.perf_counter() - t0:.1f}s")
ref = m.decode(cache, tokens, pos)
print("max abs diff vs m.decode", (a - ref).abs().max().item(), "ref scale", ref.abs().max().item())
for _ in range(2):
    e = bench(lambda: m.decode(cache, tokens, pos))
    c = bench(lambda: decode(cache, tokens, pos, cpre, catt, cpost))
    u = bench(lambda: decode(cache, tokens, pos, pre, att, post))
    print(
        f"{mode} B={B} L={L}: eager {e * 1e3:.1f} ms, uncompiled-same {u * 1e3:.1f}, "
        f"compiled {c * 1e3:.1f}, ratio {e / c:.2f}x"
    )
u1 = decode(cache, tokens, pos, pre, att, post)
r1 = m.decode(cache, tokens, pos)
r2 = m.decode(cache, tokens, pos)
print(
    "uncompiled vs m.decode",
    (u1 - r1).abs().max().item(),
    "m.decode twice",
    (r1 - r2).abs().max().item(),
)
c1 = decode(cache, tokens, pos, cpre, catt, cpost)
print("compiled vs uncompiled", (c1 - u1).abs().max().item())
