"""Export a LoRA run for serving: a clean PEFT adapter folder with a model card, or the adapter merged into its base.

``adapter`` writes the adapter folder (``card`` renders its README.md, ``vllm`` checks that vLLM can serve it),
``merge`` writes the merged transformers checkpoint; ``folders`` holds the folder checks they share, ``settings`` the
image settings of the run that both record.
"""

from .adapter import export_adapter
from .card import model_card
from .folders import ADAPTER_FILES, require_adapter
from .merge import export_merged
from .settings import SETTINGS_FILE, ImageSettings
from .vllm import check_vllm_compatible

__all__ = ["ADAPTER_FILES", "SETTINGS_FILE", "ImageSettings", "check_vllm_compatible", "export_adapter",
           "export_merged", "model_card", "require_adapter"]
