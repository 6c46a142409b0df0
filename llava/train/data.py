"""Training data for LLaVA-1.5 LoRA fine-tuning: reading, checking, tokenizing, batching.

Input: a LLaVA-format JSON list (or JSON Lines) of samples
``{"id", "image" (relative to the image folder, optional), "conversations": [{"from": "human"|"gpt",
"value"}, ...]}``.

Tokenization is LLaVA's ``preprocess_v1`` (conversation template ``vicuna_v1``):

- the image token is moved to the front of the turn that holds it (``"<image>\\n" + text``);
- the prompt is ``system + " USER: " + q1 + " ASSISTANT: " + a1 + "</s>USER: " + q2 ...``,
  tokenized with ``tokenizer_image_token`` (BOS once, ``<image>`` -> -200);
- labels: BOS, the system prompt and every ``"USER: ... ASSISTANT:"`` span are -100; each
  assistant reply and its ``</s>`` are learned. Span lengths are measured LLaVA's way, by
  tokenizing each round on its own (``round_len``, ``instruction_len - 2``; one token less per
  later round for non-legacy tokenizers). When the measured lengths do not add up to the
  tokenized sample, the whole sample is masked and a warning names it ("tokenization
  mismatch", as the original).

Bad samples (no gpt turn, turns out of order, missing image file, ``<image>`` without an image
or the reverse, longer than ``model_max_length`` after the image splice, unreadable image) are
found before training starts and either stop the run (``bad_sample="fail"``) or are left out
(``"skip"``), with the sample id in the message.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image
from torch.utils.data import Dataset

from robustmerge.errors import UserError
from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import SeparatorStyle, conv_templates
from llava.mm_utils import process_images, tokenizer_image_token

logger = logging.getLogger(__name__)

BAD_SAMPLE_POLICIES = ("fail", "skip")
_ROLES = {"human": 0, "gpt": 1}
_MAX_LISTED = 5  # bad samples named one by one in a message


class TrainDataError(UserError):
    """The training data cannot be used as given; the message names the file or sample and the fix."""


# ---------------------------------------------------------------- reading


def read_samples(data_path: str | Path) -> list[dict]:
    """The samples of a LLaVA-format ``.json`` list (or ``.jsonl``, one sample per line)."""
    path = Path(data_path)
    if not path.is_file():
        raise TrainDataError(f"{path}: no such data file; check --data_path")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        samples = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                samples.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TrainDataError(f"{path}:{n}: not valid JSON ({exc.msg}); fix or remove this line") from exc
        return samples
    try:
        samples = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrainDataError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "the file must hold one JSON list of samples"
        ) from exc
    if not isinstance(samples, list):
        raise TrainDataError(f"{path}: expected a JSON list of samples, found a {type(samples).__name__}")
    return samples


def sample_id(sample, index: int) -> str:
    """The sample's ``id`` (or its position) for messages."""
    if isinstance(sample, dict) and "id" in sample:
        return f"id {sample['id']!r} (index {index})"
    return f"index {index}"


# ---------------------------------------------------------------- conversations


def clean_turns(sample: dict) -> tuple[list[dict], str | None]:
    """The sample's turns ready for the template, or ([], the reason they cannot be used).

    As LLaVA: a leading gpt turn is dropped, and the ``<image>`` token is moved to the front of
    the turn that holds it (``"<image>\\n" + rest``, stripped).
    """
    turns = sample.get("conversations") if isinstance(sample, dict) else None
    if not isinstance(turns, list) or not turns:
        return [], "no 'conversations' list"
    for turn in turns:
        if not isinstance(turn, dict) or turn.get("from") not in _ROLES or not isinstance(turn.get("value"), str):
            return [], f"a turn is not {{'from': 'human'|'gpt', 'value': str}}: {str(turn)[:80]}"
    turns = copy.deepcopy(turns)
    if turns[0]["from"] != "human":
        turns = turns[1:]
    if not any(t["from"] == "gpt" for t in turns):
        return [], "conversation has no gpt turn (nothing to learn)"
    for j, turn in enumerate(turns):
        if _ROLES[turn["from"]] != j % 2:
            return [], f"turn {j} is from {turn['from']!r}; turns must alternate human, gpt, human, ..."
        if not turn["value"].strip():
            return [], f"turn {j} ({turn['from']}) is empty"
    if turns[-1]["from"] != "gpt":
        return [], "the last human turn has no gpt reply"
    for turn in turns:
        if DEFAULT_IMAGE_TOKEN in turn["value"]:
            rest = turn["value"].replace(DEFAULT_IMAGE_TOKEN, "").strip()
            turn["value"] = (DEFAULT_IMAGE_TOKEN + "\n" + rest).strip()
    return turns, None


