"""LoRA fine-tuning of LLaVA-1.5 (LLaVA's ``llava/train/train.py`` on transformers 5).

    python -m llava.train.train --lora_enable True --lora_r 16 --lora_alpha 32 --mm_projector_lr 2e-5 \\
        --model_name_or_path checkpoints/llava-v1.5-7b --version v1 \\
        --data_path train.json --image_folder datasets --vision_tower openai/clip-vit-large-patch14-336 \\
        --mm_projector_type mlp2x_gelu --mm_vision_select_layer -2 --image_aspect_ratio pad \\
        --group_by_modality_length True --bf16 True --output_dir checkpoints/task-lora ...

LLaVA's flags are kept (plus every ``transformers.TrainingArguments`` flag). Differences:

- ``--warmup_ratio`` is mapped onto transformers 5's float ``warmup_steps``;
  ``--evaluation_strategy`` onto ``eval_strategy``.
- Flags left out take the base model's values (``mm_vision_select_layer``,
  ``mm_projector_type``, ``image_aspect_ratio``, ``model_max_length`` from
  ``tokenizer_model_max_length``) instead of LLaVA's pre-training defaults.
- ``--version`` defaults to and only accepts ``v1`` (LLaVA-1.5's template); LoRA only
  (``--lora_enable`` defaults to True); no quantised training, no projector pre-training.
- ``--bad_sample fail|skip`` (default fail): what to do with samples that cannot be trained on.
- ``--attn_implementation``: default ``flash_attention_2`` when flash-attn is importable on a
  GPU in half precision, else ``sdpa`` (no attention monkey patch).
- The vision tower is resolved offline like the loader does (explicit path, the
  ``LLAVA_VISION_TOWER`` variables, next to the base model, the working directory).
- A run resumes from the newest complete ``checkpoint-N`` in ``--output_dir`` (as LLaVA) or
  from ``--resume_from_checkpoint``; a finished adapter folder is never overwritten unless
  ``--overwrite_output_dir True``.
- Output (and every checkpoint): the LLaVA LoRA task folder (``robustmerge.taskfolder``:
  adapter config, LoRA safetensors, projector file, model config) plus
  ``trainer_state.json``; ``--write_adapter_bin True`` adds the legacy ``.bin`` LoRA for PEFT < 0.5.

Python: ``train(["--model_name_or_path", ...])`` or the typed :func:`train_task`.
Deepspeed is imported (by transformers) only when ``--deepspeed`` is given.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers

from llava.model.builder import folder_kind, load_pretrained_model, pick_attn_implementation
from llava.model.multimodal_encoder.builder import resolve_vision_tower
from llava.train.data import (
    BAD_SAMPLE_POLICIES,
    DataSettings,
    SupervisedCollator,
    SupervisedDataset,
    TrainDataError,
    read_samples,
)
from llava.train.llava_trainer import LLaVATrainer
from robustmerge.errors import UserError, cli_main
from robustmerge.taskfolder import ADAPTER_BIN, ADAPTER_CONFIG, MODEL_CONFIG

logger = logging.getLogger(__name__)

_MULTIMODAL_KEYS = ("mm_projector", "vision_tower", "vision_resampler")
_ASPECT_RATIOS = ("pad", "square")
_VERSIONS = ("v1", "vicuna_v1", "llava_v1")


class TrainSetupError(UserError):
    """The run cannot start as configured; the message names the flag or folder and the fix."""


# ---------------------------------------------------------------- arguments


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "base LLaVA-1.5 model folder"})
    version: str = field(default="v1", metadata={"help": "conversation template; only v1 (vicuna_v1)"})
    vision_tower: str | None = field(
        default=None, metadata={"help": "CLIP tower (folder or name); default: the base model's mm_vision_tower"}
    )
    mm_vision_select_layer: int | None = field(default=None, metadata={"help": "default: the base model's"})
    mm_vision_select_feature: str | None = field(default=None, metadata={"help": "patch | cls_patch"})
    mm_projector_type: str | None = field(default=None, metadata={"help": "must match the base model's projector"})
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = False
    mm_patch_merge_type: str = "flat"
    attn_implementation: str | None = field(default=None, metadata={"help": "sdpa | eager | flash_attention_2"})
    # LLaVA flags of the recipes not ported here; accepted so scripts parse, must keep these values
    freeze_backbone: bool = False
    tune_mm_mlp_adapter: bool = False
    pretrain_mm_mlp_adapter: str | None = None


@dataclass
class DataArguments:
    data_path: str | None = field(default=None, metadata={"help": "LLaVA-format JSON (or JSONL) file"})
    image_folder: str | None = field(default=None, metadata={"help": "folder the samples' image paths are relative to"})
    image_aspect_ratio: str | None = field(default=None, metadata={"help": "pad | square; default: the base model's"})
    lazy_preprocess: bool = field(default=True, metadata={"help": "tokenize per step instead of keeping every sample"})
    bad_sample: str = field(default="fail", metadata={"help": "fail | skip: stop at, or leave out, unusable samples"})
    is_multimodal: bool = False  # LLaVA's internal flag; ignored


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """transformers' TrainingArguments plus LLaVA's LoRA and data flags."""

    cache_dir: str | None = None  # offline: ignored
    optim: str = "adamw_torch"
    remove_unused_columns: bool = False
    freeze_mm_mlp_adapter: bool = False
    mpt_attn_impl: str | None = "triton"  # ignored
    model_max_length: int | None = field(
        default=None, metadata={"help": "longest training sequence, image patches included; default: the base's"}
    )
    double_quant: bool = True  # quantised training is not ported
    quant_type: str = "nf4"
    bits: int = 16
    lora_enable: bool = True
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_weight_path: str = ""
    lora_bias: str = "none"
    mm_projector_lr: float | None = None
    group_by_modality_length: bool = False
    warmup_ratio: float | None = field(default=None, metadata={"help": "warmup as a fraction of the steps (< 1)"})
    evaluation_strategy: str | None = field(default=None, metadata={"help": "old name of eval_strategy"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace a finished adapter in output_dir"})
    write_adapter_bin: bool = field(
        default=False, metadata={"help": f"also write {ADAPTER_BIN} (for PEFT < 0.5, e.g. the original RobustMerge)"}
    )

    def __post_init__(self):
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio {self.warmup_ratio}: must be in [0, 1)")
            if self.warmup_steps:
                raise ValueError("give --warmup_ratio or --warmup_steps, not both")
            self.warmup_steps = self.warmup_ratio  # transformers 5: a float < 1 is a ratio
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        # transformers >= 5.2x renamed --gradient_checkpointing (LLaVA's flag) to --activation_checkpointing
        if hasattr(self, "activation_checkpointing"):
            for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                             ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):  # fmt: skip
                if getattr(self, new, None) is None and getattr(self, old) is not None:
                    setattr(self, new, getattr(self, old))
                    setattr(self, old, None)
        super().__post_init__()


def parse_args(
    argv: Sequence[str] | None = None, defaults: dict | None = None
) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """The three argument dataclasses from command-line flags; `defaults` (flag name -> Python
    value, used as is) replaces the dataclass defaults of the flags that `argv` does not give."""
    parser = transformers.HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    if defaults:
        parser.set_defaults(**defaults)
    try:
        args = list(argv) if argv is not None else None
        return parser.parse_args_into_dataclasses(args=args, look_for_args_file=False)
    except ValueError as exc:  # unknown flags, bad combinations found by TrainingArguments
        raise TrainSetupError(str(exc)) from exc


def check_args(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> None:
    """Reject what this port does not do, with the flag to change."""
    unsupported = [
        (not training_args.lora_enable, "--lora_enable False (full fine-tuning is not ported; use True)"),
        (training_args.bits != 16, f"--bits {training_args.bits} (quantised training is not ported; use 16)"),
        (model_args.tune_mm_mlp_adapter, "--tune_mm_mlp_adapter True (projector pre-training is not ported)"),
        (model_args.pretrain_mm_mlp_adapter is not None, "--pretrain_mm_mlp_adapter (start from a LLaVA-1.5 model)"),
        (model_args.freeze_backbone, "--freeze_backbone True (LoRA already freezes the backbone)"),
        (training_args.freeze_mm_mlp_adapter, "--freeze_mm_mlp_adapter True (the projector is always trained)"),
        (model_args.mm_use_im_start_end, "--mm_use_im_start_end True (LLaVA-1.5 uses False)"),
        (model_args.mm_use_im_patch_token, "--mm_use_im_patch_token True (LLaVA-1.5 uses False)"),
        (model_args.mm_patch_merge_type != "flat", f"--mm_patch_merge_type {model_args.mm_patch_merge_type}"),
        (model_args.version not in _VERSIONS, f"--version {model_args.version} (only v1, LLaVA-1.5's vicuna_v1)"),
        (training_args.lora_bias != "none", f"--lora_bias {training_args.lora_bias} (only none)"),
        (data_args.bad_sample not in BAD_SAMPLE_POLICIES, f"--bad_sample {data_args.bad_sample} (fail or skip)"),
        (
            data_args.image_aspect_ratio not in (None, *_ASPECT_RATIOS),
            f"--image_aspect_ratio {data_args.image_aspect_ratio} (pad or square)",
        ),
    ]
    problems = [msg for bad, msg in unsupported if bad]
    if problems:
        raise TrainSetupError("not supported by this port: " + "; ".join(problems))
    for flag, value in (("--model_name_or_path", model_args.model_name_or_path), ("--data_path", data_args.data_path)):
        if not value:
            raise TrainSetupError(f"{flag} is required")
    if not training_args.output_dir:
        raise TrainSetupError("--output_dir is required")
    if not Path(data_args.data_path).is_file():
        raise TrainDataError(f"{data_args.data_path}: no such data file; check --data_path")
    if data_args.image_folder and not Path(data_args.image_folder).is_dir():
        raise TrainDataError(f"{data_args.image_folder}: no such image folder; check --image_folder")


# ---------------------------------------------------------------- output folder


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` (trainer state and adapter written) in `output_dir`."""
    if not output_dir.is_dir():
        return None
    found = []
    for path in output_dir.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and (path / "trainer_state.json").is_file() and (path / ADAPTER_CONFIG).is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def check_output_dir(
    output_dir: Path, input_dirs: Sequence[Path | None], data_file: Path, overwrite: bool
) -> Path | None:
    """Refuse an output over an input or a finished adapter; returns the checkpoint to resume, if any."""
    out = output_dir.expanduser().resolve()
    for source in input_dirs:
        if source is None:
            continue
        src = source.expanduser().resolve()
        if out == src or src in out.parents or out in src.parents:
            raise TrainSetupError(f"--output_dir {output_dir} overlaps the input folder {source}; choose a new folder")
    if out in data_file.expanduser().resolve().parents:
        raise TrainSetupError(f"--output_dir {output_dir} holds the training data {data_file}; choose a new folder")
    resume = last_checkpoint(out)
    if resume is None and (out / ADAPTER_CONFIG).is_file() and not overwrite:
        raise TrainSetupError(
            f"{output_dir} already holds a trained adapter; choose a new --output_dir "
            "or pass --overwrite_output_dir True"
        )
    return resume


