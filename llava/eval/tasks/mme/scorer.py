"""MME scorer: acc, acc+, per-subtask score and the Perception / Cognition totals.

Ground truth: the official MME release folder (``MME_Benchmark_release_version/``), one
folder per subtask, in either of the two layouts the release uses:

- flat (existence, count, position, color, OCR, commonsense_reasoning, ...):
  ``<category>/<image>.{jpg,png}`` next to ``<category>/<image>.txt``;
- nested (artwork, celebrity, landmark, posters, scene):
  ``<category>/images/<image>.jpg`` and ``<category>/questions_answers_YN/<image>.txt``.

Each ``<image>.txt`` holds the image's questions, one ``question<TAB>answer`` line each (one
"Yes" and one "No" question per image). Lines with three fields, ``image<TAB>question<TAB>
answer`` (the eval_tool's per-subtask file layout), are accepted too; the first field then
names the image. Folders that are not one of the 14 subtasks are ignored.

Answers: LLaVA's JSONL with ``question_id = "<category>/<image file>"``, ``prompt`` and
``text``. Both questions of an image share the question id, so an answer is matched to its
ground-truth line by (category, image, question text); the question text is the prompt
without LLaVA's "Answer the question using a single word or phrase." and without "Please
answer yes or no." (LLaVA's converter re-adds the latter with one or two spaces; both match).
The two questions of an image are paired by image, never by line order.

Scores (per subtask, MME's ``calculation.py``): acc = 100 · correct / questions, acc+ = 100 ·
images with every question right / images, score = acc + acc+ (max 200). Perception = sum of
the 10 perception subtasks (max 2000; the paper's MME number and the headline), Cognition =
sum of the 4 cognition subtasks (max 800).

Protocols:

- ``official``: MME's parser (:func:`mme_yes_no`: lower-cased, exact "yes"/"no", else "yes"
  or "no" within the first 4 characters, else "other" = wrong); like the original, which
  only sees the answered lines, acc counts answered questions and acc+ the images with at
  least one answer.
- ``strict``: first-word parser (:func:`llava.eval.scorers.pope.strict_yes_no`; "not sure"
  is "other", not "no"); missing answers are wrong and the denominators are all
  ground-truth questions and images.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from llava.eval.scorers.common import PROTOCOLS, ScoreError, Scored, make_result
from llava.eval.scorers.yes_no import strict_yes_no

logger = logging.getLogger(__name__)

TASK = "MME"
PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
              "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
CATEGORIES = PERCEPTION + COGNITION
LLAVA_SUFFIX = "Answer the question using a single word or phrase."
MME_SUFFIX = "Please answer yes or no."
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class MMEQuestion:
    """One ground-truth line: subtask, image stem, question text, answer ("yes"/"no")."""

    category: str
    image: str
    question: str
    answer: str
    source: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return self.category, self.image, normalize_question(self.question)


# ----------------------------------------------------------------------------- parsing


def mme_yes_no(text: str) -> str:
    """MME's rule: lower-case (and strip); exactly "yes"/"no" -> itself; else "yes" if "yes"
    occurs in the first 4 characters, else "no" if "no" does; else "other"."""
    text = text.lower().strip()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def strict_mme_yes_no(text: str) -> str:
    """The strict protocol's rule: first word "yes"/"no" (case-insensitive), else "other"."""
    return strict_yes_no(text) or "other"


def normalize_question(text: str) -> str:
    """Question text for matching: LLaVA's suffix and "Please answer yes or no." removed,
    whitespace collapsed."""
    text = str(text).replace(LLAVA_SUFFIX, " ").replace(MME_SUFFIX, " ")
    return " ".join(text.split())


def image_stem(name: str) -> str:
    """Last path component without a known image extension ("artwork/images/1.jpg" -> "1")."""
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    for ext in IMAGE_EXTENSIONS + (".txt",):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


# ----------------------------------------------------------------------------- ground truth


def qa_folder(category_dir: Path) -> Path:
    """``questions_answers_YN/`` for the nested layout, else the category folder itself."""
    nested = category_dir / "questions_answers_YN"
    return nested if nested.is_dir() else category_dir