def render_v1(turns: Sequence[dict]) -> str:
    """The ``vicuna_v1`` prompt of alternating human/gpt turns (ends with ``</s>``)."""
    conv = conv_templates["vicuna_v1"].copy()
    for turn in turns:
        conv.append_message(conv.roles[_ROLES[turn["from"]]], turn["value"])
    return conv.get_prompt()


def _ids(text: str, tokenizer, has_image: bool) -> list[int]:
    return tokenizer_image_token(text, tokenizer) if has_image else tokenizer(text).input_ids


def mask_v1(prompt: str, input_ids: list[int], tokenizer, has_image: bool) -> tuple[list[int], bool]:
    """LLaVA's v1 label mask for one rendered conversation.

    Returns (labels, matched): labels are ``input_ids`` with everything but the assistant
    replies (and their ``</s>``) set to -100; ``matched`` is False when the per-round lengths
    do not add up to ``len(input_ids)``, in which case every label is -100.
    """
    conv = conv_templates["vicuna_v1"]
    assert conv.sep_style == SeparatorStyle.TWO
    sep = conv.sep + conv.roles[1] + ": "  # " ASSISTANT: "
    labels = list(input_ids)
    cur = 1  # BOS
    labels[:cur] = [IGNORE_INDEX] * cur
    legacy = getattr(tokenizer, "legacy", True)
    for i, rou in enumerate(prompt.split(conv.sep2)):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        # round_len counts its own BOS, which stands in for the "</s>" that ends the round
        round_len = len(_ids(rou, tokenizer, has_image))
        # minus BOS and the lone "▁" that the trailing space of "ASSISTANT: " tokenizes to
        instruction_len = len(_ids(parts[0] + sep, tokenizer, has_image)) - 2
        if i != 0 and not legacy:  # no dummy-prefix space after "</s>" in the full text
            round_len -= 1
            instruction_len -= 1
        end = min(cur + instruction_len, len(labels))
        labels[cur:end] = [IGNORE_INDEX] * (end - cur)
        cur += round_len
    labels[cur:] = [IGNORE_INDEX] * max(0, len(labels) - cur)
    matched = cur == len(input_ids)
    if not matched:
        labels = [IGNORE_INDEX] * len(labels)
    return labels, matched


def preprocess_v1(turns: Sequence[dict], tokenizer, has_image: bool) -> tuple[list[int], list[int], bool]:
    """(input_ids, labels, matched) of a cleaned conversation; see :func:`mask_v1`."""
    prompt = render_v1(turns)
    input_ids = _ids(prompt, tokenizer, has_image)
    labels, matched = mask_v1(prompt, input_ids, tokenizer, has_image)
    return input_ids, labels, matched


# ---------------------------------------------------------------- checking


@dataclass(frozen=True)
class DataSettings:
    """What the dataset needs besides the samples.

    Attributes:
        image_folder: folder the samples' ``image`` paths are relative to.
        image_processor: the vision tower's CLIP image processor.
        image_aspect_ratio: "pad" (LLaVA-1.5) or "square" (the processor as is).
        model_max_length: longest sequence the model is trained on, image patches included.
        image_tokens: positions one image takes after the splice (the tower's patch count).
        bad_sample: "fail" (stop at any bad sample) or "skip" (leave bad samples out).
        lazy_preprocess: tokenize in ``__getitem__`` (True) or keep every tokenized sample.
    """

    image_folder: Path | None
    image_processor: object
    image_aspect_ratio: str = "pad"
    model_max_length: int = 2048
    image_tokens: int = 576
    bad_sample: str = "fail"
    lazy_preprocess: bool = True


