"""ScienceQA (IMG and text-only problems of the test split): option-letter accuracy.

Ground truth comes from ScienceQA's ``problems.json`` (``{id: {choices, answer (index), image,
...}}``) and ``pid_splits.json`` (``{split: [ids]}``); answers are joined by problem id.
Letter parsing (both protocols, :func:`parse_letter`): the text is exactly one of A-E; else its
first character is in A-E and followed by ". "; else ``The answer is ([A-Z]).`` (the final "."
matches any character) matches exactly once; else FAILED. A letter beyond the number of choices
(or FAILED) gives index -1, which is wrong.

- ``official`` reproduces LLaVA's ``eval_science_qa.py``: every problem of the split counts, a
  missing answer is FAILED; when an id is answered twice the LAST line wins; answers to other
  problems are ignored. IMG-Accuracy covers problems whose answer ``prompt`` contains
  ``<image>`` (so a missing answer never counts as an image problem). Writes ``output.jsonl``
  and ``output_result.jsonl`` (indent 2) like the original's ``--output-file`` /
  ``--output-result``.
- ``strict``: the FIRST answer line of an id is used (duplicates reported); IMG-Accuracy covers
  the problems that have an image in ``problems.json``, answered or not.

Headline: ``accuracy`` over all test problems (the paper's column is "SciQA"; the choice and
``img_accuracy`` are both in the result).
"""

from __future__ import annotations

import json
import os
import re
from typing import Sequence

from llava.eval.scorers.common import (
    ScoreError, Scored, join_by_id, join_counts, make_result, read_json, read_questions,
)
from llava.eval.scorers.exact import join_notes

OPTIONS = ("A", "B", "C", "D", "E")

_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")

OFFICIAL_QUIRKS = (
    "an id answered twice: the last line wins",
    "IMG-Accuracy over problems whose answer prompt contains '<image>' (missing answers are never image problems)",
    "'The answer is X' regex: the final '.' matches any character",
)


def parse_letter(text: str) -> str:
    """The option letter the original reads from a prediction, or "FAILED"."""
    if text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else "FAILED"


def pred_index(letter: str, n_choices: int) -> int:
    """Index of ``letter`` among the first ``n_choices`` options, else -1."""
    return OPTIONS.index(letter) if letter in OPTIONS[:n_choices] else -1


def parse(text: str) -> str:
    """The option letter of a prediction (:func:`parse_letter`)."""
    return parse_letter(text)


def judge(parsed: str, gt: dict) -> bool:
    """Right iff the letter names the problem's answer among its choices."""
    return pred_index(parsed, len(gt["choices"])) == gt["answer"]


def score_records(problems: dict, split_ids: Sequence[str], answers: Sequence[dict], *, protocol: str,
                  settings: dict | None = None) -> Scored:
    """Accuracy and IMG-Accuracy (see the module docstring).

    Args:
        problems: ``problems.json`` content.
        split_ids: the problem ids of the split, in ``pid_splits.json`` order.
        answers: answer records (``question_id`` = problem id string, ``text``, ``prompt``).
        protocol: "official" or "strict".
        settings: input paths and options for the result.
    """
    settings = dict(settings or {})
    af = settings.get("answers_file", "")
    missing_pids = [pid for pid in split_ids if pid not in problems]
    if missing_pids:
        raise ScoreError(f"{settings.get('problems', 'problems.json')}: split ids not in problems: "
                         f"{missing_pids[:5]}")
    report = join_by_id([{"question_id": pid} for pid in split_ids], answers,
                        question_file=settings.get("pid_splits", "pid_splits.json"), answers_file=af)
    if protocol == "official":
        bad = [a["question_id"] for a in answers if not isinstance(a["question_id"], str)]
        if bad:
            raise ScoreError(f"{af}: question_id must be the problem id as a string (got {bad[0]!r}); "
                             "the original would count every problem as unanswered")
        by_id = {a["question_id"]: a for a in answers}          # last line wins
    else:
        by_id = {str(q["question_id"]): a for q, a in report.answered}  # first line wins
    rows, outputs, indices, unparsed = [], {}, {}, 0
    for pid in split_ids:
        prob, ans = problems[pid], by_id.get(pid)
        text = ans["text"] if ans is not None else "FAILED"
        prompt = ans.get("prompt", "") if ans is not None else "Unknown"
        letter = parse_letter(text)
        idx = pred_index(letter, len(prob["choices"]))
        image = ("<image>" in prompt) if protocol == "official" else bool(prob.get("image"))
        rows.append(({"question_id": pid, "parsed_ans": letter,
                      "ground_truth": OPTIONS[prob["answer"]], "question": prompt, "pred": text,
                      "is_multimodal": image}, idx == prob["answer"]))
        outputs[pid], indices[pid] = text, idx
        unparsed += ans is not None and idx == -1
    return _summarise(rows, outputs, indices, unparsed, report, answers, protocol, settings)


