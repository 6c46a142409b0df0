"""MMBench data: the TSV reader (images decoded lazily) and LLaVA-1.5's prompt.

The MMBench TSV (``mmbench_dev_20230712.tsv``) has one row per question with the columns
``index, question, hint, A, B, C, D[, E...], answer, category, [source,] l2-category,
[comment, split,] image`` where ``image`` is a base64-encoded image. The file already holds
the option-rotated copies of each question, numbered ``index + k * 1_000_000``; the copies
of one question share ``index % 1_000_000`` (:attr:`MMBenchItem.circular_id`). In some
releases a row's ``image`` is the (short, decimal) ``index`` of the row holding the image;
such references are followed.

Cells are read as text. A cell is "missing" (:func:`is_missing`) when it is empty, only
whitespace, or "nan" / "none" in any case -- the reading LLaVA's runner applies to pandas'
default NA parsing, so an option whose text is literally "None" is skipped as LLaVA skips it.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

logger = logging.getLogger(__name__)

OPTION_LETTERS = tuple("ABCDEFGHI")
ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."
CIRCULAR_STRIDE = 1_000_000
REQUIRED_COLUMNS = ("index", "question")


def is_missing(value: Any) -> bool:
    """True for None, float NaN, empty / whitespace-only text and "nan" / "none" (any case)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    text = str(value).strip()
    return not text or text.lower() in ("nan", "none")


def present_options(row: Mapping[str, Any]) -> dict[str, str]:
    """The options of a row that are present, in letter order: ``{"A": "...", ...}``.

    Missing options (:func:`is_missing`) are skipped; the others keep their own letter.
    """
    return {c: str(row[c]) for c in OPTION_LETTERS if c in row and not is_missing(row[c])}


def build_prompt(question: str, options: Mapping[str, str], hint: Any = None,
                 instruction: str = ANSWER_INSTRUCTION) -> str:
    """LLaVA-1.5's MMBench prompt (single-prediction form).

    ``[hint + "\\n"] + question``, then ``"\\n<letter>. <option>"`` for each present option,
    then ``"\\n" + instruction`` (the "Answer with the option's letter ..." sentence).
    """
    text = question if is_missing(hint) else f"{hint}\n{question}"
    for letter, option in options.items():
        if not is_missing(option):
            text += f"\n{letter}. {option}"
    return f"{text}\n{instruction}" if instruction else text


@dataclass
class MMBenchItem:
    """One TSV row. ``image()`` decodes the base64 image on demand (never at read time)."""

    index: int
    question: str
    hint: str | None
    options: dict[str, str]
    answer: str | None
    category: str | None
    l2_category: str | None
    extra: dict[str, str] = field(default_factory=dict)
    _image_b64: str | None = field(default=None, repr=False)
    _resolve: Callable[[str], str | None] | None = field(default=None, repr=False, compare=False)

    @property
    def circular_id(self) -> int:
        """The id shared by all rotated copies of this question: ``index % 1_000_000``."""
        return self.index % CIRCULAR_STRIDE

    @property
    def has_image(self) -> bool:
        return self._image_b64 is not None

    def prompt(self, instruction: str = ANSWER_INSTRUCTION) -> str:
        """This item's prompt text (:func:`build_prompt`)."""
        return build_prompt(self.question, self.options, self.hint, instruction)

    def image(self):
        """Decode the image to an RGB ``PIL.Image``; raises ``ValueError`` if there is none."""
        from PIL import Image

        data = self._image_b64
        if data is not None and self._resolve is not None and _is_reference(data):
            data = self._resolve(str(int(data)))
        if data is None:
            raise ValueError(f"MMBench item {self.index} has no image")
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def _is_reference(cell: str) -> bool:
    return len(cell) <= 64 and cell.strip().isdigit()


def read_tsv_frame(path: str | Path, drop_image: bool = False):
    """The TSV as a pandas DataFrame of text cells ("" for empty; no NA conversion).

    Raises ``ScoreError`` naming the file when it is missing, unreadable or lacks the
    ``index`` / ``question`` columns.
    """
    import pandas as pd

    from llava.eval.scorers.common import ScoreError

    path = Path(path)
    usecols = (lambda c: c != "image") if drop_image else None
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, usecols=usecols)
    except FileNotFoundError:
        raise ScoreError(f"{path}: MMBench TSV not found") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ScoreError(f"{path}: not a readable MMBench TSV ({e})") from None
    lacking = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if lacking:
        raise ScoreError(f"{path}: missing column(s) {lacking}; is this an MMBench TSV?")
    bad = [i + 2 for i, v in enumerate(df["index"]) if not v.strip().lstrip("-").isdigit()]
    if bad:
        raise ScoreError(f"{path}: non-integer index on line(s) {bad[:10]}")
    return df


def read_mmbench_tsv(path: str | Path) -> list[MMBenchItem]:
    """Read an MMBench TSV into :class:`MMBenchItem` s (images stay base64 until ``image()``)."""
    df = read_tsv_frame(path)
    has_image = "image" in df.columns
    images: dict[str, str] = {}
    if has_image:
        images = {str(int(i)): img for i, img in zip(df["index"], df["image"]) if not _is_reference(img)}
    resolve = images.get
    known = {"index", "question", "hint", "answer", "category", "l2-category", "image", *OPTION_LETTERS}
    items = []
    for row in df.to_dict(orient="records"):
        items.append(MMBenchItem(
            index=int(row["index"]), question=row["question"], hint=_cell(row, "hint"),
            options=present_options(row), answer=_cell(row, "answer"),
            category=_cell(row, "category"), l2_category=_cell(row, "l2-category"),
            extra={k: v for k, v in row.items() if k not in known},
            _image_b64=row["image"] if has_image and row["image"].strip() else None,
            _resolve=resolve,
        ))
    logger.info("read %d MMBench rows from %s", len(items), path)
    return items


def _cell(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    if is_missing(value):
        return None
    return str(value).strip() if key == "answer" else str(value)
