"""Shared-prompt rows for DPO: each pair is one row, [prompt | chosen | rejected], so its
prompt is computed once per step instead of twice.

TRL's collator lays a batch of B pairs out as 2B rows, prompt + chosen and prompt + rejected,
so every prompt (150-200 tokens here, as long as a completion) goes through the model twice.
Here a pair is one row and a 4-D attention mask gives each token exactly the context it has in
its own sequence: the rejected tokens see the prompt and themselves, never the chosen tokens;
position ids restart the rejected completion where the prompt ends. Every completion token's
log-probability is therefore the one TRL computes, and the loss is the same (to float
rounding); the gradients of both completions flow into the one copy of the prompt. The last
prompt token's hidden state predicts the first token of both completions.

Prompts are left-padded, so every row's completions start in the same column: the model is
asked for logits only from there on (`logits_to_keep`, a standard forward argument of
transformers' causal LMs), and the prompt, which is not trained on, never goes through the
LM head (TRL's fused head does that on CPUs, see README). Truncation is TRL's `keep_start`:
prompt + completion is cut to `max_length`, for chosen and rejected alike.

`PairPacker` is the collator; `completion_logps` turns the model's logits into per-token
log-probs and the per-sequence sums DPO needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

# the segment of each column of a row, for the mask
PAD, PROMPT, CHOSEN, REJECTED = 0, 1, 2, 3
ATTENTIONS = ("sdpa", "eager")  # attention implementations that take a 4-D mask as it is


@dataclass(frozen=True)
class PairPacker:
    """Collates tokenized pairs (TRL's `prompt_ids`, `chosen_ids`, `rejected_ids`, and its
    precomputed `ref_chosen_logps` / `ref_rejected_logps` when there) into shared-prompt rows.

    The batch holds `input_ids`, `position_ids` and a boolean `attention_mask` of shape
    (B, 1, L, L), true where a token may attend; `logits_from` (the first column whose logits
    are needed); per completion token its row, its column among the kept logits, its id
    and its sequence (`owner`: 2i for pair i's chosen, 2i + 1 for its rejected);
    `num_tokens`, the tokens TRL's layout holds (the prompt counted twice), for the logs;
    `row_span`, each row's columns without its padding [left, end) (`row_batch`).
    """

    pad_token_id: int
    max_length: int | None = None

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [self._cut(e) for e in examples]
        start = max(len(p) for p, _, _ in rows)  # the column where every completion starts
        width = start + max(len(c) + len(r) for _, c, r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        segments = torch.full((len(rows), width), PAD, dtype=torch.long)
        spans: list[tuple[int, int]] = []
        row_of: list[int] = []
        kept_of: list[int] = []
        targets: list[int] = []
        owner: list[int] = []
        for i, (prompt, chosen, rejected) in enumerate(rows):
            left = start - len(prompt)
            ids[i, left:start] = torch.tensor(prompt)
            positions[i, left:start] = torch.arange(len(prompt))
            segments[i, left:start] = PROMPT
            spans.append((left, start + len(chosen) + len(rejected)))
            for seq, (offset, tokens) in enumerate(((0, chosen), (len(chosen), rejected))):
                at = start + offset
                ids[i, at : at + len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                positions[i, at : at + len(tokens)] = len(prompt) + torch.arange(len(tokens))
                segments[i, at : at + len(tokens)] = CHOSEN if seq == 0 else REJECTED
                # token t is predicted by the column before it; a completion's first token
                # by the prompt's last one (kept column 0)
                kept_of += [0] + [offset + t for t in range(1, len(tokens))] if tokens else []
                row_of += [i] * len(tokens)
                targets += tokens
                owner += [2 * i + seq] * len(tokens)
        batch = {
            "input_ids": ids,
            "position_ids": positions,
            "attention_mask": pair_mask(segments),
            "logits_from": torch.tensor(start - 1),
            "token_row": torch.tensor(row_of, dtype=torch.long),
            "token_column": torch.tensor(kept_of, dtype=torch.long),
            "token_id": torch.tensor(targets, dtype=torch.long),
            "token_owner": torch.tensor(owner, dtype=torch.long),
            "num_tokens": torch.tensor(sum(2 * len(p) + len(c) + len(r) for p, c, r in rows)),
            "row_span": torch.tensor(spans, dtype=torch.long).reshape(len(rows), 2),
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                batch[key] = torch.tensor([e[key] for e in examples])
        return batch

    def _cut(self, example: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
        prompt = list(example["prompt_ids"])
        room = None if self.max_length is None else max(self.max_length - len(prompt), 0)
        return prompt, list(example["chosen_ids"])[:room], list(example["rejected_ids"])[:room]


def pair_mask(segments: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) boolean mask from each column's segment: causal, padding never attended,
    rejected tokens blind to the chosen ones. A padding column attends to itself only, so that
    no row of the attention is empty (its output is never used)."""
    width = segments.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    mask = causal & (key != PAD) & ~((query == REJECTED) & (key == CHOSEN))
    mask |= torch.eye(width, dtype=torch.bool) & (query == PAD)
    return mask[:, None]


def row_batch(batch: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Row i of a packed batch alone, without its padding: a batch of one pair whose logits
    and log-probs are row i's in the whole batch (its completions start `logits_from` + 1
    columns after its own first column, its sequences are 0 and 1)."""
    left, end = (int(x) for x in batch["row_span"][i])
    mine = batch["token_row"] == i
    return {
        "input_ids": batch["input_ids"][i : i + 1, left:end],
        "position_ids": batch["position_ids"][i : i + 1, left:end],
        "attention_mask": batch["attention_mask"][i : i + 1, :, left:end, left:end],
        "logits_from": batch["logits_from"] - left,
        "token_row": torch.zeros_like(batch["token_row"][mine]),
        "token_column": batch["token_column"][mine],
        "token_id": batch["token_id"][mine],
        "token_owner": batch["token_owner"][mine] - 2 * i,
    }


def model_inputs(batch: dict[str, torch.Tensor], attention: str, dtype: Any) -> dict[str, Any]:
    """The forward arguments of a packed batch; an additive float mask for eager attention."""
    mask = batch["attention_mask"]
    if attention == "eager":
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )
    width = batch["input_ids"].shape[1]
    return {
        "input_ids": batch["input_ids"],
        "position_ids": batch["position_ids"],
        "attention_mask": mask,
        "logits_to_keep": width - int(batch["logits_from"]),
        "use_cache": False,
    }


def batch_logps(
    model: Any, batch: dict[str, torch.Tensor], attention: str, dtype: Any, rows_apart: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """`completion_logps` of a packed batch under `model`: from one forward of the padded
    batch, or (`rows_apart`) from one forward per row without its padding (`row_batch`),
    joined in the batch's order."""
    parts = [row_batch(batch, i) for i in range(len(batch["row_span"]))] if rows_apart else [batch]
    results = [
        completion_logps(model(**model_inputs(part, attention, dtype)).logits, part)
        for part in parts
    ]
    if len(results) == 1:
        return results[0]
    return torch.cat([r[0] for r in results]), torch.cat([r[1] for r in results])


def completion_logps(
    logits: torch.Tensor, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(each completion token's log-probability, in the batch's token order; each sequence's
    sum, shape (2B,): chosen of pair i at 2i, rejected at 2i + 1) from the kept logits
    (B, K, V). The log-softmax is taken in float32 whatever the logits' dtype."""
    logits = logits.float()
    row, column = batch["token_row"], batch["token_column"]
    lse = torch.logsumexp(logits, dim=-1)  # (B, K)
    token_logps = logits[row, column, batch["token_id"]] - lse[row, column]
    sums = token_logps.new_zeros(2 * logits.shape[0]).index_add(
        0, batch["token_owner"], token_logps
    )
    return token_logps, sums
