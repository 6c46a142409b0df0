"""`LLaVATrainer`: transformers' Trainer with LLaVA's sampler, optimizer groups and save layout.

- ``--group_by_modality_length``: batches hold samples of one modality (image or text-only)
  and similar length (:class:`LengthGroupedSampler`, LLaVA's megabatch scheme). The order is
  drawn from ``seed + epoch``, so a resumed run sees the same order.
- ``--mm_projector_lr``: the projector gets its own learning rate (its own parameter groups).
- Saving (final output and every ``checkpoint-N``) writes the LLaVA LoRA task-folder layout
  through ``robustmerge.taskfolder.update_folder``: the PEFT adapter config, the LoRA as
  safetensors (keys without adapter name), the projector file (keys
  ``base_model.model.model.mm_projector.*``), the model config (the LlavaConfig, readable by
  transformers 4.3x too) and PEFT's model card. The adapter config is moved in last, so a
  folder only looks like an adapter once it is complete. Resuming restores the projector from
  the projector file as well as the LoRA.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import Sampler
from transformers import Trainer

from robustmerge.taskfolder import PROJECTOR_FILE, read_tensors, update_folder

logger = logging.getLogger(__name__)

PROJECTOR_KEY = "mm_projector"


# ---------------------------------------------------------------- sampling


def split_to_even_chunks(indices: list[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    """Deal `indices` into `num_chunks` equal-size chunks, each time into the one with the least total length."""
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


def length_grouped_indices(
    lengths: Sequence[int], batch_size: int, world_size: int, generator: torch.Generator | None = None
) -> list[int]:
    """A random order in megabatches of ``world_size * batch_size``, each sorted longest first."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    size = world_size * batch_size
    out = []
    for start in range(0, len(lengths), size):
        mega = sorted(order[start : start + size], key=lambda i: lengths[i], reverse=True)
        out += [i for chunk in split_to_even_chunks(mega, lengths, world_size) for i in chunk]
    return out


def modality_length_grouped_indices(
    lengths: Sequence[int], batch_size: int, world_size: int, generator: torch.Generator | None = None
) -> list[int]:
    """Megabatches of one modality (length > 0: with image, < 0: text only), shuffled together.

    The two leftover partial megabatches are joined into one final megabatch, as in LLaVA.
    """
    if any(n == 0 for n in lengths):
        raise ValueError("a sample has length 0; every sample needs at least one word")
    if all(n > 0 for n in lengths) or all(n < 0 for n in lengths):
        return length_grouped_indices([abs(n) for n in lengths], batch_size, world_size, generator)
    mm = [(i, n) for i, n in enumerate(lengths) if n > 0]
    lang = [(i, -n) for i, n in enumerate(lengths) if n < 0]
    size = world_size * batch_size
    megabatches: list[list[int]] = []
    leftovers: list[int] = []
    for group in (mm, lang):
        idx, lens = zip(*group)
        shuffled = [idx[j] for j in length_grouped_indices(lens, batch_size, world_size, generator)]
        parts = [shuffled[s : s + size] for s in range(0, len(shuffled), size)]
        megabatches += parts[:-1]
        leftovers += parts[-1]
    order = torch.randperm(len(megabatches), generator=generator).tolist()
    megabatches = [megabatches[k] for k in order]
    if leftovers:
        megabatches.append(sorted(leftovers))
    return [i for mega in megabatches for i in mega]


class LengthGroupedSampler(Sampler):
    """LLaVA's length-grouped order (by modality when ``group_by_modality``), seeded per epoch.

    Args:
        batch_size: per-device batch size.
        world_size: processes times gradient-accumulation steps (one megabatch per optimizer step).
        lengths: per-sample lengths (negative = text only, with ``group_by_modality``).
        seed: base seed; epoch ``e`` uses ``seed + e`` (``set_epoch`` is called by the Trainer).
    """

    def __init__(
        self, batch_size: int, world_size: int, lengths: Sequence[int], seed: int = 0, group_by_modality: bool = True
    ):
        self.batch_size = batch_size
        self.world_size = world_size
        self.lengths = list(lengths)
        self.seed = seed
        self.group_by_modality = group_by_modality
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        group = modality_length_grouped_indices if self.group_by_modality else length_grouped_indices
        lengths = self.lengths if self.group_by_modality else [abs(n) for n in self.lengths]
        return iter(group(lengths, self.batch_size, self.world_size, generator))


# ---------------------------------------------------------------- saving


