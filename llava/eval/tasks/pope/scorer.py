"""POPE scorer (LLaVA-1.5 protocol): accuracy, precision, recall, F1 and yes-ratio per split.

Inputs (LLaVA's layout):

- ``--annotation-dir``: ``coco_pope_{adversarial,popular,random}.json``, JSON lines
  ``{question_id, image, text, label}`` with ``label`` "yes" / "no".
- ``--question-file``: ``llava_pope_test.jsonl`` (``question_id, image, text, category``).
- ``--answers-file``: the runner's answers JSONL (``question_id, prompt, text, ...``).

Protocols:

- ``official`` reproduces LLaVA's ``eval_pope.py`` line for line: per split, the answers whose
  question (looked up in the question file) has that category are taken in answers-file order
  and paired BY POSITION with the label lines (``zip``, so the shorter list wins); the
  yes-ratio is over those answers, not over the pairs. Parsing (:func:`llava_yes_no`): text
  before the first ".", commas removed, split on single spaces; "no" if any token is exactly
  "No", "no" or "not", else "yes" (so "NO", "Not sure", "" and garbage count as yes).
- ``strict`` joins by id: each label line is matched to its question in the question file by
  (split, image, question text without the LLaVA suffix) -- the released label files number
  their questions 1..N per split, so their ids cannot be joined to the answers directly --
  and the answer is joined to that question by ``question_id``. Parsing
  (:func:`strict_yes_no`): the first word, case-insensitive, must be "yes" or "no"; anything
  else (and a missing answer) is wrong: it counts as a false negative on a "yes" label and
  as neither TN nor FP on a "no" label.

Both protocols report the non-conforming rate: the share of scored answers whose first word
is not yes/no (:func:`strict_yes_no` gives ``None``); it is also ``unparsed_share``.

The printed lines are the original's (fractions, ``str(float)``; blocks in the fixed order
adversarial, popular, random instead of ``os.listdir`` order). ``result.json`` stores the
same numbers ×100 (``<split>/f1`` ...), and the headline ``f1_mean``: the mean F1 of the three
splits ×100, the number LLaVA-1.5 and the paper report.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from llava.eval.scorers.common import ScoreError, Scored, join_by_id, make_result, read_answers, read_questions
from llava.eval.scorers.yes_no import strict_yes_no

logger = logging.getLogger(__name__)

TASK = "POPE"
SPLITS = ("adversarial", "popular", "random")
LLAVA_SUFFIX = "Answer the question using a single word or phrase."


# ----------------------------------------------------------------------------- parsing


def llava_yes_no(text: str) -> str:
    """LLaVA's POPE rule: keep the text before the first ".", drop commas, split on " ";
    "no" if any token is exactly "No", "no" or "not", else "yes"."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def parse(text: str) -> str | None:
    """The strict reading of an answer (:func:`strict_yes_no`; the official one is :func:`llava_yes_no`)."""
    return strict_yes_no(text)


def judge(parsed: str | None, gt: str) -> bool:
    """Right iff the reading equals the label ("yes" / "no")."""
    return parsed == gt


# ----------------------------------------------------------------------------- counting


@dataclass
class SplitScore:
    """Confusion counts of one split; ``n_pred`` / ``n_yes`` give the yes-ratio.

    ``other`` counts strict-protocol labels whose answer was missing or non-conforming on a
    "no" label (wrong, yet neither TN nor FP); on a "yes" label such answers are in ``fn``.
    """

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    other: int = 0
    n_pred: int = 0
    n_yes: int = 0
    n_samples: int = 0   # what the original prints as "# samples" (answers of the split)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn + self.other

    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.total if self.total else 0.0

    def precision(self) -> float:
        return float(self.tp) / float(self.tp + self.fp) if self.tp + self.fp else 0.0

    def recall(self) -> float:
        return float(self.tp) / float(self.tp + self.fn) if self.tp + self.fn else 0.0

    def f1(self) -> float:
        p, r = self.precision(), self.recall()
        return 2 * p * r / (p + r) if p + r else 0.0

    def yes_ratio(self) -> float:
        return self.n_yes / self.n_pred if self.n_pred else 0.0

    def add(self, label: str, pred: str | None) -> None:
        """Count one (label, prediction) pair; ``pred`` None = missing or non-conforming."""
        if label == "yes":
            if pred == "yes":
                self.tp += 1
            else:
                self.fn += 1
        elif pred == "yes":
            self.fp += 1
        elif pred == "no":
            self.tn += 1
        else:
            self.other += 1


