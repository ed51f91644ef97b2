"""Run configuration: the sections (`sections.py`) and how YAML becomes them (`loading.py`).

>>> from tpo.config import load_config
>>> load_config(preset="tiny", overrides=["generation.num_samples=3"]).generation.num_samples
3
"""

from tpo.config.loading import (
    config_from_dict,
    load_config,
    merge,
    parse_override,
    preset_names,
    read_preset,
    read_yaml,
    reference,
)
from tpo.config.sections import (
    ConfigError,
    DataConfig,
    EndpointConfig,
    EvalConfig,
    GenerationConfig,
    JudgeConfig,
    LLMJudgeConfig,
    ModelConfig,
    OpenAIGenerationConfig,
    PairsConfig,
    PairwiseConfig,
    PromptConfig,
    RewardModelConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "EndpointConfig",
    "EvalConfig",
    "GenerationConfig",
    "JudgeConfig",
    "LLMJudgeConfig",
    "ModelConfig",
    "OpenAIGenerationConfig",
    "PairsConfig",
    "PairwiseConfig",
    "PromptConfig",
    "RewardModelConfig",
    "RunConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "merge",
    "parse_override",
    "preset_names",
    "read_preset",
    "read_yaml",
    "reference",
]