def split_trainables(model, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The non-LoRA trainable tensors (the projector) of `state_dict`, PeftModel key names.

    `state_dict` uses the PeftModel's names (``base_model.model.model.mm_projector.0.weight``).
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    missing = [n for n in names if n not in state_dict]
    if missing:
        raise RuntimeError(f"trainable weights missing from the state to save: {missing[:3]}")
    return {n: state_dict[n].detach().to("cpu").clone().contiguous() for n in names}


def save_task_folder(
    model, output_dir: str | Path, state_dict: dict[str, torch.Tensor] | None = None, write_bin: bool = False
) -> Path:
    """Write the LLaVA LoRA task-folder layout of a PeftModel around a LlavaLlamaForCausalLM.

    Args:
        model: the (unwrapped) PeftModel.
        output_dir: folder to write into (created; existing task files are replaced).
        state_dict: the model's state with PeftModel key names; gathered by the caller under
            ZeRO-3 (trainable weights only is enough); default ``model.state_dict()``.
        write_bin: also write the same LoRA tensors as the legacy ``.bin`` (torch.save), for
            PEFT < 0.5 such as the copy vendored by the original RobustMerge code.
    """
    from peft import get_peft_model_state_dict

    out = Path(output_dir)
    if not state_dict:
        state_dict = model.state_dict()
    # adapter name removed from the keys; the embeddings are never trained here
    lora = get_peft_model_state_dict(model, state_dict=state_dict, save_embedding_layers=False)
    lora = {k: v.detach().to("cpu").contiguous() for k, v in lora.items()}
    non_lora = split_trainables(model, state_dict)
    with update_folder(out) as folder:
        lora_config = copy.deepcopy(model.peft_config["default"])
        lora_config.inference_mode = True
        folder.adapter_config(lora_config)
        folder.lora(lora, fmt="safetensors")
        if write_bin:
            folder.lora(lora, fmt="bin")
        folder.projector(non_lora)
        folder.model_config(model.get_base_model().config.to_original_dict())
        folder.model_card("---\nlibrary_name: peft\n---\nLLaVA-1.5 LoRA task adapter (llava.train).\n")
    logger.info("saved LoRA task folder (%d LoRA tensors, %d projector tensors) to %s", len(lora), len(non_lora), out)
    return out


def load_non_lora(model, folder: str | Path) -> None:
    """Copy the projector file of `folder` into the PeftModel (every key must fit)."""
    path = Path(folder) / PROJECTOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; this checkpoint cannot restore the projector")
    weights = read_tensors(path)
    params = dict(model.named_parameters())
    homeless = sorted(k for k in weights if k not in params)
    if homeless:
        raise RuntimeError(f"{path}: keys {homeless[:3]} match no parameter of the model")
    with torch.no_grad():
        for k, v in weights.items():
            params[k].copy_(v.to(dtype=params[k].dtype, device=params[k].device))
    logger.info("restored %d projector tensors from %s", len(weights), path)


# ---------------------------------------------------------------- trainer


class LLaVATrainer(Trainer):
    """Trainer for LLaVA LoRA runs; `self.args` is `llava.train.train.TrainingArguments`."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if dataset is None or not getattr(self.args, "group_by_modality_length", False):
            return super()._get_train_sampler(train_dataset)
        return LengthGroupedSampler(
            self.args.train_batch_size,
            world_size=self.args.world_size * self.args.gradient_accumulation_steps,
            lengths=dataset.modality_lengths,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            group_by_modality=True,
        )

    def create_optimizer(self, model=None):
        """AdamW groups: (decay, no decay) x (projector at ``mm_projector_lr``, the rest); empty groups dropped."""
        opt_model = self.model if model is None else model
        if self.optimizer is not None:
            return self.optimizer
        decay = set(self.get_decay_parameter_names(opt_model))
        projector_lr = getattr(self.args, "mm_projector_lr", None)
        groups: dict[tuple[bool, bool], list] = {}
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                key = (name in decay, projector_lr is not None and PROJECTOR_KEY in name)
                groups.setdefault(key, []).append(param)
        param_groups = []  # LLaVA's order: the main group first (its lr is the one logged)
        for is_decay, is_projector in ((True, False), (False, False), (True, True), (False, True)):
            params = groups.get((is_decay, is_projector))
            if not params:
                continue
            group = {"params": params, "weight_decay": self.args.weight_decay if is_decay else 0.0}
            if is_projector:
                group["lr"] = projector_lr
            param_groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The task-folder layout instead of a full model (on the main process only)."""
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model)
        write_bin = getattr(self.args, "write_adapter_bin", False)
        save_task_folder(model, output_dir or self.args.output_dir, state_dict, write_bin=write_bin)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """LoRA via the Trainer (PEFT), then the projector from the checkpoint's projector file."""
        super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        load_non_lora(self.accelerator.unwrap_model(model if model is not None else self.model), resume_from_checkpoint)
