"""Typed configuration loaded from YAML with dotted CLI overrides."""

from .load import dump_config, load_config
from .method import Method
from .schema import Config, DataConfig, EvalConfig, LoraConfig, ModelConfig, TrainConfig

__all__ = ["Config", "DataConfig", "EvalConfig", "LoraConfig", "Method", "ModelConfig", "TrainConfig",
           "dump_config", "load_config"]