def score_positional(labels: Sequence[str], texts: Sequence[str]) -> SplitScore:
    """Official rule for one split: parse every answer with :func:`llava_yes_no`, yes-ratio
    over all answers, confusion over ``zip(answers, labels)`` (by position)."""
    preds = [llava_yes_no(t) for t in texts]
    s = SplitScore(n_pred=len(preds), n_yes=preds.count("yes"), n_samples=len(texts))
    for pred, label in zip(preds, labels):
        s.add(label, pred)
    return s


def score_joined(labels: Sequence[str], texts: Sequence[str | None]) -> SplitScore:
    """Strict rule for one split: ``texts[i]`` is the answer to label ``i`` (``None`` if
    missing); parse with :func:`strict_yes_no`; yes-ratio over all labels."""
    s = SplitScore(n_pred=len(labels), n_samples=sum(t is not None for t in texts))
    for label, text in zip(labels, texts):
        pred = strict_yes_no(text) if text is not None else None
        s.n_yes += pred == "yes"
        s.add(label, pred)
    return s


# ----------------------------------------------------------------------------- inputs


def read_labels(annotation_dir: str | Path) -> dict[str, list[dict]]:
    """Read ``coco_pope_<split>.json`` for the three splits; labels must be "yes" / "no"."""
    out = {}
    for split in SPLITS:
        path = Path(annotation_dir) / f"coco_pope_{split}.json"
        if not path.is_file():
            raise ScoreError(f"{path}: label file not found; --annotation-dir must hold "
                             f"coco_pope_{{{','.join(SPLITS)}}}.json")
        rows = read_questions(path)
        bad = [i for i, r in enumerate(rows, 1) if r.get("label") not in ("yes", "no")]
        if bad:
            raise ScoreError(f"{path}: line(s) {bad[:10]} lack a label 'yes' or 'no'")
        out[split] = rows
    return out


def question_key(split: str, image: str, text: str) -> tuple[str, str, str]:
    """Content key of a POPE question: split, image, first line of the text (LLaVA's suffix
    is on the second line)."""
    return split, str(image), str(text).split("\n")[0].strip()


def match_labels_to_questions(labels: dict[str, list[dict]], questions: Sequence[dict],
                              label_dir: str = "") -> dict[str, list[dict | None]]:
    """For each split, the question-file record of every label line (``None`` if not found).

    Matching is by :func:`question_key`; repeated keys are matched in file order.
    """
    pool: dict[tuple, deque] = defaultdict(deque)
    for q in questions:
        pool[question_key(q.get("category", ""), q.get("image", ""), q.get("text", ""))].append(q)
    out = {}
    for split, rows in labels.items():
        out[split] = [_pop(pool, question_key(split, r.get("image", ""), r.get("text", "")))
                      for r in rows]
    unmatched = sum(q is None for qs in out.values() for q in qs)
    if unmatched == sum(len(r) for r in labels.values()):
        raise ScoreError(f"{label_dir}: no label line matches a question of the question file "
                         "by (category, image, text); are they from the same POPE version?")
    return out


def _pop(pool: dict, key: tuple) -> dict | None:
    return pool[key].popleft() if pool.get(key) else None


# ----------------------------------------------------------------------------- scoring


@dataclass
class PopeScore:
    """Per-split counts plus the bookkeeping a result record needs."""

    protocol: str
    splits: dict[str, SplitScore]
    counts: dict[str, int]
    quirks: list[str]
    notes: list[str]

    def f1_mean(self) -> float:
        return sum(s.f1() for s in self.splits.values()) / len(self.splits)


def _join(labels: dict[str, list[dict]], questions: Sequence[dict], answers: Sequence[dict],
          files: dict[str, str]):
    """Labels -> questions (by content) -> answers (by id); returns (matched, answer_of, report)."""
    matched = match_labels_to_questions(labels, questions, files.get("annotation_dir", ""))
    known = [q for split in SPLITS for q in matched[split] if q is not None]
    report = join_by_id(known, answers, question_file=files.get("question_file", ""),
                        answers_file=files.get("answers_file", ""))
    answer_of = {str(q["question_id"]): a for q, a in report.pairs if a is not None}
    return matched, answer_of, report


