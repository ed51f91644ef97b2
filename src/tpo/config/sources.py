"""Config sections for instructions: where they come from (`SourceConfig`), how a run cuts them
(`DataConfig`), and how `tpo synth` makes new ones (`SynthConfig`).

A source is written as its path alone (`data.train: my.jsonl`, `data.train: hf:NAME`) or as a
mapping with the settings a table or hub dataset needs (split, columns, length limits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tpo.config.fields import opt, require, section


@dataclass(frozen=True)
class SourceConfig:
    shorthand: ClassVar[str] = "path"

    path: str = opt(
        "builtin:train",
        "builtin:NAME | a file (.jsonl, .json, .csv, .parquet) | a directory (Parquet shards in "
        "the hub's layout, or one written by datasets' save_to_disk) | hf:NAME (a Hugging Face "
        "dataset, e.g. hf:HuggingFaceH4/ultrafeedback_binarized).",
    )
    split: str = opt("train", "Split of an hf: dataset, a directory or a saved DatasetDict.")
    config_name: str | None = opt(None, "Configuration (subset) of an hf: dataset or directory.")
    text_column: str | None = opt(
        None, "Column of the instruction; null = text, instruction or prompt, whichever exists."
    )
    id_column: str | None = opt(
        None, "Column of unique ids; null = id when it exists, else NAME-ROW from the source."
    )
    category_column: str | None = opt(None, "Column of the category; null = category if any.")
    reference_column: str | None = opt(
        None, "Column of the reference answer (math judge); null = reference if any."
    )
    constraints_column: str | None = opt(
        None, "Column of verifiable constraints (a list, or its JSON); null = constraints if any."
    )
    min_chars: int = opt(1, "Drop instructions shorter than this many characters.")
    max_chars: int | None = opt(None, "Drop instructions longer than this; null = no limit.")

    def __post_init__(self) -> None:
        require(bool(self.path.strip()), "path", "must not be empty")
        if self.path.startswith("hf:"):
            require(len(self.path) > 3, "path", "hf: needs a dataset name, e.g. hf:org/name")
        require(bool(self.split), "split", "must not be empty")
        require(self.min_chars >= 0, "min_chars", "must be >= 0")
        require(
            self.max_chars is None or self.max_chars >= max(self.min_chars, 1),
            "max_chars",
            "must be >= min_chars and >= 1, or null",
        )
        for name in ("text", "id", "category", "reference", "constraints"):
            value = getattr(self, f"{name}_column")
            require(value is None or bool(value), f"{name}_column", "empty; null = automatic")

    @property
    def mapped(self) -> bool:
        """Whether any column is named (a table, read by columns, not an instruction file)."""
        return any(
            getattr(self, f"{n}_column") is not None
            for n in ("text", "id", "category", "reference", "constraints")
        )


@dataclass(frozen=True)
class DataConfig:
    train: SourceConfig = section(SourceConfig, "training source")
    heldout: SourceConfig = section(
        SourceConfig,
        "The held-out source, with the keys of data.train; path `same` cuts the held-out slice "
        "from data.train's source instead, disjoint from the training slices.",
        like="data.train",
        path="builtin:heldout",
    )
    instructions_per_iteration: int = opt(
        32, "Fresh training instructions used in each iteration (never reused)."
    )
    heldout_size: int = opt(48, "Held-out instructions evaluated after each iteration.")
    validation_size: int = opt(
        0,
        "Validation instructions cut from data.train's source, disjoint from the training and "
        "held-out slices, frozen in data/validation.jsonl (paper: 1500, to pick checkpoints).",
    )

    def __post_init__(self) -> None:
        require(self.instructions_per_iteration >= 1, "instructions_per_iteration", ">= 1")
        require(self.heldout_size >= 1, "heldout_size", "must be >= 1")
        require(self.validation_size >= 0, "validation_size", "must be >= 0")
        require(self.train.path != "same", "train.path", "'same' is only for data.heldout")


@dataclass(frozen=True)
class SynthConfig:
    seeds: SourceConfig = section(
        SourceConfig,
        "The seed instructions whose examples prompt the LLM, with the keys of data.train.",
        like="data.train",
    )
    model: str | None = opt(
        None, "The LLM that writes new instructions (HF id or path); null = model.name_or_path."
    )
    num_instructions: int = opt(1000, "New instructions to write.")
    shots: int = opt(
        8, "Seed examples shown in each prompt, drawn at random (PAPER.md gives no number)."
    )
    temperature: float = opt(1.0, "Sampling temperature of the LLM.")
    top_p: float = opt(0.95, "Top-p of the LLM.")
    max_new_tokens: int = opt(256, "Most tokens of one written instruction.")
    batch_size: int = opt(16, "Prompts per generation batch (one batch is one resume step).")
    drop_unfinished: bool = opt(
        True, "Reject an answer the LLM did not end within max_new_tokens (cut off mid-way)."
    )
    min_chars: int = opt(16, "Reject instructions shorter than this many characters.")
    max_chars: int = opt(2000, "Reject instructions longer than this many characters.")
    max_similarity: float = opt(
        0.6,
        "Reject an instruction whose word-bigram Jaccard similarity with a seed or an accepted "
        "instruction reaches this (near-duplicates); 1 = only identical bigram sets.",
    )
    max_candidates: int | None = opt(
        None, "Stop after this many written candidates; null = 20 x num_instructions."
    )

    def __post_init__(self) -> None:
        require(self.model is None or bool(self.model), "model", "empty; null = model.name_or_path")
        require(self.num_instructions >= 1, "num_instructions", "must be >= 1")
        require(self.shots >= 1, "shots", "must be >= 1")
        require(self.temperature > 0, "temperature", "must be > 0 (sampling)")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.min_chars >= 1, "min_chars", "must be >= 1")
        require(self.max_chars >= self.min_chars, "max_chars", "must be >= min_chars")
        require(0 < self.max_similarity <= 1, "max_similarity", "must be in (0, 1]")
        require(self.seeds.path != "same", "seeds.path", "'same' is only for data.heldout")
        require(
            self.max_candidates is None or self.max_candidates >= self.num_instructions,
            "max_candidates",
            "must be >= num_instructions, or null",
        )
