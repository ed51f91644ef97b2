"""From YAML to `RunConfig`: presets, files and `--set` overrides merged as plain dicts, then
turned into the frozen sections once, each value checked against its field's declared type.

Every error is one line naming the key where the user wrote it (`eval_judge.llm.model`) and,
when known, the file it came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from tpo.config.fields import ConfigError, require
from tpo.config.judge import JudgeConfig
from tpo.config.sections import RunConfig

T = TypeVar("T")

# Keys of the flat judge section before each judge type had its own; named in the error.
MOVED: dict[tuple[type, str], str] = {
    (JudgeConfig, "model"): "llm.model (pairwise, pointwise) or reward_model.model",
    (JudgeConfig, "backend"): "llm.backend",
    (JudgeConfig, "max_new_tokens"): "llm.max_new_tokens",
    (JudgeConfig, "pairs_per_sample"): "pairwise.pairs_per_sample",
    (JudgeConfig, "max_length"): "reward_model.max_length",
    **{
        (JudgeConfig, key): f"llm.openai.{key}"
        for key in ("base_url", "api_key_env", "concurrency", "max_retries", "retry_backoff_s")
    },
    (JudgeConfig, "timeout_s"): "llm.openai.timeout_s",
    **{
        (JudgeConfig, key): f"llm.{key} or reward_model.{key}"
        for key in ("batch_size", "dtype", "device", "trust_remote_code")
    },
}


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` as the declared type `hint` (str, int, float, bool, list[X], dict[str, section],
    or X | None); a ConfigError naming `key` when it is not one."""
    if get_origin(hint) in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            require(len(options) < len(get_args(hint)), key, "must not be null")
            return None
        assert len(options) == 1, f"{key}: only `X | None` unions are supported"
        return _coerce(value, options[0], key)
    require(value is not None, key, "must not be null")
    if get_origin(hint) is list:
        (item,) = get_args(hint)
        if isinstance(value, str) and item is str:  # --set arms=tpo,direct
            value = [v.strip() for v in value.split(",") if v.strip()]
        require(isinstance(value, list), key, f"expected a list, got {value!r}")
        return [_coerce(v, item, key) for v in value]
    if get_origin(hint) is dict:  # arm_prompts: name -> a section
        _, item = get_args(hint)
        require(isinstance(value, dict), key, f"expected a mapping of names, got {value!r}")
        return {str(name): _build(item, v, f"{key}.{name}.") for name, v in value.items()}
    if hint is bool:
        require(isinstance(value, bool), key, f"expected true/false, got {value!r}")
    elif hint is int:
        require(
            isinstance(value, int) and not isinstance(value, bool),
            key,
            f"expected an integer, got {value!r}",
        )
    elif hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        require(
            isinstance(value, int | float) and not isinstance(value, bool),
            key,
            f"expected a number, got {value!r}",
        )
        value = float(value)
    elif hint is str:
        require(isinstance(value, str), key, f"expected a string, got {value!r}")
    else:
        raise TypeError(f"{key}: no coercion for the type {hint!r}")
    return value


