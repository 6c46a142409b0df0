"""Vision encoders: the CLIP tower LLaVA-1.5 uses, loaded from a local folder."""
