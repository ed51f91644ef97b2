"""Continuous batching over `llama.LlamaModel`: sequences join and leave the batch between
decoding steps, and a prompt already computed is never computed again.

`Batcher` holds the running sequences in the first rows of one KV cache. Each `step` admits
waiting requests while rows are free (one prefill for all of them, all rows' new tokens in one
set of products), decodes one token for every running row, and retires the rows that ended
(EOS, their token limit, or cancelled), moving the last row into the freed one so that the
running rows stay contiguous. Nothing is kept for a sequence that ended: no padding, no
finished rows in the batch.

Prefixes. `PrefixStore` keeps the keys and values of prompts (and, when serving, of whole
finished outputs) by their token ids; a new sequence copies the longest stored prefix of its
ids into its row and computes only the rest. The K samples of one prompt therefore share one
prefill, and every prompt of an arm reuses the long common head (chat template and thought
prompt) of the first. Requests admitted together that share more with each other than with
the store are admitted in rounds, the first of them first, so one computes what the others
copy (`_admission_rounds`).

A request may name a follow-up (`Request.then`): when it ends, the follow-up continues the same
row from the longest common prefix of its ids with what the row holds, which is how the native
backend runs budget forcing's second phase without computing prompt and thought again.

`run` drives a fixed set of requests to the end (the batched generator); a server calls `add`
from its request threads and `step` from one engine thread (`native_stream.NativeStreamer`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from tpo.generate.llama import KVCache, LlamaModel
from tpo.generate.sampling import sample

ROW_CHUNK = 16  # the cache grows by this many rows
POSITION_CHUNK = 32  # and by this many positions (attention reads all of them, masked)


@dataclass(eq=False)
class Request:
    """One sequence: continue `ids` for at most `max_new_tokens` (EOS counted), temperature
    0 greedy; `key` is its random stream (`sampling.uniform`)."""

    ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    key: int = 0
    # called when the request ends; a Request returned continues the same row
    then: Callable[[Request], Request | None] | None = None
    # called with each new token id as it is sampled (streaming), from the engine's thread
    on_token: Callable[[int], None] | None = None
    out: list[int] = field(default_factory=list)
    eos: bool = False  # the model ended it (EOS is the last of `out`)
    done: bool = False
    cancelled: bool = False  # set from any thread: the row is dropped at the next step


class PrefixStore:
    """Keys and values of token-id prefixes, least recently used evicted past `max_tokens`."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.entries: list[tuple[np.ndarray, tuple[torch.Tensor, torch.Tensor]]] = []

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids, _ in self.entries)

    def longest(self, ids: list[int]) -> tuple[int, int]:
        """(entry index, length) of the longest stored prefix of `ids`; (-1, 0) if none."""
        best, length = -1, 0
        query = np.asarray(ids)
        for i, (stored, _) in enumerate(self.entries):
            n = min(len(stored), len(query))
            differ = np.flatnonzero(stored[:n] != query[:n])
            common = int(differ[0]) if differ.size else n
            if common > length:
                best, length = i, common
        return best, length

    def get(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self.entries.pop(index)
        self.entries.append(entry)  # most recently used last
        return entry[1]

    def put(self, ids: list[int], kv: tuple[torch.Tensor, torch.Tensor]) -> None:
        if len(ids) > self.max_tokens or not ids:
            return
        self.entries.append((np.asarray(ids), kv))
        while self.tokens > self.max_tokens:
            self.entries.pop(0)


@dataclass(eq=False)
class _Row:
    request: Request
    length: int  # positions cached
    tokens: list[int]  # every token of the row: prompt, then what was generated
    step: int = 0  # tokens sampled for the current request


class Batcher:
    """Continuous batching of `Request`s on one model (see the module doc)."""

    def __init__(
        self,
        model: LlamaModel,
        *,
        eos_ids: set[int],
        max_rows: int,
        store: PrefixStore,
        keep_outputs: bool = False,
        prefill_tokens: int = 4096,
    ):
        self.model = model
        self.eos_ids = eos_ids
        self.max_rows = max_rows
        self.store = store
        self.keep_outputs = keep_outputs  # store finished rows too (a server's next turns)
        self.prefill_tokens = prefill_tokens
        self.rows: list[_Row] = []
        self.waiting: deque[Request] = deque()
        self.lock = threading.Lock()  # guards `waiting` against request threads
        self.cache: KVCache | None = None
        self.peak_rows = 0  # the most rows one decoding step ran (what batching achieved)

    @property
    def idle(self) -> bool:
        return not self.rows and not self.waiting

    def add(self, request: Request) -> None:
        with self.lock:
            self.waiting.append(request)

    def run(self, requests: list[Request]) -> None:
        for r in requests:
            self.add(r)
        while not self.idle:
            self.step()

    def step(self) -> None:
        self._drop_cancelled()
        self._admit()
        if self.rows:
            self._decode()
        if not self.rows and not self.waiting:
            self.cache = None  # nothing running: give the memory back

    # --- the cache -----------------------------------------------------------------------

    def _ensure(self, rows: int, positions: int) -> KVCache:
        have = self.cache
        if have is not None and have.rows >= rows and have.length >= positions:
            return have
        new_rows = max(rows, have.rows if have else 0)
        new_len = max(positions, have.length if have else 0)
        grown = KVCache(
            self.model, _round_up(new_rows, ROW_CHUNK), _round_up(new_len, POSITION_CHUNK)
        )
        if have is not None:
            for i, row in enumerate(self.rows):
                grown.k[:, i, :, : row.length] = have.k[:, i, :, : row.length]
                grown.v[:, i, :, : row.length] = have.v[:, i, :, : row.length]
        self.cache = grown
        return grown

    # --- admission -----------------------------------------------------------------------

    def _take_waiting(self) -> list[Request]:
        taken: list[Request] = []
        with self.lock:
            while self.waiting and len(self.rows) + len(taken) < self.max_rows:
                r = self.waiting.popleft()
                if not r.cancelled:
                    taken.append(r)
                else:
                    _finish(r)
        return taken

    def _admit(self) -> None:
        for group in _admission_rounds(self._take_waiting(), self.store):
            for chunk in _chunks(group, self.prefill_tokens):
                self._prefill_new(chunk)

    def _prefill_new(self, requests: list[Request]) -> None:
        cache = self._ensure(len(self.rows) + len(requests), max(len(r.ids) for r in requests))
        starts, rows = [], []
        for r in requests:
            row = len(self.rows)
            entry, n = self.store.longest(r.ids)
            n = min(n, len(r.ids) - 1)  # the last prompt token is run for its logits
            if n > 0:
                k, v = self.store.get(entry)
                cache.write(row, (k[:, :, :n], v[:, :, :n]))
            self.rows.append(_Row(r, n, list(r.ids)))
            starts.append(n)
            rows.append(row)
        logits = self.model.prefill(
            cache, rows, starts, [r.ids[s:] for r, s in zip(requests, starts, strict=True)]
        )
        for i, r in zip(rows, requests, strict=True):
            self.rows[i].length = len(r.ids)
            if self.store.longest(r.ids)[1] < len(r.ids):
                self.store.put(r.ids, cache.read(i, len(r.ids)))
        self._sampled(rows, logits)

    # --- decoding ------------------------------------------------------------------------

    def _decode(self) -> None:
        cache = self._ensure(len(self.rows), max(row.length for row in self.rows) + 1)
        tokens = torch.tensor([row.tokens[-1] for row in self.rows])
        positions = torch.tensor([row.length for row in self.rows])
        logits = self.model.decode(cache, tokens, positions)
        self.peak_rows = max(self.peak_rows, len(self.rows))
        for row in self.rows:
            row.length += 1
        self._sampled(list(range(len(self.rows))), logits)

    def _sampled(self, rows: list[int], logits: torch.Tensor) -> None:
        """Draw the next token of `rows` from their logits, then retire what ended."""
        reqs = [self.rows[i].request for i in rows]
        steps = [self.rows[i].step for i in rows]
        tokens = sample(
            logits,
            [r.temperature for r in reqs],
            [r.top_p for r in reqs],
            [r.key for r in reqs],
            steps,
        )
        ended = []
        for i, r, t in zip(rows, reqs, tokens, strict=True):
            row = self.rows[i]
            row.tokens.append(t)
            row.step += 1
            r.out.append(t)
            r.eos = t in self.eos_ids
            if r.on_token is not None:
                r.on_token(t)
            if r.eos or len(r.out) >= r.max_new_tokens:
                ended.append(i)
        self._end(ended)

    def _end(self, ended: list[int]) -> None:
        """Finish the requests of rows `ended`: continue those with a follow-up in place,
        retire the others."""
        follow: list[tuple[int, Request, int]] = []
        for i in ended:
            row = self.rows[i]
            r = row.request
            _finish(r)
            nxt = r.then(r) if r.then is not None else None
            if nxt is None:
                continue
            common = _common_prefix(row.tokens[: row.length], nxt.ids)
            follow.append((i, nxt, min(common, len(nxt.ids) - 1)))
        retire = [i for i in ended if i not in {f[0] for f in follow}]
        if follow:
            for i, nxt, keep in follow:
                self.rows[i] = _Row(nxt, keep, list(nxt.ids))
            cache = self._ensure(len(self.rows), max(len(nxt.ids) for _, nxt, _ in follow))
            rows = [i for i, _, _ in follow]
            logits = self.model.prefill(
                cache, rows, [k for _, _, k in follow], [n.ids[k:] for _, n, k in follow]
            )
            for i, nxt, _ in follow:
                self.rows[i].length = len(nxt.ids)
            self._retire(retire)
            # rows moved while retiring: find the follow-ups again
            moved = {id(row.request): j for j, row in enumerate(self.rows)}
            self._sampled([moved[id(n)] for _, n, _ in follow], logits)
        else:
            self._retire(retire)

    def _retire(self, ended: list[int]) -> None:
        """Free rows `ended`, moving the last running rows into the holes."""
        for i in sorted(ended, reverse=True):
            row = self.rows[i]
            if self.keep_outputs and self.cache is not None and row.length > 0:
                self.store.put(row.tokens[: row.length], self.cache.read(i, row.length))
            last = len(self.rows) - 1
            if i != last:
                assert self.cache is not None
                self.cache.copy_row(last, i, self.rows[last].length)
                self.rows[i] = self.rows[last]
            self.rows.pop()

    def _drop_cancelled(self) -> None:
        gone = [i for i, row in enumerate(self.rows) if row.request.cancelled]
        for i in gone:
            _finish(self.rows[i].request)
        self._retire(gone)


def _finish(r: Request) -> None:
    r.done = True


def _round_up(n: int, chunk: int) -> int:
    return -(-n // chunk) * chunk


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _admission_rounds(requests: list[Request], store: PrefixStore) -> Iterator[list[Request]]:
    """Split requests admitted together into rounds: a request that shares a longer prefix
    with an earlier one of this admission than with the store waits for that one's round, so
    that it copies the prefix instead of computing it again."""
    pending = requests
    while pending:
        this: list[Request] = []
        later: list[Request] = []
        for r in pending:
            stored = store.longest(r.ids)[1]
            if any(_common_prefix(r.ids, o.ids) > max(stored, 1) for o in this):
                later.append(r)
            else:
                this.append(r)
        yield this  # the caller prefills it: the next round finds it in the store
        pending = later


def _chunks(requests: list[Request], max_tokens: int) -> list[list[Request]]:
    out: list[list[Request]] = [[]]
    size = 0
    for r in requests:
        if out[-1] and size + len(r.ids) > max_tokens:
            out.append([])
            size = 0
        out[-1].append(r)
        size += len(r.ids)
    return out
