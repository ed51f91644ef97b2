"""DPO on one iteration's pairs with TRL's `DPOTrainer`, in one process or in each of the
processes `accelerate launch` started (TRL's trainer, through accelerate, shards the batches
and syncs the gradients; nothing here is distributed code of its own).

The reference model is M_t itself, and TRL precomputes its log-probs once before training,
so no second copy is kept and no step pays a second forward pass (with LoRA, computing them
per step with the adapter switched off made steps ~1.4x slower here). LoRA adapters are merged
before saving, so every iteration's checkpoint is a plain Hugging Face model.
The optional NLL term is TRL's `loss_type=["sigmoid", "sft"]` with `loss_weights=[1, w]`.

Order matters at scale: the `DPOConfig` is built before the model loads, so that under
DeepSpeed ZeRO-3 transformers partitions the weights while loading them; the model loads on
the CPU and the trainer places it (one GPU per process). The pairs are written once, by
rank 0, as a dataset on disk that every rank opens, so TRL's cached reference log-probs are
one file all ranks share. Each rank records the pair ids its dataloader yielded and a digest
of its weights after training; rank 0 gathers them (accelerate's `gather_object`) and
reports them with the digest of the model it saved, so a test can check that the ranks saw
different shards and ended with the same weights.

TRL's defaults `bf16=True` and `gradient_checkpointing=True` are always set explicitly from
the config, since neither suits every machine (bf16 needs hardware support).

With `train.shared_prompt` (the default) the trainer is `trainer.SharedPromptDPOTrainer`:
one row per pair, so each prompt is computed once, and logits only for the completions
(packing.py); otherwise TRL's own layout and forward. Either way the terminal shows one
progress bar (progress.py) and the trainer's log dicts go to a JSONL file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tpo import faults, storage_errors
from tpo.config import ModelConfig, TrainConfig
from tpo.models import load_model, load_tokenizer, pick_device
from tpo.records import Pair
from tpo.train.epochs import collect_epochs
from tpo.train.guard import check_losses, finite_loss_callback, install
from tpo.train.launch import TrainError, rank


def _dpo_args(cfg: TrainConfig, out: Path, seed: int, device: str) -> Any:
    from trl import DPOConfig

    loss_type, loss_weights = ["sigmoid"], None
    if cfg.nll_weight > 0:
        loss_type, loss_weights = ["sigmoid", "sft"], [1.0, cfg.nll_weight]
    return DPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps
        beta=cfg.beta,
        loss_type=loss_type,
        loss_weights=loss_weights,
        max_length=cfg.max_length,
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        precompute_ref_log_probs=True,
        remove_unused_columns=False,  # keep pair_id for the record of who trained on what
        ddp_find_unused_parameters=False,  # every trainable weight is used in each step
        logging_steps=1,
        save_strategy="epoch" if cfg.select_checkpoint else "no",  # tpo.train.epochs
        save_only_model=True,
        report_to="none",
        seed=seed,
        data_seed=seed,
        logging_nan_inf_filter=False,  # a NaN loss must show, to stop (train/guard.py)
        use_cpu=device == "cpu",
        disable_tqdm=False,
        dataloader_num_workers=0,
    )


def weights_digest(model: Any) -> str:
    """SHA-256 over a model's parameters (name and float32 bytes, sorted by name; a tied
    weight counts once), to tell whether two copies hold the same weights."""
    import torch

    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class _Recorder:
    """Wraps the trainer's collator and keeps the pair ids of every batch it collates."""

    def __init__(self, collate: Any):
        self.collate = collate
        self.pair_ids: list[str] = []

    def __call__(self, examples: list[dict[str, Any]]) -> Any:
        self.pair_ids.extend(str(e["pair_id"]) for e in examples)
        return self.collate(examples)


def _pairs_dataset(pairs: Sequence[Pair], where: Path, state: Any) -> Any:
    """The pairs as a dataset on disk, written by rank 0 and opened by every rank."""
    from datasets import Dataset, load_from_disk

    rows = [
        {
            "pair_id": p.instruction_id,
            "prompt": p.prompt,
            "chosen": p.chosen,
            "rejected": p.rejected,
        }
        for p in pairs
    ]
    with state.main_process_first():
        if state.is_main_process:
            shutil.rmtree(where, ignore_errors=True)
            Dataset.from_list(rows).save_to_disk(str(where))
    return load_from_disk(str(where))


