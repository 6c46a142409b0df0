"""Language-model backbones with the LLaVA splice (LLaVA-1.5: Llama / Vicuna)."""