def _summarise(rows, outputs, indices, unparsed, report, answers, protocol, settings) -> Scored:
    total = len(rows)
    if not total:
        raise ScoreError(f"{settings.get('pid_splits', 'pid_splits.json')}: the split is empty")
    correct = sum(ok for _, ok in rows)
    img = [ok for r, ok in rows if r["is_multimodal"]]
    if not img:
        raise ScoreError(f"{settings.get('answers_file', '')}: no image problems to score "
                         "(IMG-Accuracy undefined; the original divides by zero)")
    acc, img_acc = correct / total * 100, sum(img) / len(img) * 100
    counts = join_counts(report, total, len(answers), scored=total, unparsed=unparsed,
                         malformed=len(getattr(answers, "malformed", [])))
    counts.update(correct=correct, img_questions=len(img), img_correct=sum(img))
    notes = join_notes(report, protocol) + [
        "headline = accuracy over all test problems; img_accuracy (problems with an image) also reported"]
    result = make_result("ScienceQA", protocol, {"accuracy": acc, "img_accuracy": img_acc}, "accuracy",
                         counts, quirks=OFFICIAL_QUIRKS, notes=notes, settings=settings)
    line = (f"Total: {total}, Correct: {correct}, Accuracy: {acc:.2f}%, "
            f"IMG-Accuracy: {img_acc:.2f}%\n")
    side = {}
    if protocol == "official":
        split = {"correct": [r for r, ok in rows if ok], "incorrect": [r for r, ok in rows if not ok]}
        sqa = {"acc": acc, "correct": correct, "count": total, "results": indices, "outputs": outputs}
        side = {"output.jsonl": json.dumps(split, indent=2), "output_result.jsonl": json.dumps(sqa, indent=2)}
    return Scored(result, line, side)


def score(inputs, answers: Sequence[dict], protocol: str) -> Scored:
    """Score against ``problems.json`` / ``pid_splits.json`` (options ``base_dir`` or ``problems``
    and ``pid_splits``; ``split``). ``question_file`` (the LLaVA-format test.json) is optional:
    when given, its ids must be the split's ids."""
    base_dir, split = inputs.option("base_dir"), inputs.option("split", "test")
    problems_path = inputs.option("problems") or (os.path.join(base_dir, "problems.json") if base_dir else None)
    splits_path = inputs.option("pid_splits") or (os.path.join(base_dir, "pid_splits.json") if base_dir else None)
    if not problems_path or not splits_path:
        raise ScoreError("ScienceQA needs --base-dir, or --problems and --pid-splits")
    problems, splits = read_json(problems_path), read_json(splits_path)
    if not isinstance(splits, dict) or split not in splits:
        raise ScoreError(f"{splits_path}: no split {split!r}")
    if not isinstance(problems, dict):
        raise ScoreError(f"{problems_path}: expected an object {{problem id: problem}}")
    split_ids = [str(x) for x in splits[split]]
    settings = {"answers_file": str(inputs.answers_file), "problems": str(problems_path),
                "pid_splits": str(splits_path), "split": split,
                "skip_malformed": bool(inputs.skip_malformed)}
    if inputs.question_file:
        qids = {str(q["question_id"]) for q in read_questions(inputs.question_file)}
        if qids != set(split_ids):
            raise ScoreError(f"{inputs.question_file}: its {len(qids)} question ids are not the "
                             f"{len(split_ids)} ids of split {split!r} in {splits_path}")
        settings["question_file"] = str(inputs.question_file)
    return score_records(problems, split_ids, answers, protocol=protocol, settings=settings)
