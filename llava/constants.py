"""Constants shared by the LLaVA model, prompts and data code (same names as upstream LLaVA)."""

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200  # placeholder id spliced out by the model, never seen by the embedding
DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"
IMAGE_PLACEHOLDER = "<image-placeholder>"
