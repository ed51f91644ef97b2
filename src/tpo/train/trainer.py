"""TRL's trainers with a leaner forward: `SharedPromptDPOTrainer` (DPO) and
`CompletionSFTTrainer` (the SFT warm-up, warmup.py).

`SharedPromptDPOTrainer` is TRL's `DPOTrainer` on shared-prompt rows (packing.py): TRL still
tokenizes the pairs, precomputes the reference log-probs, shards the batches, steps the
optimizer and the scheduler, and runs under every accelerate launcher; it replaces only the forward
(one row per pair, logits from the completions on) and the loss over its output.

The loss is TRL's for the two loss types tpo uses: `sigmoid` (DPO) and `sft` (the NLL term:
the mean negative log-likelihood of the chosen completions' tokens of the batch), weighted by
TRL's `loss_weights`. The logged metrics keep TRL's names (`rewards/accuracies`,
`rewards/margins`, `rewards/chosen`, `logps/chosen`, `num_tokens`, ...); the entropy, logit
and token-accuracy metrics are left out, since each costs a pass over the vocabulary.
The reference log-probs must be precomputed (tpo always does; see DESIGN.md).

`CompletionSFTTrainer` is TRL's `SFTTrainer` on prompt-completion rows whose loss on the CPU
is the completion-only NLL TRL computes, from a forward that asks for the completion's logits
only (`logits_to_keep`) and takes each row alone without its padding; TRL's entropy and
token-accuracy metrics are left out there (on CPUs TRL's head computes them, and the log-probs,
at every position). On a GPU it is TRL's trainer as it is.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from trl import DPOTrainer, SFTTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from tpo import faults
from tpo.train.packing import batch_logps

LOSS_TYPES = ("sigmoid", "sft")


class SharedPromptDPOTrainer(DPOTrainer):
    """`DPOTrainer` whose batches come from `packing.PairPacker` (pass it as the collator).

    On the CPU the rows of a batch go through the model one at a time, each without its
    padding (`packing.row_batch`), and the loss is taken over the whole batch as before: the
    same loss (to float rounding), 1.19x faster here than one padded batch (README, "Training
    speed"). On a GPU the batch stays one product, where padding costs less than a row's
    launches do."""

    rows_one_at_a_time_on_cpu = True

    def __init__(self, *args: Any, **kwargs: Any):
        config = kwargs["args"]
        if not config.precompute_ref_log_probs:
            raise ValueError("shared-prompt rows need precompute_ref_log_probs=True")
        if not set(config.loss_type) <= set(LOSS_TYPES):
            raise ValueError(f"shared-prompt rows support the loss types {LOSS_TYPES} only")
        super().__init__(*args, **kwargs)

    def _logps(self, model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(each completion token's log-prob, each sequence's sum) of a packed batch."""
        config = self.accelerator.unwrap_model(model).config
        dtype = next(model.parameters()).dtype
        one_at_a_time = self.rows_one_at_a_time_on_cpu and inputs["input_ids"].device.type == "cpu"
        return batch_logps(model, inputs, config._attn_implementation, dtype, one_at_a_time)

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
        """Each pair's (chosen, rejected) log-probs under the reference: the model before
        training (with LoRA, its adapters switched off, as TRL does)."""
        adapters: Any = contextlib.nullcontext()
        policy: Any = self.model
        checkpointing: Any = self.args.gradient_checkpointing_kwargs
        unwrapped = self.accelerator.unwrap_model(policy)
        if self.ref_model is None and hasattr(unwrapped, "peft_config"):
            adapters = use_adapter(unwrapped, "ref" if "ref" in unwrapped.peft_config else None)
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(policy, checkpointing),
            adapters,
            self.accelerator.autocast(),
        ):
            _, sums = self._logps(model, inputs)
        return sums[0::2], sums[1::2]

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if return_outputs:
            raise NotImplementedError("shared-prompt rows return no logits")
        token_logps, sums = self._logps(model, inputs)
        chosen_ratio = sums[0::2] - inputs["ref_chosen_logps"]
        rejected_ratio = sums[1::2] - inputs["ref_rejected_logps"]
        terms = {
            "sigmoid": lambda: -F.logsigmoid(self.beta * (chosen_ratio - rejected_ratio)).mean(),
            "sft": lambda: -token_logps[inputs["token_owner"] % 2 == 0].mean(),
        }
        loss: Any = sum(
            terms[t]() * w for t, w in zip(self.loss_types, self.loss_weights, strict=True)
        )
        if faults.armed("loss:inf"):  # a loss that overflows, for the guard's tests
            loss = loss * float("inf")
        self._record(inputs, sums.detach(), chosen_ratio.detach(), rejected_ratio.detach())
        return loss

    def _record(
        self,
        inputs: dict[str, Any],
        sums: torch.Tensor,
        chosen: torch.Tensor,
        rejected: torch.Tensor,
    ) -> None:
        """TRL's metrics of one batch, gathered across processes, for `DPOTrainer.log`."""
        policy: Any = self.model
        mode = "train" if policy.training else "eval"
        metrics = self._metrics[mode]
        gather = self.accelerator.gather
        chosen_rewards, rejected_rewards = self.beta * chosen, self.beta * rejected
        values = {
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "rewards/margins": chosen_rewards - rejected_rewards,
            "logps/chosen": sums[0::2],
            "logps/rejected": sums[1::2],
        }
        for name, value in values.items():
            metrics[name].append(gather(value).mean().item())
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["num_tokens"].reshape(1))
            self._total_train_tokens += int(tokens.sum().item())
        metrics["num_tokens"] = [self._total_train_tokens]


