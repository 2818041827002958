"""``tinyllm.models``: complete models built from ``tinyllm.nn``, and text generation.

One import line per module (re-exports; add yours below).
"""

# ruff: noqa: F401
from tinyllm.models.generation import (
    GenerationMixin,
    beam_search,
    generate,
    top_k_filter,
    top_p_filter,
)
from tinyllm.models.gpt import GPT, GPTConfig
from tinyllm.models.llama import Llama, LlamaConfig
from tinyllm.models.presets import PRESETS, preset_config
