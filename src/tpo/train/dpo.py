"""The train stage: M_t learns from its own preference pairs with DPO (TRL's stable
`DPOTrainer`), giving M_{t+1}.

The reference model is M_t itself, and TRL precomputes its log-probs once before training,
so no second copy is kept and no step pays a second forward pass (with LoRA, computing them
per step with the adapter switched off made steps ~1.4x slower here). LoRA adapters are merged
before saving, so every iteration's checkpoint is a plain Hugging Face model.
The optional NLL term is TRL's `loss_type=["sigmoid", "sft"]` with `loss_weights=[1, w]`.

TRL's defaults `bf16=True` and `gradient_checkpointing=True` are always set explicitly from
the config, since neither suits every machine (bf16 needs hardware support).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tpo.config import ModelConfig, TrainConfig
from tpo.console import log, stage_done
from tpo.generate import GeneratorSource
from tpo.models import load_model, load_tokenizer, pick_device
from tpo.records import Pair
from tpo.seeds import derive_seed
from tpo.store import RunDir, read_jsonl


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
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        disable_tqdm=False,
        dataloader_num_workers=0,
    )


def train_dpo(
    pairs: Sequence[Pair],
    model_path: str,
    *,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    out_dir: Path,
    seed: int,
) -> dict[str, Any]:
    """Train on `pairs` starting from `model_path`; save the result to `out_dir` (a HF
    checkpoint with its tokenizer) and return a summary of the training logs."""
    from datasets import Dataset
    from trl import DPOTrainer

    device = pick_device(model_cfg.device)
    tokenizer = load_tokenizer(model_path, model_cfg.trust_remote_code)
    model = load_model(model_path, model_cfg.dtype, device, model_cfg.trust_remote_code)
    peft_config = None
    if cfg.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    dataset = Dataset.from_list(
        [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    )
    work = out_dir.with_name(out_dir.name + ".work")
    started = time.time()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    trainer = DPOTrainer(
        model=model,
        args=_dpo_args(cfg, work, seed, device),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    result = trainer.train()
    trained: Any = trainer.model
    if cfg.method == "lora":
        trained = trained.merge_and_unload()
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    trained.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    shutil.rmtree(work, ignore_errors=True)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    last = logs[-1] if logs else {}
    del trainer, model, trained
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
    return {
        "pairs": len(pairs),
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "first_loss": logs[0]["loss"] if logs else None,
        "final_loss": last.get("loss"),
        "final_reward_accuracy": last.get("rewards/accuracies"),
        "final_reward_margin": last.get("rewards/margins"),
        "seconds": round(time.time() - started, 1),
    }


def train_model(run: RunDir, models: GeneratorSource, *, arm: str, iteration: int) -> None:
    """The train stage of one arm and iteration: M_{t-1} + pairs.jsonl -> ARM/iter_T/model.
    No pairs at all carries M_{t-1} forward, recorded as skipped."""
    if run.is_done("train", arm, iteration):
        return
    d = run.iter_dir(arm, iteration)
    built = read_jsonl(d / "pairs.jsonl", Pair.from_dict)
    if not built:
        log(f"{arm} iteration {iteration}: no pairs formed; the model is carried over untrained")
        stage_done(run, "train", arm, iteration, skipped="no pairs", pairs=0)
        return
    models.release()  # training loads its own copy
    summary = train_dpo(
        built,
        run.model_path(arm, iteration - 1),
        model_cfg=run.config.model,
        cfg=run.config.train,
        out_dir=d / "model",
        seed=derive_seed(run.config.seed, "train", arm, iteration),
    )
    stage_done(run, "train", arm, iteration, **summary)