def _base_counts(labels, answers, report, matched) -> dict[str, int]:
    unmatched = sum(q is None for qs in matched.values() for q in qs)
    return {
        "questions": sum(len(r) for r in labels.values()), "answers": len(answers),
        "missing": len(report.missing) + unmatched, "duplicates": len(report.duplicates),
        "extra": len(report.extra), "labels_without_question": unmatched,
        "malformed_lines": len(getattr(answers, "malformed", [])),
    }


def score_official(labels: dict[str, list[dict]], questions: Sequence[dict],
                   answers: Sequence[dict], files: dict[str, str] | None = None) -> PopeScore:
    """LLaVA's ``eval_pope.py``: per split, answers of that category in file order, paired with
    the label lines by position. The id join is computed only for the counts and to count the
    positions where the pairing disagrees with it (``misaligned``)."""
    files = files or {}
    matched, _, report = _join(labels, questions, answers, files)
    category_of = {str(q["question_id"]): q.get("category") for q in questions}
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for a in answers:
        cat = category_of.get(str(a["question_id"]))
        if cat in by_split:
            by_split[cat].append(a)
    splits, scored, unparsed, misaligned = {}, 0, 0, 0
    for split in SPLITS:
        cur = by_split[split]
        splits[split] = score_positional([r["label"] for r in labels[split]], [a["text"] for a in cur])
        paired = cur[:len(labels[split])]
        scored += len(paired)
        unparsed += sum(strict_yes_no(a["text"]) is None for a in paired)
        misaligned += sum(q is None or str(q["question_id"]) != str(a["question_id"])
                          for q, a in zip(matched[split], paired))
    counts = _base_counts(labels, answers, report, matched)
    counts.update(scored=scored, unparsed=unparsed, misaligned=misaligned)
    quirks = [
        "answers paired with label lines by position within each split (answers-file order), not by id",
        "parsing: text before the first '.', commas removed, split on ' '; 'no' iff a token is "
        "'No', 'no' or 'not', else 'yes' (so 'NO', 'Not sure', empty and garbage answers count as yes)",
        "yes-ratio over all answers of the split, confusion counts over the zipped pairs",
    ]
    notes = _unmatched_note(counts)
    if misaligned:
        notes.append(f"{misaligned} positional pair(s) disagree with the id join; the strict protocol "
                     "joins by id")
    return PopeScore("official", splits, counts, quirks, notes)


def score_strict(labels: dict[str, list[dict]], questions: Sequence[dict],
                 answers: Sequence[dict], files: dict[str, str] | None = None) -> PopeScore:
    """Id-joined scoring with the first-word parser; missing and non-conforming answers are wrong."""
    files = files or {}
    matched, answer_of, report = _join(labels, questions, answers, files)
    splits, scored, unparsed = {}, 0, 0
    for split in SPLITS:
        texts = [answer_of[str(q["question_id"])]["text"]
                 if q is not None and str(q["question_id"]) in answer_of else None
                 for q in matched[split]]
        splits[split] = score_joined([r["label"] for r in labels[split]], texts)
        present = [t for t in texts if t is not None]
        scored += len(present)
        unparsed += sum(strict_yes_no(t) is None for t in present)
    counts = _base_counts(labels, answers, report, matched)
    counts.update(scored=scored, unparsed=unparsed, misaligned=0)
    notes = ["labels matched to questions by (split, image, question text), answers to questions by "
             "question_id; missing and non-conforming answers are wrong"] + _unmatched_note(counts)
    return PopeScore("strict", splits, counts, [], notes)


def _unmatched_note(counts: dict[str, int]) -> list[str]:
    n = counts["labels_without_question"]
    return [f"{n} label line(s) match no question of the question file; counted as missing"] if n else []


# ----------------------------------------------------------------------------- output


def format_split(split: str, s: SplitScore, strict: bool = False) -> str:
    """The block the original prints for one split (same wording, ``str(float)`` numbers);
    ``strict`` adds a line with the wrong non-yes/no answers on "no" labels."""
    lines = [
        f"Category: {split}, # samples: {s.n_samples}",
        "TP\tFP\tTN\tFN\t",
        f"{s.tp}\t{s.fp}\t{s.tn}\t{s.fn}",
        *([f"Missing or non-conforming on 'no' labels (wrong): {s.other}"] if strict else []),
        f"Accuracy: {s.accuracy()}",
        f"Precision: {s.precision()}",
        f"Recall: {s.recall()}",
        f"F1 score: {s.f1()}",
        f"Yes ratio: {s.yes_ratio()}",
        "%.3f, %.3f, %.3f, %.3f, %.3f" % (s.f1(), s.accuracy(), s.precision(), s.recall(), s.yes_ratio()),
        "====================================",
    ]
    return "\n".join(lines) + "\n"


