"""The demo's ten tasks, each answered by the ``llava.eval`` runner and scored by an MM-MergeBench scorer.

A :class:`DemoTask` names the MM-MergeBench task whose scorer (``score(inputs, answers,
protocol)``, :mod:`llava.eval.tasks`) it borrows (see the table in
:mod:`robustmerge.demo.generator`). Everything is scored with the ``strict`` protocol (id join,
empty answers wrong, the grounding parser keeps every digit) and pad preprocessing, the
project's corrected reading of the benchmark.

Captions are the one exception to "the scorer as is": the caption scorers always
computes METEOR, whose Java process takes about 10 s to start — longer than evaluating a model
on every task of this miniature. The demo therefore scores captions with pycocoevalcap's
CIDEr-D, BLEU-1..4 and ROUGE-L on the same COCO ground-truth file, after a pure-Python version
of pycocoevalcap's PTB tokenisation (lower case, punctuation removed), so it needs no Java.
The table shows ROUGE-L (0-100): the miniature's templated captions reach CIDEr values of
several hundred (x100 scale), which would outweigh every other task in the averages; CIDEr
is in ``result.json``. ``result.json`` says all this in its notes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

from llava.eval.scorers.caption import read_gt
from llava.eval.scorers.common import (
    ScoreError, Scored, join_by_id, join_counts, make_result, read_answers, write_result,
)
from llava.eval.tasks import ScoreInputs, TaskSpec, get_task
from robustmerge.atomic import write_text_atomic

PROTOCOL = "strict"
PREPROCESSING = "pad"
#: one generous budget for every task (the benchmark gives 128 or 1024 tokens), so a model
#: that answers with a sentence is judged on that sentence, not cut short
MAX_NEW_TOKENS = 24


@dataclass(frozen=True)
class DemoTask:
    """One task of the miniature.

    Attributes:
        name: the task (folder under ``instructions/`` and ``datasets/``, results column).
        split: "seen" (an adapter is trained on it) or "unseen".
        rule: the MM-MergeBench task whose scorer it uses, or "caption" (the demo's own, see above).
        skill: what it asks, for the README and the results.
    """

    name: str
    split: str
    rule: str
    skill: str

    @property
    def headline(self) -> str:
        """accuracy, or ROUGE-L for captions (see the module docstring)."""
        return "ROUGE_L" if self.rule == "caption" else "accuracy"

    def runner_task(self) -> TaskSpec:
        """The task spec the runner needs: the rule task's, with prompt as is, pad and the budget."""
        base = get_task("Flickr30k" if self.rule == "caption" else self.rule)
        return dataclasses.replace(base, name=self.name, group=self.split, headline=self.headline,
                                   question_file=f"instructions/{self.name}/test.json", prompt="as_is",
                                   preprocessing={"official": PREPROCESSING, "strict": PREPROCESSING},
                                   max_new_tokens=MAX_NEW_TOKENS, key_with_prompt=False)

    def question_file(self, data_root: Path, split: str) -> Path:
        return Path(data_root) / "instructions" / self.name / f"{split}.json"

    def gt_file(self, data_root: Path, split: str) -> Path | None:
        if self.rule != "caption":
            return None
        return Path(data_root) / "instructions" / self.name / f"{split}_coco_type.json"


TASKS: dict[str, DemoTask] = {t.name: t for t in (
    DemoTask("Colors", "seen", "VQAv2", "short-answer VQA: the object's colour"),
    DemoTask("Shapes", "seen", "ImageNet", "classification with an option list: the object's class (ball, tile...)"),
    DemoTask("Count", "seen", "IconQA", "counting 1-4 small objects"),
    DemoTask("Locate", "seen", "Grounding", "grounding: the object's box, IoU > 0.5"),
    DemoTask("Read", "seen", "OCRVQA", "reading a rendered three-letter word"),
    DemoTask("Choice", "seen", "AOKVQA", "multiple choice with letters: the object's quadrant"),
    DemoTask("Caption", "seen", "caption", "captioning one or two objects"),
    DemoTask("ColorShape", "unseen", "VQAv2", "colour and shape in one answer (Colors + Shapes)"),
    DemoTask("CountColor", "unseen", "IconQA", "counting the objects of one colour (Count + Colors)"),
    DemoTask("ReadChoice", "unseen", "AOKVQA", "which word is written, as an option letter (Read + Choice)"),
)}
SEEN = tuple(n for n, t in TASKS.items() if t.split == "seen")
UNSEEN = tuple(n for n, t in TASKS.items() if t.split == "unseen")


def demo_layout():
    """The ``robustmerge.table`` layout of the miniature (its layout provider "demo")."""
    from robustmerge.table import Layout

    return Layout("demo", "MM-MergeBench miniature (robustmerge demo)", SEEN, UNSEEN)


# ----------------------------------------------------------------------------- captions without Java

_PUNCT = set(string.punctuation) | {"''", "``", "-LRB-", "-RRB-", "-LCB-", "-RCB-", "..."}


def tokenize_caption(text: str) -> str:
    """pycocoevalcap's PTB tokenisation for plain captions: lower case, punctuation dropped."""
    tokens = re.findall(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?|[^\sA-Za-z0-9]", text.lower())
    return " ".join(t for t in tokens if t not in _PUNCT)


def caption_cider(gts: dict[int, list[str]], res: dict[int, str]) -> dict[str, float]:
    """CIDEr-D, BLEU-1..4 and ROUGE-L (x100) from pycocoevalcap's pure-Python scorers."""
    import contextlib
    import io

    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        raise ScoreError("caption metrics need pycocoevalcap: pip install -e '.[eval]'") from None
    tok_gts = {k: [tokenize_caption(c) for c in v] for k, v in gts.items()}
    tok_res = {k: [tokenize_caption(c)] for k, c in res.items()}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its statistics
        bleu, _ = Bleu(4).compute_score(tok_gts, tok_res)
        rouge, _ = Rouge().compute_score(tok_gts, tok_res)
        cider, _ = Cider().compute_score(tok_gts, tok_res)
    metrics = {f"Bleu_{n}": 100.0 * float(b) for n, b in enumerate(bleu, start=1)}
    metrics.update(ROUGE_L=100.0 * float(rouge), CIDEr=100.0 * float(cider))
    return metrics


def score_captions(task: str, gt_file: Path, questions, answers, settings: dict) -> Scored:
    """Question i (file order) is GT image id i + 1; a missing answer is an empty caption."""
    image_ids, refs, _ = read_gt(str(gt_file))
    report = join_by_id(questions, answers, question_file=settings.get("question_file", ""),
                        answers_file=settings.get("answers_file", ""))
    if sorted(image_ids) != list(range(1, len(questions) + 1)):
        raise ScoreError(f"{gt_file}: image ids must be 1..{len(questions)}, one per question in order")
    res = {i: (a["text"] if a is not None else "") for i, (_, a) in enumerate(report.pairs, start=1)}
    metrics = caption_cider({i: refs[i] for i in image_ids}, res)
    unparsed = sum(not a["text"].strip() for _, a in report.answered)
    counts = join_counts(report, len(questions), len(answers), scored=len(image_ids), unparsed=unparsed)
    notes = ["demo caption scoring: pycocoevalcap CIDEr-D, BLEU-1..4, ROUGE-L (headline: templated captions give "
             "CIDEr in the hundreds) after a Python PTB-style tokenisation; METEOR and the Java PTB tokenizer "
             "skipped (about 10 s per call)"]
    result = make_result(task, PROTOCOL, metrics, "ROUGE_L", counts, notes=notes, settings=settings)
    lines = "".join(f"{k}: {v:.2f}\n" for k, v in metrics.items())
    return Scored(result, lines)


# ----------------------------------------------------------------------------- scoring and evaluation


def score(task: DemoTask, question_file: Path, answers, settings: dict, gt_file: Path | None = None) -> dict:
    """The result record of ``answers`` under the task's MM-MergeBench scorer (strict protocol)."""
    if task.rule == "caption":
        from llava.eval.runner import read_question_file

        scored = score_captions(task.name, gt_file, read_question_file(question_file), answers, settings)
        where = "the demo's caption scorer"
    else:
        spec = get_task(task.rule)
        inputs = ScoreInputs(answers_file=settings["answers_file"], question_file=str(question_file))
        scored = spec.scorer.score(inputs, answers, PROTOCOL)
        where = f"the {spec.name} scorer (llava/eval/tasks/{spec.folder.name}/scorer.py)"
    result = scored.result
    result["task"], result["settings"] = task.name, dict(settings)
    result["notes"] = [f"demo task scored with {where}"] + result["notes"]
    return result


def evaluate(bundle, task: DemoTask, split: str, data_root: str | Path, out_dir: str | Path, *,
             batch_size: int = 16, limit: int | None = None) -> dict:
    """Answer ``split`` of ``task`` with the loaded model, score it, write ``answers.jsonl`` and
    ``result.json`` into ``out_dir``; returns the result record."""
    from llava.eval.runner import GenerationSettings, items_from_questions, read_question_file, run_items

    data_root, out = Path(data_root), Path(out_dir)
    qfile = task.question_file(data_root, split)
    questions = read_question_file(qfile)[:limit]
    scored_file = qfile
    if limit is not None:      # the scorer reads its questions from a file: the first ``limit`` of them
        scored_file = out / "questions.json"
        write_text_atomic(scored_file, json.dumps(questions))
    items = items_from_questions(questions, task.runner_task(), data_root / "datasets", PROTOCOL)
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size)
    answers_file = out / "answers.jsonl"
    summary = run_items(bundle, items, answers_file, settings, resume=False, source=str(qfile), progress=False)
    answers = read_answers(answers_file)
    run_settings = {"question_file": str(qfile), "answers_file": str(answers_file), "split": split,
                    "generation": {"conv_mode": settings.conv_mode, "temperature": settings.temperature,
                                   "max_new_tokens": settings.max_new_tokens, "batch_size": batch_size,
                                   "preprocessing": PREPROCESSING, "model_id": bundle.model_id,
                                   "seconds": round(summary.seconds, 3)}}
    gt = task.gt_file(data_root, split)
    if gt is not None:
        run_settings["gt_file"] = str(gt)
    result = score(task, scored_file, answers, run_settings, gt)
    write_result(out / "result.json", result)
    return result


def headline(result: dict) -> float:
    return float(result["metrics"][result["headline"]])
