"""The demo's models: a tiny LLaVA base pre-trained on the general mixture, and LoRA task adapters.

Base (``build_base``):

1. ``llava.model.tiny.make_tiny_llava`` writes a random tiny LLaVA-1.5 (CLIP tower, projector,
   Llama decoder) in the original checkpoint format;
2. its tokenizer is replaced by one trained (same sentencepiece settings as the factory's) on
   the demo's own conversations, so the vicuna system prompt and the instructions take a few
   dozen tokens instead of a few hundred (the factory's 512-piece tokenizer spells most words
   letter by letter), which makes every training step and every answer several times cheaper;
3. :func:`pretrain_tower` teaches the random CLIP tower to see the scenes (a linear probe on
   its patch features predicts colours, shapes, words, counts and positions): the stand-in
   for CLIP's pre-training, without which a random tower barely tells shapes or letters apart;
4. :func:`pretrain` trains every weight of the projector and the language model (embeddings,
   norms and lm_head included) on the general mixture (``General/train.json``), tower frozen:
   the stand-in for LLaVA's pre-training and instruction tuning. ``llava.train`` only trains
   LoRA adapters, and a LoRA cannot reach the random embeddings, norms and lm_head of a fresh
   model (its answers stay unconfident), so this is a plain loop on ``llava.train.data``'s
   dataset and collator;
5. ``llava.model.export.export_llava_layout`` writes the trained model as a full LLaVA-1.5
   checkpoint (tower copied next to it): the base every adapter starts from.

Adapters (``train_adapter``): ``llava.train.train_task`` on one task's ``train.json`` (or the
union, for the multi-task row), all with the same seed, so every adapter starts from the same
LoRA initialisation, as in MM-MergeBench where all tasks are trained with one recipe.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from llava.conversation import conv_templates
from llava.model.tiny import TinySizes, make_tiny_llava

from ..atomic import replace_folder
from . import generator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRecipe:
    """LoRA training settings (``llava.train.train_task`` arguments)."""

    steps: int
    lora_r: int
    lora_alpha: int
    learning_rate: float
    projector_lr: float
    batch_size: int = 16
    warmup_ratio: float = 0.05
    seed: int = 42

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- tokenizer


def demo_corpus(seed: int, image_size: int, n_per_task: int = 300) -> list[str]:
    """Rendered conversations of every task and of the general mixture (tokenizer training text)."""
    rng = random.Random(f"{seed}/tokenizer")
    system = conv_templates["vicuna_v1"].system
    lines = []
    for _ in range(n_per_task):
        for make in generator.MAKERS.values():
            _, text, answer, _ = make(rng, image_size)
            lines.append(f"{system} USER: <image>\n{text} ASSISTANT: {answer}</s>")
        _, text, answer = generator.make_general(rng, image_size)
        lines.append(f"{system} USER: <image>\n{text} ASSISTANT: {answer}</s>")
    return lines


def train_tokenizer(lines: list[str], vocab_size: int) -> bytes:
    """A Llama-style sentencepiece BPE model (the factory's settings: <unk>=0, <s>=1, </s>=2,
    byte fallback, split digits) trained on ``lines``."""
    import sentencepiece as spm

    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=writer, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, split_digits=True, add_dummy_prefix=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, character_coverage=1.0,
        max_sentencepiece_length=16, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
    )  # fmt: skip
    return writer.getvalue()


# ----------------------------------------------------------------------------- training


@contextlib.contextmanager
def _quiet_training(log_file: Path):
    """Send the Trainer's printed logs to ``log_file`` and keep transformers' warnings down."""
    import transformers

    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log_file, "w", encoding="utf-8") as f, contextlib.redirect_stdout(f):
            yield
    finally:
        transformers.logging.set_verbosity(previous)


def train_adapter(base: Path, data_file: Path, image_folder: Path, out: Path, recipe: TrainRecipe) -> dict:
    """Train one LoRA task folder with ``llava.train.train_task``; returns a summary (losses, steps)."""
    from llava.train import train_task

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with _quiet_training(tmp / "train.log"):
            result = train_task(
                base, data_file, image_folder, tmp / "adapter",
                lora_r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=0.0,
                learning_rate=recipe.learning_rate, mm_projector_lr=recipe.projector_lr,
                max_steps=recipe.steps, per_device_train_batch_size=recipe.batch_size,
                warmup_ratio=recipe.warmup_ratio, lr_scheduler_type="cosine", logging_steps=max(1, recipe.steps // 20),
                save_steps=10**9, seed=recipe.seed, use_cpu=True,
                extra_args=["--report_to", "none", "--disable_tqdm", "True", "--save_strategy", "no",
                            "--dataloader_num_workers", "0", "--data_seed", str(recipe.seed)],
            )  # fmt: skip
        del result.trainer
        summary = {"steps": result.global_step, "first_loss": result.losses[0] if result.losses else None,
                   "last_loss": result.losses[-1] if result.losses else None, "losses": result.losses}
        (tmp / "adapter" / "demo_train.json").write_text(json.dumps({"recipe": recipe.to_dict(), **summary}, indent=1))
        shutil.move(str(tmp / "train.log"), tmp / "adapter" / "train.log")
        for leftover in (tmp / "adapter").glob("checkpoint-*"):
            shutil.rmtree(leftover)
        replace_folder(tmp / "adapter", out)
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cosine(warmup: int, total: int):
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))


class _TowerProbe(torch.nn.Module):
    """Linear read-outs of patch features [B, P, C]: what is in the scene from the mean over
    patches (so each patch must carry it, as LLaVA's attention reads it), where from all patches."""

    def __init__(self, patches: int, width: int, n_what: int, n_where: int):
        super().__init__()
        self.what = torch.nn.Linear(width, n_what)
        self.where = torch.nn.Linear(patches * width, n_where)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.what(feats.mean(dim=1)), self.where(feats.flatten(1))], dim=1)  # [B, labels]