def format_report(score: PopeScore) -> str:
    """All split blocks (fixed order adversarial, popular, random) followed by a summary."""
    strict = score.protocol == "strict"
    blocks = "".join(format_split(split, s, strict) for split, s in score.splits.items())
    c = score.counts
    share = c["unparsed"] / c["scored"] if c["scored"] else 0.0
    tail = (f"Mean F1: {score.f1_mean() * 100:.2f} ({score.protocol} protocol)\n"
            f"Non-conforming answers: {c['unparsed']} of {c['scored']} ({share * 100:.2f}%)\n")
    return blocks + tail


def to_metrics(score: PopeScore) -> dict[str, float]:
    """Metrics ×100: ``<split>/{accuracy,precision,recall,f1,yes_ratio}``, means, non-conforming rate."""
    m: dict[str, float] = {}
    for split, s in score.splits.items():
        m.update({f"{split}/accuracy": 100 * s.accuracy(), f"{split}/precision": 100 * s.precision(),
                  f"{split}/recall": 100 * s.recall(), f"{split}/f1": 100 * s.f1(),
                  f"{split}/yes_ratio": 100 * s.yes_ratio()})
    n = len(score.splits)
    m["f1_mean"] = 100 * score.f1_mean()
    m["accuracy_mean"] = 100 * sum(s.accuracy() for s in score.splits.values()) / n
    c = score.counts
    m["nonconforming_rate"] = 100 * c["unparsed"] / c["scored"] if c["scored"] else 0.0
    return m


def build_result(score: PopeScore, settings: dict) -> dict:
    """The common result record; per-split confusion counts go into ``counts``."""
    counts = dict(score.counts)
    for split, s in score.splits.items():
        counts.update({f"{split}/TP": s.tp, f"{split}/FP": s.fp, f"{split}/TN": s.tn,
                       f"{split}/FN": s.fn, f"{split}/other": s.other})
    notes = list(score.notes) + [
        "metrics are percentages (x100); the printed lines use fractions like the original",
        "headline f1_mean = mean F1 of adversarial, popular, random (LLaVA-1.5's POPE number)",
    ]
    return make_result(TASK, score.protocol, to_metrics(score), "f1_mean", counts,
                       quirks=score.quirks, notes=notes, settings=settings)


def score_answers(annotation_dir: str, question_file: str, answers_file: str, answers: Sequence[dict],
                  protocol: str = "official", skip_malformed: bool = False) -> tuple[PopeScore, dict]:
    """Score ``answers`` (read from ``answers_file``); returns the score and the settings it used."""
    labels = read_labels(annotation_dir)
    questions = read_questions(question_file)
    files = {"annotation_dir": str(annotation_dir), "question_file": str(question_file),
             "answers_file": str(answers_file)}
    fn = score_official if protocol == "official" else score_strict
    settings = dict(files, protocol=protocol, skip_malformed=skip_malformed)
    return fn(labels, questions, answers, files), settings


def score_files(annotation_dir: str, question_file: str, answers_file: str,
                protocol: str = "official", skip_malformed: bool = False) -> tuple[PopeScore, dict]:
    """Read the three inputs and score them; returns the score and the settings it used."""
    read_labels(annotation_dir)          # label and question errors first, as before
    read_questions(question_file)
    answers = read_answers(answers_file, skip_malformed=skip_malformed)
    return score_answers(annotation_dir, question_file, answers_file, answers, protocol, skip_malformed)


def check_inputs(inputs) -> None:
    """Label and question errors are reported before answer errors."""
    if not inputs.option("annotation_dir") or not inputs.question_file:
        raise ScoreError("POPE needs --annotation-dir and --question-file")
    read_labels(inputs.option("annotation_dir"))
    read_questions(inputs.question_file)


def score(inputs, answers, protocol: str) -> Scored:
    """The scorer interface: labels from option ``annotation_dir``, questions from ``question_file``."""
    pope, settings = score_answers(inputs.option("annotation_dir"), inputs.question_file, inputs.answers_file,
                                   answers, protocol, bool(inputs.skip_malformed))
    return Scored(build_result(pope, settings), format_report(pope))