def _unknown_key(cls: type, key: str, fields: list[str], prefix: str) -> ConfigError:
    moved = MOVED.get((cls, key))
    if moved:
        return ConfigError(f"unknown config key '{prefix}{key}' (now {prefix}{moved})")
    close = difflib.get_close_matches(str(key), fields, n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    name = f"{prefix}{key}"
    shown = f"'{name}'" if name.isprintable() else repr(name)  # one line, whatever the key
    return ConfigError(f"unknown config key {shown}{hint}")


def expand_shorthands(cls: type, data: Any) -> Any:
    """`data` with every section written as one string turned into its mapping
    (`{"train": "x.jsonl"}` -> `{"train": {"path": "x.jsonl"}}`), so layers merge key by key.

    >>> expand_shorthands(RunConfig, {"data": {"train": "hf:org/set"}, "seed": 1})
    {'data': {'train': {'path': 'hf:org/set'}}, 'seed': 1}
    """
    shorthand = getattr(cls, "shorthand", None)
    if isinstance(data, str) and shorthand:
        return {shorthand: data}
    if not isinstance(data, dict):
        return data
    hints = get_type_hints(cls)
    return {
        key: expand_shorthands(hints[key], value)
        if key in hints and dataclasses.is_dataclass(hints[key])
        else value
        for key, value in data.items()
    }


def _build(cls: type[T], data: Any, prefix: str, default: Any = None) -> T:
    """`cls` from a mapping, over `default` (the instance the field defaults to, so a section
    takes the defaults of the place it sits in). Errors get `prefix` in front of their key."""
    where = prefix.rstrip(".") or "config"
    if data is None:
        data = {}
    data = expand_shorthands(cls, data)
    require(isinstance(data, dict), where, f"expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(cls, str(key), list(fields), prefix)
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            sub = getattr(default, key) if default is not None else None
            factory = fields[key].default_factory
            if sub is None and factory is not dataclasses.MISSING:
                sub = factory()
            kwargs[key] = _build(hint, value, f"{prefix}{key}.", sub)  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    try:
        return dataclasses.replace(default, **kwargs) if default is not None else cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}{exc}") from None


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    return _build(RunConfig, data, "")


_LLM_KEYS = ("backend", "max_new_tokens")
_ENDPOINT_KEYS = ("base_url", "api_key_env", "concurrency", "max_retries", "retry_backoff_s")
_LOCAL_KEYS = ("batch_size", "dtype", "device", "trust_remote_code")


def _sections_of_flat_judge(flat: dict[str, Any]) -> dict[str, Any]:
    """A judge section as run directories made before tpo 0.2 saved it (every setting flat)
    in today's shape: each setting moved to the section of the judge it served."""
    out: dict[str, Any] = {k: flat[k] for k in ("type", "cache", "cache_path") if k in flat}
    llm = {k: flat[k] for k in (*_LLM_KEYS, *_LOCAL_KEYS) if k in flat}
    llm["openai"] = {k: flat[k] for k in (*_ENDPOINT_KEYS, "timeout_s") if k in flat}
    reward = {k: flat[k] for k in (*_LOCAL_KEYS, "max_length") if k in flat}
    if flat.get("model") is not None:
        (reward if flat.get("type") == "reward_model" else llm)["model"] = flat["model"]
    out["llm"], out["reward_model"] = llm, reward
    if "pairs_per_sample" in flat:
        out["pairwise"] = {"pairs_per_sample": flat["pairs_per_sample"]}
    return out


def stored_config(data: dict[str, Any]) -> RunConfig:
    """The config a run directory saved in config.yaml, including one saved by an earlier
    version (its flat judge keys are moved to today's sections), so old runs still resume."""
    data = dict(data)
    for name in ("judge", "eval_judge"):
        section = data.get(name)
        if isinstance(section, dict) and any(key in section for key in _ENDPOINT_KEYS):
            data[name] = _sections_of_flat_judge(section)
    return config_from_dict(data)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, mappings merged key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return data


def preset_names() -> list[str]:
    files = resources.files("tpo.presets").iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise ConfigError(f"unknown preset '{name}' (available: {', '.join(preset_names())})")
    text = resources.files("tpo.presets").joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def parse_override(item: str) -> dict[str, Any]:
    """`a.b=c` -> {"a": {"b": c}}, the value read as YAML (so 3, 0.5, true, null work).

    >>> parse_override("generation.thought_budget=null")
    {'generation': {'thought_budget': None}}

    A value in braces without a colon is text, not YAML's flow mapping of null keys: a
    `{model}` template stays the string it was written as.

    >>> parse_override("model.name_or_path={model}")
    {'model': {'name_or_path': '{model}'}}
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: the key {key!r} has an empty part")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, dict) and value and ":" not in raw:  # no colon: every value is null
        value = raw  # `{model}`: a template, never a mapping of null keys
    out: dict[str, Any] = {}
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(
    config: str | Path | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Preset (default `embedded`), then a YAML file, then `--set` overrides, in that order."""
    layers = [read_preset(preset or "embedded")] if config is None or preset else []
    source = f"preset {preset or 'embedded'}"
    if config is not None:
        layers.append(read_yaml(config))
        source = str(config)
    layers += [parse_override(item) for item in overrides or []]
    data: dict[str, Any] = {}
    for layer in layers:
        data = merge(data, expand_shorthands(RunConfig, layer))
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def reference() -> str:
    """Markdown table of every key, its default and its doc (for README and `tpo config`).
    Keys of a nested section carry what they serve in brackets ("[type pairwise, pointwise;
    backend openai]"); a section with the keys of another (`eval_judge` like `judge`,
    `data.heldout` like `data.train`) gets one row for its first key and one for the rest."""
    rows = ["| key | default | meaning |", "|---|---|---|"]

    def walk(section: Any, prefix: str, tags: list[str]) -> None:  # over default instances,
        for f in dataclasses.fields(section):  # so a section's defaults are its place's
            default = getattr(section, f.name)
            doc = f.metadata.get("doc", "")
            like = f.metadata.get("like")
            if like:
                key, first = f"{prefix}{f.name}", dataclasses.fields(default)[0].name
                rows.append(f"| `{key}.{first}` | `{getattr(default, first)}` | {doc} |")
                rows.append(f"| `{key}.*` | as `{like}.*` | The {like}.* keys, for {key}. |")
            elif dataclasses.is_dataclass(default):
                walk(default, f"{prefix}{f.name}.", [*tags, doc] if prefix else tags)
            else:
                lead = f"[{'; '.join(tags)}] " if tags else ""
                rows.append(f"| `{prefix}{f.name}` | `{default}` | {lead}{doc} |")

    walk(RunConfig(), "", [])
    return "\n".join(rows)
