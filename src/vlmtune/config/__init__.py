"""Typed configuration loaded from YAML with dotted CLI overrides."""

from .load import dump_config, load_config
from .schema import Config, DataConfig, EvalConfig, LoraConfig, ModelConfig, TrainConfig

__all__ = ["Config", "DataConfig", "EvalConfig", "LoraConfig", "ModelConfig", "TrainConfig",
           "dump_config", "load_config"]
