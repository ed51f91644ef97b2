"""What every config section is made of: `opt` (a field with its doc), `section` (a nested
section), `require` (a check naming its key) and the one error they raise.

A section may be written as one string where a mapping is expected (`data.train: my.jsonl`):
its class names the field that string fills in `shorthand` (a `ClassVar`), and the loader
expands it before merging, so `--set data.train.split=test` still lands on top of it.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

DTYPES = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A configuration value, key or file is wrong; the message is one line for the user."""


def opt(default: Any, doc: str) -> Any:
    """A dataclass field with a default and a doc string."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


def section(cls: type, doc: str, like: str | None = None, **values: Any) -> Any:
    """A field holding a nested section. Below the top level, `doc` says what its keys serve
    ("type reward_model", "backend openai") and leads each of their rows in the reference.
    `like` names another place with the same keys (`eval_judge` is like `judge`): the reference
    then shows this section's first key and one row pointing there, not every key twice."""
    metadata = {"doc": doc, "like": like}
    return field(default_factory=lambda: cls(**values), metadata=metadata)


def require(cond: bool, key: str, message: str) -> None:
    """Raise `ConfigError("key: message")` unless `cond`; `key` is relative to the section."""
    if not cond:
        raise ConfigError(f"{key}: {message}")