def pretrain_tower(tower_dir: Path, steps: int, batch_size: int, learning_rate: float, seed: int,
                   select_layer: int = -2, pool: int = 3000, on_step: Callable[[], None] | None = None) -> dict:
    """Teach the random CLIP tower in ``tower_dir`` to see the miniature's scenes (in place).

    The stand-in for CLIP's pre-training: linear read-outs (:class:`_TowerProbe`) of the patch
    features of hidden state ``select_layer`` (the features LLaVA reads) predict every label of
    :data:`generator.VISION_LABELS` (colours, shapes, word, count; quadrant and box edges) with
    a binary cross-entropy, on a pool of ``pool`` generated scenes; the read-outs are thrown
    away. Returns the losses and the read-out's accuracy per label group on 500 new scenes.
    """
    from transformers import AutoImageProcessor, CLIPVisionModel

    clip = CLIPVisionModel.from_pretrained(str(tower_dir))
    processor = AutoImageProcessor.from_pretrained(str(tower_dir))
    size, labels = clip.config.image_size, generator.VISION_LABELS
    rng = random.Random(f"{seed}/tower")

    def scenes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = [], torch.zeros(n, len(labels))
        for i in range(n):
            img, on = generator.make_vision_sample(rng, size)
            images.append(img)
            targets[i, on] = 1.0
        return processor(images=images, return_tensors="pt")["pixel_values"], targets  # [n, 3, H, W], [n, L]

    pixels, targets = scenes(pool)
    torch.manual_seed(seed)
    n_what = generator.VISION_WHERE_START
    probe = _TowerProbe((size // clip.config.patch_size) ** 2, clip.config.hidden_size, n_what, len(labels) - n_what)
    params = list(clip.parameters()) + list(probe.parameters())
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(max(1, steps // 20), steps))
    order = torch.Generator().manual_seed(seed)

    def features(x: torch.Tensor) -> torch.Tensor:
        return clip(x, output_hidden_states=True).hidden_states[select_layer][:, 1:]  # [B, P, C]

    clip.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, pool, (batch_size,), generator=order)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(features(pixels[idx])), targets[idx])
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step:
            on_step()
    clip.eval()
    with torch.no_grad():
        test_pixels, test_targets = scenes(500)
        logits = probe(features(test_pixels))
    clip.save_pretrained(str(tower_dir))
    return {"steps": steps, "first_loss": losses[0], "last_loss": sum(losses[-10:]) / len(losses[-10:]),
            "probe_accuracy": _probe_accuracy(logits, test_targets)}


def _probe_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Per label group (colour, shape, word, count, quadrant, x1...): accuracy of the arg-max
    over the group, on the scenes that have exactly one true label in it."""
    out = {}
    groups = sorted({name.split(":")[0] for name in generator.VISION_LABELS}, key=generator.VISION_LABELS_ORDER)
    for group in groups:
        cols = [i for i, name in enumerate(generator.VISION_LABELS) if name.startswith(group + ":")]
        rows = targets[:, cols].sum(dim=1) == 1
        if rows.any():
            hit = logits[rows][:, cols].argmax(dim=1) == targets[rows][:, cols].argmax(dim=1)
            out[group] = round(hit.float().mean().item(), 3)
    return out


def pretrain(model_dir: Path, data_file: Path, image_folder: Path, out: Path, recipe: TrainRecipe,
             on_step: Callable[[], None] | None = None) -> dict:
    """Full-parameter training of the projector and language model (tower frozen) on
    ``data_file``, written to ``out`` in the original LLaVA-1.5 layout (tower copied next to it).

    A plain loop over ``llava.train.data``'s dataset and collator (the same tokenisation and
    label masking as ``llava.train``): AdamW, linear warm-up then cosine decay, ``recipe.steps``
    steps of ``recipe.batch_size`` samples drawn in a seeded order.
    """
    from torch.utils.data import DataLoader

    from llava.model.builder import load_pretrained_model
    from llava.model.export import export_llava_layout
    from llava.train.data import DataSettings, SupervisedCollator, SupervisedDataset, read_samples

    torch.manual_seed(recipe.seed)
    tokenizer, model, image_processor, _ = load_pretrained_model(model_dir, device="cpu", dtype="fp32")
    tower = model.get_vision_tower()
    max_len = model.config.max_position_embeddings
    settings = DataSettings(image_folder=image_folder, image_processor=image_processor, image_aspect_ratio="pad",
                            model_max_length=max_len, image_tokens=tower.num_patches)
    dataset = SupervisedDataset(read_samples(data_file), tokenizer, settings, source=str(data_file))
    loader = DataLoader(dataset, batch_size=recipe.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(recipe.seed),
                        collate_fn=SupervisedCollator(tokenizer.pad_token_id, max_len))
    params = [p for name, p in model.named_parameters() if ".vision_tower." not in name]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _cosine(max(1, int(recipe.warmup_ratio * recipe.steps)), recipe.steps))
    model.train()
    model.config.use_cache = False
    losses, step, batches = [], 0, iter(loader)
    while step < recipe.steps:
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        step += 1
        if on_step:
            on_step()
    model.requires_grad_(False)
    model.eval()
    model.config.use_cache = True
    out.mkdir(parents=True)
    export_llava_layout(model, tokenizer, out, torch.float32)  # with a copy of the tower folder
    every = max(1, recipe.steps // 20)
    return {"steps": step, "losses": [sum(losses[i:i + every]) / len(losses[i:i + every])
                                      for i in range(0, len(losses), every)]}


def build_base(out: Path, data_root: Path, sizes: TinySizes, tower_recipe: TrainRecipe, recipe: TrainRecipe,
               seed: int, on_step: Callable[[], None] | None = None) -> dict:
    """Random tiny LLaVA (``make_tiny_llava``) -> demo tokenizer -> :func:`pretrain_tower` ->
    :func:`pretrain` on the general mixture -> a full LLaVA-1.5 checkpoint at ``out``.
    Returns the training summaries."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tiny = make_tiny_llava(tmp / "random", sizes, seed=seed)
        corpus = demo_corpus(seed, sizes.image_size)
        (tiny.base / "tokenizer.model").write_bytes(train_tokenizer(corpus, sizes.vocab_size))
        with _quiet_training(tmp / "pretrain.log"):
            tower = pretrain_tower(tiny.tower, tower_recipe.steps, tower_recipe.batch_size,
                                   tower_recipe.learning_rate, tower_recipe.seed, on_step=on_step)
            summary = pretrain(tiny.base, data_root / "instructions" / "General" / "train.json",
                               data_root / "datasets", tmp / "base", recipe, on_step=on_step)
        summary = {"tower": {"recipe": tower_recipe.to_dict(), **tower},
                   "language_model": {"recipe": recipe.to_dict(), **summary}}
        (tmp / "base" / "demo_pretrain.json").write_text(json.dumps(
            {"sizes": asdict(sizes), "seed": seed, **summary}, indent=1))
        replace_folder(tmp / "base", out)
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
