"""Synthetic LoRA task adapters in the LLaVA task-folder layout, for tests, the example and
the benchmarks (no model or data download needed).

Factors look like trained LoRA factors: each lora_A row is uniform in ±1/sqrt(d_in) times a
per-row log-normal scale, plus sparse heavy-tailed entries; each lora_B column is Gaussian
with its own scale. Tasks share a common component (``shared``) so merges have something
in common to keep.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from .taskfolder import FolderWriter, lora_key, peft_name, write_folder

PROJ = (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
        ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"))


@dataclass(frozen=True)
class LlamaShape:
    """The sizes of a LLaVA-1.5 language model (defaults: the tiny model of ``llava.model.tiny``).

    ``layers``, ``hidden``, ``intermediate`` and ``mm_hidden`` shape the LoRA factors and the
    projector; ``heads``, ``vocab``, ``max_positions`` and ``tower`` only go into the task
    folders' model config (``taskfolder.MODEL_CONFIG``).
    """

    layers: int = 2
    hidden: int = 64
    intermediate: int = 128
    mm_hidden: int = 64
    heads: int = 4
    vocab: int = 512
    max_positions: int = 512
    tower: str = "clip-tiny"

    def modules(self) -> list[tuple[str, int, int]]:
        """(module name, d_in, d_out) in LLaVA's key order."""
        h, i = self.hidden, self.intermediate
        dims = {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        return [(peft_name(f"model.layers.{layer}.{block}.{proj}"), *dims[proj])
                for layer in range(self.layers) for block, proj in PROJ]

    def projector(self) -> list[tuple[str, tuple[int, ...]]]:
        p, h = peft_name("model.mm_projector"), self.hidden
        return [(f"{p}.0.weight", (h, self.mm_hidden)), (f"{p}.0.bias", (h,)),
                (f"{p}.2.weight", (h, h)), (f"{p}.2.bias", (h,))]


LLAVA_7B = LlamaShape(layers=32, hidden=4096, intermediate=11008, mm_hidden=1024, heads=32, vocab=32000,
                      max_positions=4096, tower="openai/clip-vit-large-patch14-336")


def llava_run_config(shape: LlamaShape, dtype: torch.dtype = torch.float16) -> dict:
    """The model config LLaVA-1.5's train.py writes into a LoRA task folder (the LlavaConfig of
    the run: Llama fields + every ``mm_*`` setting), here for ``shape``."""
    return {
        "_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"], "bos_token_id": 1,
        "eos_token_id": 2, "freeze_mm_mlp_adapter": False, "hidden_act": "silu", "hidden_size": shape.hidden,
        "image_aspect_ratio": "pad", "initializer_range": 0.02, "intermediate_size": shape.intermediate,
        "max_position_embeddings": shape.max_positions, "mm_hidden_size": shape.mm_hidden,
        "mm_patch_merge_type": "flat", "mm_projector_lr": 2e-05, "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False, "mm_use_im_start_end": False, "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2, "mm_vision_tower": shape.tower, "model_type": "llava_llama",
        "num_attention_heads": shape.heads, "num_hidden_layers": shape.layers, "num_key_value_heads": shape.heads,
        "pad_token_id": 0, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "tokenizer_model_max_length": min(2048, shape.max_positions),
        "tokenizer_padding_side": "right", "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": "4.37.2", "tune_mm_mlp_adapter": False, "use_cache": True, "use_mm_proj": True,
        "vocab_size": shape.vocab,
    }  # fmt: skip


