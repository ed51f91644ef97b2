"""SFT warm-up (`train.sft_warmup_epochs`): before the first DPO round, the seed learns the
thought format from the chosen outputs of iteration 1's pairs.

Why: a small seed almost never writes the response marker itself, so budget forcing writes it
for nearly every sample, chosen and rejected alike, and DPO sees no contrast that would teach
the model to end its own thought. Supervised fine-tuning on the chosen outputs (thought, the
marker, the response: what forcing produced) shows it the whole format first; DPO then starts
from, and is referenced to, the warmed-up model. The loss is TRL's `SFTTrainer` on
prompt-completion rows: NLL on the completion only (the prompt, with its prefilled thought
marker, is masked), EOS appended, as DPO does for text pairs. With `train.shared_prompt` (the
default) the trainer is `trainer.CompletionSFTTrainer`: the same loss from a lean forward (the
completion's logits only, rows one at a time on the CPU). It runs wherever DPO runs (in the
tpo process or in each launched one); rank 0 saves ARM/iter_1/sft_model/ with sft.json, which a
resumed stage adopts when it is for the same pairs.jsonl.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tpo.config import ModelConfig, TrainConfig
from tpo.models import load_model, load_tokenizer, pick_device
from tpo.records import Pair
from tpo.store import read_json, write_json


def _sft_args(cfg: TrainConfig, out: Path, seed: int, device: str) -> Any:
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.sft_learning_rate or cfg.learning_rate,
        num_train_epochs=cfg.sft_warmup_epochs,
        warmup_steps=cfg.warmup_ratio,
        max_length=cfg.max_length,
        completion_only_loss=True,
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        logging_steps=1,
        logging_nan_inf_filter=False,  # a NaN loss must show, to stop (train/guard.py)
        disable_tqdm=False,  # else transformers prints each log dict (PrinterCallback)
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
    )


def _rate_setting(cfg: TrainConfig) -> str:
    """The setting the warm-up's learning rate came from, for its error message."""
    return "train.sft_learning_rate" if cfg.sft_learning_rate else "train.learning_rate"


def _settings(cfg: TrainConfig, seed: int) -> dict[str, Any]:
    """What the warm-up's model depends on besides its pairs and seed model."""
    keys: tuple[str, ...] = ("method", "learning_rate", "sft_learning_rate", "sft_warmup_epochs")
    keys += ("batch_size",)
    keys += ("gradient_accumulation_steps", "max_length", "lora_r", "lora_alpha", "lora_dropout")
    keys += ("warmup_ratio", "bf16")
    return {k: getattr(cfg, k) for k in keys} | {"seed": seed}


def sft_warmup(
    pairs: Sequence[Pair],
    model_path: str,
    *,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    out_dir: Path,
    seed: int,
    pairs_sha256: str,
) -> str:
    """The warmed-up model's path: `out_dir`, trained now from `model_path` on the pairs'
    (prompt, chosen), or adopted when its sft.json names the same pairs file."""
    done = out_dir.with_name("sft.json")
    made = (out_dir / "config.json").is_file() and done.is_file()
    settings = _settings(cfg, seed)  # a rerun with other training settings warms up again
    record = read_json(done) if made else {}
    if made and (record.get("pairs_sha256"), record.get("settings")) == (pairs_sha256, settings):
        return str(out_dir)
    from accelerate import PartialState
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTTrainer

    from tpo.train.dpo import _lora, _quiet, save_model
    from tpo.train.guard import check_losses, finite_loss_callback
    from tpo.train.launch import TrainError
    from tpo.train.progress import TrainProgress
    from tpo.train.trainer import CompletionSFTTrainer

    device = pick_device(model_cfg.device)
    work = out_dir.with_name(out_dir.name + ".work")
    trust, pickle = model_cfg.trust_remote_code, model_cfg.allow_pickle
    with _quiet():  # one bar, as in DPO; the log dicts go to sft_log.jsonl
        args = _sft_args(cfg, work, seed, device)
        tokenizer = load_tokenizer(model_path, trust, pickle)
        model = load_model(  # trained on the CPU: its weights in memory of its own
            model_path, model_cfg.dtype, "cpu", trust, pickle, copy_weights=device == "cpu"
        )
        logging.getLogger("transformers").setLevel(logging.ERROR)
        rows = [{"prompt": p.prompt, "completion": p.chosen} for p in pairs]
        cls = CompletionSFTTrainer if cfg.shared_prompt else SFTTrainer
        trainer = cls(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=_lora(cfg) if cfg.method == "lora" else None,
            callbacks=[finite_loss_callback()],
        )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(TrainProgress(out_dir.with_name("sft_log.jsonl"), desc="SFT warm-up"))
    started = time.time()
    result = trainer.train()
    state = PartialState()
    try:  # a NaN or infinite loss: nothing is saved, DPO is not reached
        check_losses(trainer, result, args.learning_rate, "SFT", _rate_setting(cfg))
    except TrainError:
        if state.is_main_process:
            shutil.rmtree(work, ignore_errors=True)
        raise
    save_model(trainer, model_path, tokenizer, cfg, model_cfg, out_dir)
    if state.is_main_process:
        shutil.rmtree(work, ignore_errors=True)
        logs = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        summary = {
            "pairs": len(pairs),
            "steps": int(result.global_step),
            "first_loss": logs[0] if logs else None,
            "final_loss": logs[-1] if logs else None,
            "seconds": round(time.time() - started, 1),
            "pairs_sha256": pairs_sha256,
            "settings": settings,
        }
        write_json(done, summary)
    state.wait_for_everyone()
    return str(out_dir)


def warmup_summary(out_dir: Path) -> dict[str, Any]:
    """What the warm-up recorded (for train.json and the manifest), without the digest."""
    summary = dict(read_json(out_dir.with_name("sft.json")))
    summary.pop("pairs_sha256", None)
    summary.pop("settings", None)
    return summary