class CompletionSFTTrainer(SFTTrainer):
    """`SFTTrainer` with `completion_only_loss`, whose loss on the CPU is TRL's (the summed NLL
    of the completion tokens over the batch's completion tokens, or over `num_items_in_batch`
    when the trainer passes it) from a lean forward: each row's logits from its first
    completion token on only, one row at a time without its right padding. The same loss,
    to float rounding (tests/test_train.py). Elsewhere, and for what the lean forward does
    not do (TRL's other loss types, label smoothing, a `compute_loss_func`, a MoE router
    loss, padding-free or sequence-parallel batches), it is TRL's own `compute_loss`: on a
    GPU TRL's fused head already scores the labelled positions only, in chunks."""

    rows_one_at_a_time_on_cpu = True  # False: one padded product (the bench's and a test's)

    def _lean(self, inputs: dict[str, Any]) -> bool:
        parallel = getattr(self.accelerator, "parallelism_config", None)
        args: Any = self.args
        return (
            inputs["input_ids"].device.type == "cpu"
            and "attention_mask" in inputs
            and args.loss_type == "nll"
            and self.label_smoother is None
            and self.compute_loss_func is None
            and not self.aux_loss_enabled
            and not self.padding_free
            and not (parallel is not None and getattr(parallel, "sp_enabled", False))
            and bool((inputs["labels"][:, 1:] != -100).any())
        )

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if return_outputs or not self._lean(inputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        ids, labels = inputs["input_ids"], inputs["labels"]
        targets = labels[:, 1:]  # column j predicts token j + 1
        if self.rows_one_at_a_time_on_cpu:
            lengths = inputs["attention_mask"].sum(dim=1).tolist()  # right padding cut off
            parts = [
                (ids[i : i + 1, : int(n)], targets[i : i + 1, : int(n) - 1])
                for i, n in enumerate(lengths)
            ]
        else:
            parts = [(ids, targets)]
        total: Any = sum(_completion_nll(model, part, target) for part, target in parts)
        count = (targets != -100).sum() if num_items_in_batch is None else num_items_in_batch
        loss = total / torch.as_tensor(count).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        if faults.armed("loss:inf"):
            loss = loss * float("inf")
        policy: Any = self.model
        mode = "train" if policy.training else "eval"
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum())
            self._total_train_tokens += int(tokens.sum().item()) // self.get_tp_size()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return loss


def _completion_nll(model: Any, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The summed NLL of the trained targets (not -100) of rows `ids`, where column j's
    target is `targets[:, j]`: one forward of `ids` without its last column (it predicts
    nothing), logits from the first trained column on. The log-softmax is in float32."""
    trained = targets != -100
    columns = trained.any(dim=0).nonzero()
    first = int(columns[0]) if len(columns) else targets.shape[1] - 1  # none: a zero, with a graph
    inputs = ids[:, :-1]
    keep = inputs.shape[1] - first
    logits = model(input_ids=inputs, logits_to_keep=keep, use_cache=False).logits.float()
    kept, mask = targets[:, first:].clamp(min=0), trained[:, first:]
    logps = logits.gather(-1, kept[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
    return -(logps * mask).sum()
