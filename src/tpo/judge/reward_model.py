"""A pointwise reward-model judge: any Hugging Face sequence-classification reward model.

The paper's pointwise judge was ArmoRM-Llama3-8B, a reward model with one scalar output per
(instruction, response). Any checkpoint loadable with `AutoModelForSequenceClassification`
works: the conversation is written with the reward model's *own* chat template (a reward model
scores text formatted the way it was trained on, not the policy's format), or as a plain text
pair when its tokenizer has no template, and the first output is the score. Models that ship
their own code (ArmoRM's gating head, whose `score` output is the preference score) run only
with `judge.reward_model.trust_remote_code: true`.

A checkpoint that is not a reward model is refused in one line instead of being silently given
a random classification head (which is what transformers does for a causal LM): the config
must name a *ForSequenceClassification architecture, or map one in its custom code, and every
weight must load. Batches are sorted by length to waste little padding; long inputs are cut on
the left, so the end of the response, where the model reads its score, is kept. Scores are
cached by (model, max_length, instruction, response), and the model loads only when something
is not in the cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tpo.config import RewardModelConfig
from tpo.judge import JudgeError, JudgeItem, JudgeStats
from tpo.judge.cache import JudgeCache, cache_key
from tpo.models import first_line

CLASSIFIER_AUTO = "AutoModelForSequenceClassification"


def check_reward_model(name: str, config: dict[str, Any], trust_remote_code: bool) -> None:
    """Raise a one-line JudgeError unless `config` (a config.json dict) describes a
    sequence-classification model that we may load."""
    architectures = config.get("architectures") or []
    custom = CLASSIFIER_AUTO in (config.get("auto_map") or {})
    if custom and not trust_remote_code:
        raise JudgeError(
            f"reward model '{name}' ships its own code ({', '.join(architectures) or 'custom'}); "
            "set judge.reward_model.trust_remote_code: true if you trust it"
        )
    if not custom and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise JudgeError(
            f"'{name}' is not a sequence-classification reward model "
            f"(architecture: {', '.join(architectures) or 'unknown'})"
        )
    outputs = config.get("num_labels", len(config.get("id2label") or [0]))
    if not custom and outputs != 1:
        raise JudgeError(
            f"reward model '{name}' has {outputs} outputs; a reward judge needs one (num_labels: 1)"
        )


class RewardModelJudge:
    def __init__(self, cfg: RewardModelConfig, cache: JudgeCache | None = None):
        if not cfg.model:
            raise JudgeError("a reward_model judge needs judge.reward_model.model")
        self.model_name = cfg.model
        self.batch_size = cfg.batch_size
        self.max_length = cfg.max_length
        self.dtype = cfg.dtype
        self.device = cfg.device
        self.trust_remote_code = cfg.trust_remote_code
        self.allow_pickle = cfg.allow_pickle
        self.cache = cache
        self.stats = JudgeStats()
        self.identity = f"reward_model:{cfg.model}:max_length={cfg.max_length}"
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def name(self) -> str:
        return f"reward_model:{self.model_name}"

    def score(self, items: Sequence[JudgeItem]) -> list[float | None]:
        keys = [cache_key(self.identity, i.instruction.text, i.response) for i in items]
        found: dict[str, Any] = self.cache.get(keys) if self.cache is not None else {}
        self.stats.cached += sum(key in found for key in keys)
        todo = {key: item for key, item in zip(keys, items, strict=True) if key not in found}
        if todo:
            values = self._rewards(list(todo.values()))
            self.stats.calls += len(values)
            fresh = dict(zip(todo, values, strict=True))
            found.update(fresh)
            if self.cache is not None:
                self.cache.put({k: v for k, v in fresh.items() if v is not None})
        scores: list[float | None] = [found[key] for key in keys]
        return scores

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers import PretrainedConfig as Config

        from tpo.models import (
            ModelLoadError,
            check_checkpoint,
            hide_loading_bar,
            pick_device,
            resolve_model_path,
        )

        path = resolve_model_path(self.model_name)
        trust = self.trust_remote_code
        try:
            check_checkpoint(
                path,
                allow_pickle=self.allow_pickle,
                setting="judge.reward_model.allow_pickle: true",
            )
        except ModelLoadError as exc:
            raise JudgeError(f"reward model: {exc}") from None
        try:
            config, _ = Config.get_config_dict(path)
            check_reward_model(self.model_name, config, trust)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
            device = pick_device(self.device)
            dtype = (
                self.dtype
                if self.dtype != "auto"
                else "bfloat16"
                if device == "cuda"
                else "float32"
            )
            hide_loading_bar()
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path,
                dtype=getattr(torch, dtype),
                trust_remote_code=trust,
                output_loading_info=True,
                use_safetensors=None if self.allow_pickle else True,
            )
        except JudgeError:
            raise
        except Exception as exc:  # OSError, ValueError, HFValidationError, ImportError...
            raise JudgeError(
                f"cannot load reward model '{self.model_name}': {first_line(exc)}"
            ) from None
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise JudgeError(
                f"reward model '{self.model_name}' has no trained weights for "
                f"{', '.join(missing[:3])}: it is not a reward model checkpoint"
            )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        tokenizer.truncation_side = "left"
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self._model = model.to(device).eval()
        self._tokenizer = tokenizer

    def _encode(self, items: Sequence[JudgeItem]) -> Any:
        tok = self._tokenizer
        settings = {"padding": True, "truncation": True, "max_length": self.max_length}
        if tok.chat_template is None:
            return tok(
                [i.instruction.text for i in items],
                [str(i.response) for i in items],
                return_tensors="pt",
                **settings,
            )
        texts = [
            tok.apply_chat_template(
                [
                    {"role": "user", "content": i.instruction.text},
                    {"role": "assistant", "content": i.response},
                ],
                tokenize=False,
            )
            for i in items
        ]
        return tok(texts, add_special_tokens=False, return_tensors="pt", **settings)

    def _rewards(self, items: Sequence[JudgeItem]) -> list[float | None]:
        import torch

        self._load()
        order = sorted(
            range(len(items)), key=lambda k: len(items[k].instruction.text) + len(items[k].response)
        )
        out: list[float | None] = [None] * len(items)
        device = next(self._model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            try:
                batch = self._encode([items[k] for k in idx]).to(device)
            except Exception as exc:  # a chat template that raises, a broken tokenizer...
                raise JudgeError(
                    f"reward model '{self.model_name}': cannot format or tokenize a "
                    f"conversation with its tokenizer: {first_line(exc)}"
                ) from None
            try:
                with torch.inference_mode():
                    result = self._model(**batch)
            except torch.cuda.OutOfMemoryError:
                raise JudgeError(
                    f"reward model '{self.model_name}' ran out of GPU memory; lower "
                    "judge.reward_model.batch_size or max_length"
                ) from None
            except Exception as exc:  # e.g. inputs longer than the model's positions
                raise JudgeError(
                    f"reward model '{self.model_name}' failed on a batch: {first_line(exc)}"
                ) from None
            # custom reward models (ArmoRM) return the preference score as `score`
            score = result.get("score") if "score" in result else result["logits"]
            values = score.float().reshape(len(idx), -1)[:, 0].tolist()
            for k, value in zip(idx, values, strict=True):
                if math.isfinite(value):
                    out[k] = value
                else:
                    self.stats.failed += 1
                    self.stats.last_error = f"non-finite reward {value}"
        return out
