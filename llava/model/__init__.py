"""LLaVA-1.5 model classes; importing registers `llava_llama` with transformers' Auto classes."""

from llava.model.errors import LlavaLoadError
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM, LlavaLlamaModel

__all__ = ["LlavaConfig", "LlavaLlamaForCausalLM", "LlavaLlamaModel", "LlavaLoadError"]