def _image_problem(sample: dict, turns: list[dict], settings: DataSettings) -> str | None:
    """Why the sample's image and ``<image>`` tokens do not fit together, else None."""
    n_tokens = sum(t["value"].count(DEFAULT_IMAGE_TOKEN) for t in turns)
    if "image" not in sample:
        return f"has {n_tokens} <image> token(s) but no 'image' field" if n_tokens else None
    image = sample["image"]
    if not isinstance(image, str) or not image:
        return f"'image' must be one relative file path, found {str(image)[:80]}"
    if n_tokens != 1 or any(DEFAULT_IMAGE_TOKEN in t["value"] for t in turns if t["from"] == "gpt"):
        return f"has an image but {n_tokens} <image> tokens; expected exactly one, in a human turn"
    if settings.image_folder is None:
        raise TrainDataError("the data has images; pass --image_folder (the folder image paths are relative to)")
    path = settings.image_folder / image
    if not path.is_file():
        return f"image file not found: {path}"
    try:
        with Image.open(path) as img:
            img.size  # header only
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable image file
        return f"image file {path} cannot be read ({type(exc).__name__}: {exc})"
    return None


def check_sample(sample, settings: DataSettings, tokenizer) -> tuple[dict | None, str | None]:
    """(tokenized sample, None) for a usable sample, else (None, the reason).

    The tokenized sample holds ``input_ids``, ``labels`` (lists) and ``matched``.
    """
    turns, problem = clean_turns(sample)
    if problem:
        return None, problem
    problem = _image_problem(sample, turns, settings)
    if problem:
        return None, problem
    has_image = "image" in sample
    input_ids, labels, matched = preprocess_v1(turns, tokenizer, has_image)
    n_images = input_ids.count(IMAGE_TOKEN_INDEX)
    length = len(input_ids) + n_images * (settings.image_tokens - 1)
    if length > settings.model_max_length:
        return None, (
            f"{length} tokens with the image patches, longer than model_max_length {settings.model_max_length}; "
            "shorten the sample or raise --model_max_length (up to the model's context)"
        )
    return {"input_ids": input_ids, "labels": labels, "matched": matched}, None


def _report_bad(bad: list[tuple[str, str]], total: int, policy: str, source: str) -> None:
    listed = "\n".join(f"  {sid}: {why}" for sid, why in bad[:_MAX_LISTED])
    more = f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    if policy == "fail":
        raise TrainDataError(
            f"{source}: {len(bad)} of {total} samples cannot be trained on:\n{listed}{more}\n"
            "Fix them, or pass --bad_sample skip to leave them out."
        )
    logger.warning("%s: skipping %d of %d samples (--bad_sample skip):\n%s%s", source, len(bad), total, listed, more)


# ---------------------------------------------------------------- dataset