def read_qa_file(path: Path, category: str) -> list[MMEQuestion]:
    """Parse one ground-truth ``.txt``: ``question\\tanswer`` or ``image\\tquestion\\tanswer`` lines."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ScoreError(f"{path}: cannot read ({e})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) == 2:
            image, (question, answer) = path.stem, fields
        elif len(fields) == 3:
            image, question, answer = image_stem(fields[0]), fields[1], fields[2]
        else:
            raise ScoreError(f"{path}: line {n} has {len(fields)} tab-separated fields; expected "
                             "'question<TAB>answer' or 'image<TAB>question<TAB>answer'")
        answer = answer.strip().lower()
        if answer not in ("yes", "no"):
            raise ScoreError(f"{path}: line {n}: answer {answer!r} is not yes/no")
        out.append(MMEQuestion(category, image, question.strip(), answer, f"{path}:{n}"))
    return out


def read_mme_gt(gt_dir: str | Path, categories: Sequence[str] = CATEGORIES) -> list[MMEQuestion]:
    """Read every subtask folder of the MME release; all of ``categories`` must be present."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise ScoreError(f"{gt_dir}: MME ground-truth folder not found (the MME_Benchmark_release_version folder)")
    missing = [c for c in categories if not (gt_dir / c).is_dir()]
    if missing:
        raise ScoreError(f"{gt_dir}: subtask folder(s) {missing} not found; expected one folder per "
                         "MME subtask (see llava/eval/tasks/mme/scorer.py for the layouts)")
    out: list[MMEQuestion] = []
    for category in categories:
        folder = qa_folder(gt_dir / category)
        rows = [q for f in sorted(folder.glob("*.txt")) for q in read_qa_file(f, category)]
        if not rows:
            raise ScoreError(f"{folder}: no question files (*.txt) found")
        out.extend(rows)
    _warn_odd_images(out)
    return out


def _warn_odd_images(gt: Sequence[MMEQuestion]) -> None:
    per_image: dict[tuple, int] = defaultdict(int)
    for q in gt:
        per_image[q.category, q.image] += 1
    odd = [k for k, n in per_image.items() if n != 2]
    if odd:
        logger.warning("%d MME image(s) do not have exactly two questions, e.g. %s", len(odd), odd[0])


# ----------------------------------------------------------------------------- matching


def answer_key(answer: dict) -> tuple[str, str, str] | None:
    """(category, image stem, normalized question) of an answer; ``None`` if the id has no "/"."""
    qid = str(answer["question_id"])
    if "/" not in qid:
        return None
    return qid.split("/", 1)[0], image_stem(qid), normalize_question(answer.get("prompt", ""))


@dataclass
class Matched:
    """Ground truth with its answers: ``text[i]`` answers ``gt[i]`` (``None`` if missing)."""

    gt: list[MMEQuestion]
    text: list[str | None]
    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def match_answers(gt: Sequence[MMEQuestion], answers: Sequence[dict]) -> Matched:
    """Match answers to ground-truth lines by :func:`answer_key` (first answer wins)."""
    index: dict[tuple, list[int]] = defaultdict(list)
    for i, q in enumerate(gt):
        index[q.key].append(i)
    text: list[str | None] = [None] * len(gt)
    m = Matched(list(gt), text)
    for a in answers:
        key = answer_key(a)
        slots = index.get(key, []) if key else []
        free = [i for i in slots if text[i] is None]
        where = f"{a['question_id']}: {a.get('prompt', '')!r}"
        if not slots:
            m.extra.append(where)
        elif not free:
            m.duplicates.append(where)
        else:
            text[free[0]] = a["text"]
    m.missing = [f"{q.category}/{q.image}: {q.question!r}" for q, t in zip(gt, text) if t is None]
    return m


# ----------------------------------------------------------------------------- scoring


@dataclass
class SubtaskScore:
    """Counts of one subtask under one protocol's denominators."""

    questions: int = 0     # denominator of acc
    correct: int = 0
    images: int = 0        # denominator of acc+
    images_right: int = 0
    other: int = 0         # answered but parsed as "other"

    @property
    def acc(self) -> float:
        return 100 * self.correct / self.questions if self.questions else 0.0

    @property
    def acc_plus(self) -> float:
        return 100 * self.images_right / self.images if self.images else 0.0

    @property
    def score(self) -> float:
        return self.acc + self.acc_plus


def score_subtask(rows: Sequence[tuple[MMEQuestion, str | None]], protocol: str) -> SubtaskScore:
    """Score one subtask's (ground truth, answer text or None) rows, grouped by image.

    An image counts for acc+ when all its questions are answered and right. ``official``
    leaves unanswered questions (and images without any answer) out of the denominators;
    ``strict`` counts them as wrong.
    """
    parse = mme_yes_no if protocol == "official" else strict_mme_yes_no
    by_image: dict[str, list[tuple[MMEQuestion, str | None]]] = defaultdict(list)
    for q, t in rows:
        by_image[q.image].append((q, t))
    s = SubtaskScore()
    for items in by_image.values():
        preds = [parse(t) if t is not None else None for _, t in items]
        answered = sum(p is not None for p in preds)
        right = sum(p == q.answer for (q, _), p in zip(items, preds))
        s.other += sum(p == "other" for p in preds)
        s.correct += right
        s.questions += answered if protocol == "official" else len(items)
        s.images += 1 if (protocol == "strict" or answered) else 0
        s.images_right += right == len(items)
    return s


