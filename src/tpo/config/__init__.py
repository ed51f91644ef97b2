"""Run configuration: the sections (`sections.py`, with
`generation.py` and `judge.py`) and how YAML becomes them (`loading.py`).

>>> from tpo.config import load_config
>>> load_config(preset="tiny", overrides=["generation.num_samples=3"]).generation.num_samples
3
"""

from tpo.config.fields import ConfigError
from tpo.config.generation import (
    EndpointConfig,
    GenerationConfig,
    NativeConfig,
    OpenAIGenerationConfig,
    VLLMConfig,
)
from tpo.config.judge import JudgeConfig, LLMJudgeConfig, PairwiseConfig, RewardModelConfig
from tpo.config.loading import (
    config_from_dict,
    expand_shorthands,
    load_config,
    merge,
    parse_override,
    preset_names,
    read_preset,
    read_yaml,
    reference,
    stored_config,
)
from tpo.config.sections import (
    EvalConfig,
    ModelConfig,
    PairsConfig,
    PromptConfig,
    RunConfig,
    TrainConfig,
)
from tpo.config.sources import DataConfig, SourceConfig, SynthConfig

__all__ = [
    "ConfigError",
    "DataConfig",
    "EndpointConfig",
    "EvalConfig",
    "GenerationConfig",
    "JudgeConfig",
    "LLMJudgeConfig",
    "ModelConfig",
    "NativeConfig",
    "OpenAIGenerationConfig",
    "PairsConfig",
    "PairwiseConfig",
    "PromptConfig",
    "RewardModelConfig",
    "RunConfig",
    "SourceConfig",
    "SynthConfig",
    "TrainConfig",
    "VLLMConfig",
    "config_from_dict",
    "expand_shorthands",
    "load_config",
    "merge",
    "parse_override",
    "preset_names",
    "read_preset",
    "read_yaml",
    "reference",
    "stored_config",
]