# ---------------------------------------------------------------- model


def lora_target_modules(model: torch.nn.Module) -> list[str]:
    """Names (last component) of every Linear layer of the language model, lm_head excluded."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(k in name for k in _MULTIMODAL_KEYS):
            names.add(name.split(".")[-1])
    names.discard("lm_head")
    return sorted(names)


def _train_dtype(training_args: TrainingArguments) -> torch.dtype:
    if training_args.bf16:
        return torch.bfloat16
    return torch.float16 if training_args.fp16 else torch.float32


def resolve_training_tower(name: str | None, base: Path) -> Path | None:
    """The tower folder for ``--vision_tower`` (None: the base model's own, resolved by the loader)."""
    if name is None:
        return None
    as_path = Path(name).expanduser()
    if as_path.is_dir() and (as_path / MODEL_CONFIG).is_file():
        return as_path
    return resolve_vision_tower(name, [base, base.parent, Path.cwd()], source="--vision_tower")


def _apply_mm_flags(model, tower, model_args: ModelArguments, data_args: DataArguments, max_len: int, projector_lr):
    """Write the run's multimodal settings into the config (as LLaVA's train.py does)."""
    config = model.config
    if model_args.mm_projector_type and model_args.mm_projector_type != getattr(config, "mm_projector_type", None):
        raise TrainSetupError(
            f"--mm_projector_type {model_args.mm_projector_type} but the base model's projector is "
            f"{getattr(config, 'mm_projector_type', None)}; leave the flag out or use the base's value"
        )
    if model_args.mm_vision_select_layer is not None:
        config.mm_vision_select_layer = tower.select_layer = model_args.mm_vision_select_layer
    if model_args.mm_vision_select_feature is not None:
        config.mm_vision_select_feature = tower.select_feature = model_args.mm_vision_select_feature
    if model_args.vision_tower is not None:
        config.mm_vision_tower = model_args.vision_tower
    config.image_aspect_ratio = data_args.image_aspect_ratio or getattr(config, "image_aspect_ratio", None) or "pad"
    if config.image_aspect_ratio not in _ASPECT_RATIOS:
        raise TrainSetupError(f"image_aspect_ratio {config.image_aspect_ratio!r} is not supported; pass pad or square")
    config.tokenizer_padding_side = "right"
    config.tokenizer_model_max_length = max_len
    config.tune_mm_mlp_adapter = config.freeze_mm_mlp_adapter = False
    config.mm_use_im_start_end = config.mm_use_im_patch_token = False
    config.mm_projector_lr = projector_lr
    config.use_mm_proj = True
    config.use_cache = False


def add_lora(model, training_args: TrainingArguments):
    """Wrap `model` in a PEFT LoRA on the language model's Linear layers; the projector stays trainable.

    The tower is detached while PEFT injects the LoRA (its Linear layers share names such as
    ``q_proj`` with the language model's), then attached again, frozen.
    """
    from peft import LoraConfig, get_peft_model

    inner = model.get_model()
    tower = inner.vision_tower
    inner.vision_tower = None
    config = LoraConfig(
        r=training_args.lora_r, lora_alpha=training_args.lora_alpha, lora_dropout=training_args.lora_dropout,
        target_modules=lora_target_modules(model), bias=training_args.lora_bias, task_type="CAUSAL_LM",
    )  # fmt: skip
    peft_model = get_peft_model(model, config)
    inner.attach_vision_tower(tower)
    inner.mm_projector.requires_grad_(True)
    if not training_args.deepspeed:  # trainable weights in fp32 (deepspeed keeps its own fp32 copies)
        inner.mm_projector.float()
        for param in peft_model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    return peft_model


def build_model(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments):
    """(PeftModel, tokenizer, vision tower, model_max_length) ready for training."""
    base = Path(model_args.model_name_or_path).expanduser()
    if folder_kind(base) != "full":
        raise TrainSetupError(f"--model_name_or_path {base}: not a full LLaVA-1.5 model folder ({MODEL_CONFIG} + weights)")
    dtype = _train_dtype(training_args)
    device = training_args.device
    attn = pick_attn_implementation(model_args.attn_implementation, device, dtype)
    tower_path = resolve_training_tower(model_args.vision_tower, base)
    tokenizer, model, _, _ = load_pretrained_model(
        base, device=device, dtype=dtype, attn_implementation=attn, vision_tower_path=tower_path
    )
    max_len = training_args.model_max_length or getattr(model.config, "tokenizer_model_max_length", None) or 2048
    if max_len > model.config.max_position_embeddings:
        raise TrainSetupError(
            f"--model_max_length {max_len} exceeds the model's context ({model.config.max_position_embeddings})"
        )
    tower = model.get_vision_tower()
    _apply_mm_flags(model, tower, model_args, data_args, max_len, training_args.mm_projector_lr)
    tokenizer.model_max_length = max_len
    tokenizer.padding_side = "right"
    if tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token  # LLaVA v1
    model = add_lora(model, training_args)
    model.train()
    return model, tokenizer, tower, max_len


def build_dataset(data_args: DataArguments, tokenizer, tower, config, max_len: int) -> SupervisedDataset:
    patches = tower.num_patches + (1 if getattr(config, "mm_vision_select_feature", "patch") == "cls_patch" else 0)
    settings = DataSettings(
        image_folder=Path(data_args.image_folder).expanduser() if data_args.image_folder else None,
        image_processor=tower.image_processor,
        image_aspect_ratio=config.image_aspect_ratio,
        model_max_length=max_len,
        image_tokens=patches,
        bad_sample=data_args.bad_sample,
        lazy_preprocess=data_args.lazy_preprocess,
    )
    return SupervisedDataset(read_samples(data_args.data_path), tokenizer, settings, source=str(data_args.data_path))


# ---------------------------------------------------------------- entry points


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        output_dir: the LoRA task folder.
        global_step: optimizer steps done (over all sessions of a resumed run).
        losses: the logged training loss per logging step, in order.
        trainer: the Trainer (its `model` is the trained PeftModel, still in memory).
    """

    output_dir: Path
    global_step: int
    losses: list[float]
    trainer: LLaVATrainer


def train(argv: Sequence[str] | None = None, attn_implementation: str | None = None) -> TrainResult:
    """Train one LoRA task adapter from LLaVA-style command-line flags (see the module docstring).

    Args:
        argv: the flags (default: ``sys.argv[1:]``).
        attn_implementation: default attention when ``--attn_implementation`` is not given.

    Raises:
        TrainSetupError, TrainDataError, LlavaLoadError: for problems the user can fix.
    """
    return _train(*parse_args(argv), attn_implementation=attn_implementation)


def _train(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
           attn_implementation: str | None = None) -> TrainResult:
    """:func:`train` on parsed arguments."""
    check_args(model_args, data_args, training_args)
    if model_args.attn_implementation is None:
        model_args.attn_implementation = attn_implementation
    output_dir = Path(training_args.output_dir)
    image_folder = Path(data_args.image_folder) if data_args.image_folder else None
    resume = check_output_dir(
        output_dir, [Path(model_args.model_name_or_path), image_folder], Path(data_args.data_path),
        training_args.overwrite_output_dir,
    )  # fmt: skip
    if training_args.resume_from_checkpoint:
        resume = Path(training_args.resume_from_checkpoint)
    transformers.set_seed(training_args.seed)  # the LoRA initialisation
    model, tokenizer, tower, max_len = build_model(model_args, data_args, training_args)
    dataset = build_dataset(data_args, tokenizer, tower, model.config, max_len)
    trainer = LLaVATrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=SupervisedCollator(pad_token_id=tokenizer.pad_token_id, model_max_length=max_len),
    )
    if resume is not None:
        logger.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    trainer.save_state()
    model.config.use_cache = True
    trainer.save_model(str(output_dir))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return TrainResult(output_dir=output_dir, global_step=trainer.state.global_step, losses=losses, trainer=trainer)


def train_task(
    model_name_or_path: str | Path,
    data_path: str | Path,
    image_folder: str | Path,
    output_dir: str | Path,
    *,
    vision_tower: str | None = None,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    learning_rate: float = 2e-4,
    mm_projector_lr: float | None = 2e-5,
    num_train_epochs: float = 1.0,
    max_steps: int = -1,
    per_device_train_batch_size: int = 16,
    gradient_accumulation_steps: int = 1,
    warmup_ratio: float = 0.03,
    lr_scheduler_type: str = "cosine",
    model_max_length: int | None = None,
    bf16: bool = False,
    gradient_checkpointing: bool = False,
    group_by_modality_length: bool = True,
    logging_steps: int = 1,
    save_steps: int = 50000,
    seed: int = 42,
    bad_sample: str = "fail",
    use_cpu: bool = False,
    extra_args: Sequence[str] = (),
) -> TrainResult:
    """Train one task adapter in-process (defaults: the MM-MergeBench rank-16 recipe).

    Every argument is the command-line flag of the same name, passed as its Python value (no
    round trip through strings); `extra_args` are more flags, parsed as on the command line, and
    win over the arguments (e.g. ``["--deepspeed", "scripts/zero2.json"]``). Returns :class:`TrainResult`.
    """
    args = {
        "model_name_or_path": str(model_name_or_path), "data_path": str(data_path), "image_folder": str(image_folder),
        "output_dir": str(output_dir), "lora_enable": True, "lora_r": lora_r, "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout, "learning_rate": learning_rate, "num_train_epochs": num_train_epochs,
        "max_steps": max_steps, "per_device_train_batch_size": per_device_train_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps, "warmup_ratio": warmup_ratio,
        "lr_scheduler_type": lr_scheduler_type, "bf16": bf16, "gradient_checkpointing": gradient_checkpointing,
        "group_by_modality_length": group_by_modality_length, "logging_steps": logging_steps,
        "save_strategy": "steps", "save_steps": save_steps, "seed": seed, "bad_sample": bad_sample,
        "use_cpu": use_cpu, "version": "v1", "lazy_preprocess": True,
    }  # fmt: skip
    args.update(vision_tower=vision_tower, mm_projector_lr=mm_projector_lr, model_max_length=model_max_length)
    return _train(*parse_args(extra_args, defaults=args))


def default_attn_implementation(prefer_flash: bool) -> str | None:
    """flash_attention_2 when asked for and importable on a GPU, else None (the loader's choice)."""
    if prefer_flash and importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
        return "flash_attention_2"
    return None


def main(argv: Sequence[str] | None = None, attn_implementation: str | None = None) -> int:
    """CLI: exit status 0, or 2 with a one-line reason for problems the user can fix."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return cli_main(lambda: train(argv, attn_implementation=attn_implementation))


if __name__ == "__main__":
    sys.exit(main())
