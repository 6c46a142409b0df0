"""LLaVA's ``train_mem.py`` entry point: the same training, preferring flash-attention.

The original patched Llama's attention here; transformers 5 selects the kernel instead:
``flash_attention_2`` when flash-attn is importable and a GPU is present, else ``sdpa``.
``--attn_implementation`` on the command line still wins.

    deepspeed llava/train/train_mem.py --deepspeed scripts/zero3.json ...
    torchrun --nproc_per_node 8 -m llava.train.train_mem ...
"""

from __future__ import annotations

import sys

from llava.train.train import default_attn_implementation, main

if __name__ == "__main__":
    sys.exit(main(attn_implementation=default_attn_implementation(prefer_flash=True)))