def _lora(cfg: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def save_model(
    trainer: Any,
    model_path: str,
    tokenizer: Any,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    out_dir: Path,
) -> str | None:
    """Save a finished training's model as `out_dir` (every rank calls this): written into
    `out_dir.partial` (`_save`), then on rank 0 checked whole, synced and renamed into place
    (`install`), so that a kill or a full disk never leaves a model that passes for whole.
    Returns `_save`'s digest."""
    acc = trainer.accelerator
    partial = out_dir.with_name(out_dir.name + ".partial")
    if acc.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    acc.wait_for_everyone()
    faults.begin(str(out_dir))  # a region for the crash tests' kills inside the save
    with _quiet(), storage_errors.naming(partial):  # a full disk names what was saved
        saved = _save(trainer, model_path, tokenizer, cfg, partial, model_cfg)
    acc.wait_for_everyone()
    if acc.is_main_process:
        install(partial, out_dir)
        faults.end(str(out_dir))
    return saved


def _save(
    trainer: Any,
    model_path: str,
    tokenizer: Any,
    cfg: TrainConfig,
    partial: Path,
    model_cfg: ModelConfig,
) -> Any:
    """Save the trained model to `partial` (every rank calls this); the digest of what rank 0
    saved, or None where the weights are sharded (DeepSpeed, FSDP: the trainer gathers them).
    A LoRA adapter saved sharded is merged into the base, loaded as `model_cfg` allows."""
    acc = trainer.accelerator
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        trainer.save_model(str(partial))  # collective: gathers the full weights, rank 0 writes
        if acc.is_main_process and cfg.method == "lora":
            from peft import PeftModel

            trust, pickle = model_cfg.trust_remote_code, model_cfg.allow_pickle
            base = load_model(model_path, "float32", "cpu", trust, pickle, copy_weights=True)
            merged = PeftModel.from_pretrained(base, str(partial)).merge_and_unload()
            shutil.rmtree(partial)
            merged.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
        return None
    if not acc.is_main_process:
        return None
    trained = acc.unwrap_model(trainer.model)
    if cfg.method == "lora":
        trained = trained.merge_and_unload()
    trained.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    return weights_digest(trained)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars from datasets' preprocessing, TRL's reference pass or transformers'
    loading and saving, and no warnings about TrainingArguments' renamed checkpointing key
    (TRL sets the old one), so that a training shows its own bar alone."""
    import datasets
    import transformers

    bars = [
        (m.is_progress_bar_enabled(), m.disable_progress_bar, m.enable_progress_bar)
        for m in (datasets.utils.logging, transformers.utils.logging)
    ]
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # read by TRL's reference pass
    for _, disable, _ in bars:
        disable()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", r".*gradient_checkpointing. is deprecated", FutureWarning
            )
            yield
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
        for shown, _, enable in bars:
            if shown:
                enable()


def _trainer_class(cfg: TrainConfig, model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """(the trainer class, its collator: None for TRL's own)."""
    if not cfg.shared_prompt:
        from trl import DPOTrainer

        return DPOTrainer, None
    from tpo.train.packing import ATTENTIONS, PairPacker
    from tpo.train.trainer import SharedPromptDPOTrainer

    attention = model.config._attn_implementation
    if attention not in ATTENTIONS:
        raise TrainError(
            f"train.shared_prompt needs {' or '.join(ATTENTIONS)} attention, the model uses "
            f"{attention}; set train.shared_prompt: false"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return SharedPromptDPOTrainer, PairPacker(pad_token_id=pad, max_length=cfg.max_length)


def _trainer(
    pairs: Sequence[Pair],
    model_path: str,
    *,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    work: Path,
    seed: int,
    log_file: Path | None = None,
) -> tuple[Any, _Recorder, Any]:
    """(the DPO trainer over the pairs, the recorder of its batches, the tokenizer)."""
    from accelerate import PartialState
    from transformers.trainer_callback import ProgressCallback

    from tpo.train.progress import TrainProgress

    trust, pickle = model_cfg.trust_remote_code, model_cfg.allow_pickle
    with _quiet():
        device = pick_device(model_cfg.device)
        args = _dpo_args(cfg, work, seed, device)  # before the model: ZeRO-3 partitions
        tokenizer = load_tokenizer(model_path, trust, pickle)  # the weights while loading
        model = load_model(  # trained on the CPU: its weights in memory of its own
            model_path, model_cfg.dtype, "cpu", trust, pickle, copy_weights=device == "cpu"
        )
        logging.getLogger("transformers").setLevel(logging.ERROR)
        cls, collator = _trainer_class(cfg, model, tokenizer)
        trainer = cls(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=_pairs_dataset(pairs, work / "pairs", PartialState()),
            processing_class=tokenizer,
            peft_config=_lora(cfg) if cfg.method == "lora" else None,
            callbacks=[finite_loss_callback()],
        )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(TrainProgress(log_file))
    recorder = _Recorder(trainer.data_collator)  # after the reference pass, which uses it too
    trainer.data_collator = recorder
    return trainer, recorder, tokenizer


def _summary(trainer: Any, result: Any, pairs: int, seconds: float) -> dict[str, Any]:
    logs = [h for h in trainer.state.log_history if "loss" in h]
    last = logs[-1] if logs else {}
    return {
        "pairs": pairs,
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "first_loss": logs[0]["loss"] if logs else None,
        "final_loss": last.get("loss"),
        "final_reward_accuracy": last.get("rewards/accuracies"),
        "final_reward_margin": last.get("rewards/margins"),
        "seconds": round(seconds, 1),
        "processes": trainer.accelerator.num_processes,
    }


def train_dpo(
    pairs: Sequence[Pair],
    model_path: str,
    *,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    out_dir: Path,
    seed: int,
    log_file: Path | None = None,
) -> dict[str, Any] | None:
    """Train on `pairs` starting from `model_path`. Rank 0 (the only process, without a
    launcher) saves the result to `out_dir` (a HF checkpoint with its tokenizer) and returns a
    summary of the training logs with a `ranks` entry (each rank's pair ids and weight
    digest); the other ranks return None. The trainer's log dicts go to `log_file`."""
    from accelerate.utils import gather_object

    work = out_dir.with_name(out_dir.name + ".work")
    # the scratch of a training that was killed or stopped by a bad loss is never reused: its
    # epoch checkpoints would pass for this training's
    if rank() == 0:  # before any process opens it (the trainer's args do not)
        shutil.rmtree(work, ignore_errors=True)
    trainer, recorder, tokenizer = _trainer(
        pairs, model_path, model_cfg=model_cfg, cfg=cfg, work=work, seed=seed, log_file=log_file
    )
    started = time.time()
    result = trainer.train()
    seconds = time.time() - started
    try:
        check_losses(trainer, result, cfg.learning_rate)
    except TrainError:
        if trainer.accelerator.is_main_process:
            shutil.rmtree(work, ignore_errors=True)  # nothing of it may be loaded
        raise
    acc = trainer.accelerator
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    own = None if sharded else weights_digest(acc.unwrap_model(trainer.model))
    mine = {"rank": acc.process_index, "pair_ids": recorder.pair_ids, "weights_sha256": own}
    ranks = sorted(gather_object([mine]), key=lambda r: r["rank"])
    saved = save_model(trainer, model_path, tokenizer, cfg, model_cfg, out_dir)
    if not acc.is_main_process:
        return None
    if cfg.select_checkpoint:
        epochs = collect_epochs(work, out_dir, model_path, tokenizer, cfg, model_cfg)
    shutil.rmtree(work, ignore_errors=True)
    summary = _summary(trainer, result, len(pairs), seconds)
    if cfg.select_checkpoint:
        summary["epochs"] = epochs
    del trainer, acc
    if pick_device(model_cfg.device) == "cuda":
        import torch

        torch.cuda.empty_cache()
    return {**summary, "weights_sha256": saved, "ranks": ranks}