def lora_factors(d_in: int, d_out: int, r: int, gen: torch.Generator, shared: tuple | None = None,
                 share: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """One module's (A [r, d_in], B [d_out, r]) float32, optionally mixed with a shared pair."""
    bound = d_in ** -0.5
    row_scale = torch.exp(0.3 * torch.randn(r, 1, generator=gen))
    a = (torch.rand(r, d_in, generator=gen) * 2 - 1) * bound * row_scale
    density = 0.01 + 0.24 * torch.rand(r, 1, generator=gen)
    u = torch.rand(r, d_in, generator=gen) - 0.5
    laplace = -1.5 * bound * torch.sign(u) * torch.log1p(-2 * u.abs().clamp(max=0.4999999))  # Laplace(0, 1.5·bound)
    spikes = (torch.rand(r, d_in, generator=gen) < density) * laplace
    a = a + spikes
    col_scale = 10 ** (-3.3 + 1.6 * torch.rand(1, r, generator=gen))
    b = torch.randn(d_out, r, generator=gen) * col_scale
    if shared is not None:
        a = share * shared[0] + (1 - share) * a
        b = share * shared[1] + (1 - share) * b
    return a, b


def write_task_adapters(root: Path, n_tasks: int, shape: LlamaShape = LlamaShape(), r: int = 8, alpha: float = 16,
                        dtype: torch.dtype = torch.float32, seed: int = 0, fmt: str = "safetensors",
                        with_extras: bool = True, share: float = 0.5, names: list[str] | None = None) -> list[Path]:
    """Write ``n_tasks`` LLaVA LoRA task folders under ``root``; returns their paths.

    Modules are generated one at a time (the shared component once for all tasks) and
    streamed into every task's safetensors file, so 7B-shaped sets need little memory.
    ``fmt='bin'`` writes the legacy torch pickle instead.
    """
    if fmt not in ("safetensors", "bin"):
        raise ValueError(f"fmt must be 'safetensors' or 'bin', not {fmt!r}")
    names = names or [f"task{n}" for n in range(n_tasks)]
    folders = [Path(root) / name for name in names]
    with ExitStack() as stack:  # every folder appears whole, or none on failure
        writers = [stack.enter_context(write_folder(f)) for f in folders]
        _write_factors(writers, shape, r, dtype, seed, fmt, share)
        for task, writer in enumerate(writers):
            _write_side_files(writer, task, shape, r, alpha, dtype, seed, with_extras)
    return folders


def _write_factors(writers: list[FolderWriter], shape: LlamaShape, r: int, dtype: torch.dtype, seed: int, fmt: str,
                   share: float) -> None:
    """Generate the LoRA factors module by module, streamed into every task's weight file."""
    layout = [(lora_key(name, f), (r, d_in) if f == "A" else (d_out, r), dtype)
              for name, d_in, d_out in shape.modules() for f in "AB"]
    streams = [w.lora_stream(layout) for w in writers] if fmt == "safetensors" else None
    states: list[dict] = [{} for _ in writers]
    for m, (name, d_in, d_out) in enumerate(shape.modules()):
        shared_gen = torch.Generator().manual_seed(seed * 1_000_003 + m)
        shared = lora_factors(d_in, d_out, r, shared_gen) if share > 0 else None
        for task in range(len(writers)):
            gen = torch.Generator().manual_seed((seed + 1) * 1_000_033 + task * 10_007 + m)
            a, b = lora_factors(d_in, d_out, r, gen, shared, share)
            for key, t in ((lora_key(name, "A"), a.to(dtype)), (lora_key(name, "B"), b.to(dtype))):
                if streams:
                    streams[task].write(key, t)
                else:
                    states[task][key] = t
    for task, writer in enumerate(writers):
        if streams:
            streams[task].close()
        else:
            writer.lora(states[task], fmt="bin")


def _write_side_files(writer: FolderWriter, task: int, shape: LlamaShape, r: int, alpha: float, dtype: torch.dtype,
                      seed: int, with_extras: bool) -> None:
    if with_extras:
        gen = torch.Generator().manual_seed(seed * 31 + 17)
        tgen = torch.Generator().manual_seed(seed * 31 + 1000 + task)
        extras = {k: (0.05 * torch.randn(s, generator=gen) + 0.01 * torch.randn(s, generator=tgen)).to(dtype)
                  for k, s in shape.projector()}
        writer.projector(extras)
    config = {
        "base_model_name_or_path": "llava-v1.5-tiny", "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "lora_alpha": alpha, "lora_dropout": 0.05,
        "modules_to_save": None, "peft_type": "LORA", "r": r, "revision": None,
        "target_modules": [p for _, p in PROJ], "task_type": "CAUSAL_LM",
    }
    writer.adapter_config(config)
    writer.model_config(llava_run_config(shape), sort_keys=False)