@dataclass
class MMEScore:
    protocol: str
    subtasks: dict[str, SubtaskScore]
    matched: Matched
    n_answers: int
    malformed: int = 0

    def total(self, names: Sequence[str]) -> float:
        return sum(self.subtasks[n].score for n in names if n in self.subtasks)


def score_mme(gt: Sequence[MMEQuestion], answers: Sequence[dict], protocol: str = "official") -> MMEScore:
    """Match answers to the ground truth and score every subtask present in ``gt``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}")
    m = match_answers(gt, answers)
    rows: dict[str, list] = defaultdict(list)
    for q, t in zip(m.gt, m.text):
        rows[q.category].append((q, t))
    subtasks = {c: score_subtask(rows[c], protocol) for c in CATEGORIES if c in rows}
    return MMEScore(protocol, subtasks, m, len(answers), len(getattr(answers, "malformed", [])))


# ----------------------------------------------------------------------------- output


def format_report(score: MMEScore) -> str:
    """MME ``calculation.py``-style lines: per type the total, then each subtask's score."""
    out = []
    for kind, names in (("Perception", PERCEPTION), ("Cognition", COGNITION)):
        present = [n for n in names if n in score.subtasks]
        if not present:
            continue
        out.append(f"=========== {kind} ===========")
        out.append(f"total score: {score.total(present)} \n")
        out += [f"\t {n}  score: {score.subtasks[n].score}" for n in present]
        out.append("\n")
    c = _counts(score)
    out.append(f"Other (unparsed) answers: {c['unparsed']} of {c['scored']}; missing: {c['missing']}"
               f" ({score.protocol} protocol)")
    return "\n".join(out) + "\n"


def to_metrics(score: MMEScore) -> dict[str, float]:
    """``perception``, ``cognition``, ``total`` and ``<subtask>/{score,acc,acc_plus}``."""
    m = {"perception": score.total(PERCEPTION), "cognition": score.total(COGNITION)}
    m["total"] = m["perception"] + m["cognition"]
    for name, s in score.subtasks.items():
        m.update({f"{name}/score": s.score, f"{name}/acc": s.acc, f"{name}/acc_plus": s.acc_plus})
    c = _counts(score)
    m["other_rate"] = 100 * c["unparsed"] / c["scored"] if c["scored"] else 0.0
    return m


def _counts(score: MMEScore) -> dict[str, int]:
    m = score.matched
    scored = sum(t is not None for t in m.text)
    return {"questions": len(m.gt), "answers": score.n_answers, "scored": scored,
            "unparsed": sum(s.other for s in score.subtasks.values()), "missing": len(m.missing),
            "duplicates": len(m.duplicates), "extra": len(m.extra), "malformed_lines": score.malformed,
            "images": len({(q.category, q.image) for q in m.gt})}


def build_result(score: MMEScore, settings: dict) -> dict:
    """The common result record; headline ``perception`` (the paper's MME number)."""
    quirks = [
        "parser: lower-cased; exact yes/no, else 'yes'/'no' within the first 4 characters "
        "(so 'not sure' reads as 'no'), else other (wrong)",
        "denominators count only answered questions (and images with an answer), as the original "
        "sees only the lines the converter wrote",
    ]
    notes = ["scores are MME points: per subtask acc + acc+ (0-200); perception max 2000, cognition max 800",
             "questions of an image are paired by image and question text, not by line order"]
    m = score.matched
    for label, items in (("missing", m.missing), ("extra", m.extra), ("duplicate", m.duplicates)):
        if items:
            notes.append(f"{len(items)} {label} answer(s), e.g. {items[0]}")
    return make_result(TASK, score.protocol, to_metrics(score), "perception", _counts(score),
                       quirks=quirks, notes=notes, settings=settings)


def parse(text: str) -> str:
    """MME's reading of an answer (:func:`mme_yes_no`): "yes", "no" or "other"."""
    return mme_yes_no(text)


def judge(parsed: str, gt: str) -> bool:
    """Right iff the reading equals the ground truth ("yes" / "no")."""
    return parsed == gt


def score(inputs, answers, protocol: str) -> Scored:
    """The scorer interface: ground truth from option ``gt_dir`` (the MME release folder)."""
    gt_dir = inputs.option("gt_dir")
    if not gt_dir:
        raise ScoreError("MME needs --gt-dir (the MME_Benchmark_release_version folder)")
    mme = score_mme(read_mme_gt(gt_dir), answers, protocol)
    settings = {"gt_dir": str(gt_dir), "answers_file": str(inputs.answers_file),
                "protocol": protocol, "skip_malformed": bool(inputs.skip_malformed)}
    return Scored(build_result(mme, settings), format_report(mme))