class SupervisedDataset(Dataset):
    """LLaVA samples as ``{input_ids [L], labels [L], image [3, H, W]}``, bad samples checked up front.

    Args:
        samples: the raw samples (see :func:`read_samples`).
        tokenizer: the model's tokenizer (BOS added, ``legacy`` as configured).
        settings: see :class:`DataSettings`.
        source: name of the data (the file) for messages.
    """

    def __init__(self, samples: list, tokenizer, settings: DataSettings, source: str = "data"):
        if settings.bad_sample not in BAD_SAMPLE_POLICIES:
            raise TrainDataError(f"--bad_sample {settings.bad_sample!r}: use one of {BAD_SAMPLE_POLICIES}")
        self.tokenizer = tokenizer
        self.settings = settings
        self.source = source
        self.samples: list[dict] = []
        self.ids: list[str] = []
        self._tokenized: list[dict] = []
        bad: list[tuple[str, str]] = []
        mismatched = 0
        for i, sample in enumerate(_progress(samples, f"checking {source}")):
            tokenized, problem = check_sample(sample, settings, tokenizer)
            if problem:
                bad.append((sample_id(sample, i), problem))
                continue
            if not tokenized["matched"]:
                mismatched += 1
                logger.warning(
                    "tokenization mismatch in %s: the v1 round lengths do not add up to the %d "
                    "tokens of the sample; all its labels are masked (ignored)",
                    sample_id(sample, i), len(tokenized["input_ids"]),
                )  # fmt: skip
            self.samples.append(sample)
            self.ids.append(sample_id(sample, i))
            if not settings.lazy_preprocess:
                self._tokenized.append(tokenized)
        if bad:
            _report_bad(bad, len(samples), settings.bad_sample, source)
        if not self.samples:
            raise TrainDataError(f"{source}: no usable samples (of {len(samples)})")
        if mismatched == len(self.samples):
            raise TrainDataError(
                f"{source}: every sample has a tokenization mismatch, so nothing would be learned; "
                "the tokenizer does not behave like LLaVA's Llama tokenizer (check its 'legacy' setting)"
            )
        logger.info("%s: %d samples (%d skipped, %d fully masked)", source, len(self.samples), len(bad), mismatched)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        """Word counts (+128 per image), as LLaVA's sampler uses them."""
        return [_words(s) + (128 if "image" in s else 0) for s in self.samples]

    @property
    def modality_lengths(self) -> list[int]:
        """Word counts, negative for text-only samples (``--group_by_modality_length``)."""
        return [_words(s) if "image" in s else -_words(s) for s in self.samples]

    def _tokens(self, i: int) -> dict:
        if self._tokenized:
            return self._tokenized[i]
        turns, _ = clean_turns(self.samples[i])
        input_ids, labels, _ = preprocess_v1(turns, self.tokenizer, "image" in self.samples[i])
        return {"input_ids": input_ids, "labels": labels}

    def _image(self, i: int) -> torch.Tensor:
        """Pixel values [3, H, W]; zeros of the crop size for a text-only sample (as LLaVA)."""
        processor = self.settings.image_processor
        sample = self.samples[i]
        if "image" not in sample:
            crop = processor.crop_size
            return torch.zeros(3, crop["height"], crop["width"])
        path = self.settings.image_folder / sample["image"]
        try:
            image = Image.open(path).convert("RGB")
        except Exception as exc:  # noqa: BLE001 - a file that broke after the check
            raise TrainDataError(f"{self.source}: {self.ids[i]}: image {path} cannot be decoded ({exc})") from exc
        config = SimpleNamespace(image_aspect_ratio=self.settings.image_aspect_ratio)
        return process_images([image], processor, config)[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        try:
            image = self._image(i)
        except TrainDataError:
            if self.settings.bad_sample == "fail" or len(self) == 1:
                raise
            logger.warning("%s: skipping %s, its image cannot be decoded; using the next sample",
                           self.source, self.ids[i])
            return self[(i + 1) % len(self)]
        tokens = self._tokens(i)
        return {
            "input_ids": torch.tensor(tokens["input_ids"], dtype=torch.long),
            "labels": torch.tensor(tokens["labels"], dtype=torch.long),
            "image": image,
        }


def _words(sample: dict) -> int:
    return sum(len(t.get("value", "").split()) for t in sample["conversations"])


def _progress(items, desc: str):
    """A tqdm bar for long checks (quiet for small data)."""
    if len(items) < 5000 or os.environ.get("LOCAL_RANK", "0") != "0":  # one bar per machine
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="sample")


# ---------------------------------------------------------------- batching


@dataclass
class SupervisedCollator:
    """Right-pads samples into a batch (LLaVA's ``DataCollatorForSupervisedDataset``).

    Returns ``input_ids`` [B, L] (padded with ``pad_token_id``), ``labels`` [B, L] (padded with
    -100), ``attention_mask`` [B, L] (True on real tokens, from the lengths rather than from
    comparing ids with the pad id) and ``images`` [B, 3, H, W] (a list when shapes differ).
    """

    pad_token_id: int
    model_max_length: int

    def __call__(self, instances: Sequence[dict]) -> dict:
        ids = [x["input_ids"][: self.model_max_length] for x in instances]
        labels = [x["labels"][: self.model_max_length] for x in instances]
        width = max(len(x) for x in ids)
        batch_ids = torch.full((len(ids), width), self.pad_token_id, dtype=torch.long)
        batch_labels = torch.full((len(ids), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.bool)
        for row, (x, y) in enumerate(zip(ids, labels)):
            batch_ids[row, : len(x)], batch_labels[row, : len(y)], mask[row, : len(x)] = x, y, True
        batch = {"input_ids": batch_ids, "labels": batch_labels, "attention_mask": mask}
        images = [x["image"] for x in instances]
        batch["images"] = torch.stack(images) if all(im.shape == images[0].shape for im in images) else images
        return batch
