"""The caption family (VizWiz-caption, Flickr30k, Screen2Words): COCO caption metrics.

Metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr from pycocoevalcap's individual scorers after its
PTB tokenizer, each ×100, and ``Average``, their unweighted mean (what the scripts print last).
SPICE is never computed (it downloads a model; the original scripts never print it). The PTB
tokenizer and METEOR run Java: without ``java`` on PATH the scorer stops with a clear message.

Ground truth: the ``*_coco_type.json`` file (``--gt-file``): ``images [{id, file_name}]``,
``annotations [{image_id, caption, id}]``.

- ``official`` reproduces ``eval_caption.py`` (Screen2Words), ``eval_vizwiz_caption.py`` and
  ``eval_flickr30k.py`` of RobustMerge (pycocotools ``COCO.loadRes`` + ``COCOEvalCap``): the k-th
  answer line becomes the caption of image id k (1-based) BY POSITION, ids ignored; every image
  of the GT file must get exactly one caption and no caption may name another image (the
  original fails an assertion otherwise; here: a clear error). ``Samples`` = answer lines.
  ``--question-file`` is optional and only guards against answers from another question file.
- ``strict``: ``--question-file`` is required; answers are joined to questions by id, question i
  (0-based, question-file order) is image id i + 1 of the GT file (the benchmark's convention,
  checked: the GT image ids must be exactly 1..N, and ``file_name`` is compared with the
  question's ``image`` when both exist); a missing answer is scored as an empty caption.

Headline: ``CIDEr`` (our reading of the paper's caption columns: the zero-shot Screen2Words
value 5.98 fits CIDEr, not the 7-metric mean); ``Average`` is stored too. ``unparsed`` counts
empty captions.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
from collections import defaultdict
from typing import Callable, Sequence

from llava.eval.scorers.common import (
    ScoreError, Scored, check_same_questions, join_by_id, join_counts, make_result, read_json, read_questions,
)
from llava.eval.scorers.exact import is_empty, join_notes

logger = logging.getLogger(__name__)

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
HEADLINE = "CIDEr"
#: Tasks whose original script also writes ans_gt.json (eval_flickr30k.py does not).
WRITES_ANS_GT = {"VizWiz-caption": True, "Screen2Words": True, "Flickr30k": False}

OFFICIAL_QUIRKS = (
    "answer line k is the caption of GT image id k (by position, ids ignored)",
    "SPICE skipped (pycocoevalcap would download Stanford CoreNLP; the scripts never report it)",
)
NOTES = (
    "headline = CIDEr (x100); Average = unweighted mean of BLEU-1..4, METEOR, ROUGE-L, CIDEr, as the scripts print",
)


def require_java() -> None:
    """Raise ``ScoreError`` unless pycocoevalcap and a ``java`` executable are available."""
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        raise ScoreError("caption metrics need pycocoevalcap: pip install 'robustmerge-llava[eval]'") from None
    if shutil.which("java") is None:
        raise ScoreError("caption metrics need Java (pycocoevalcap's PTB tokenizer and METEOR run "
                         "'java'); install a Java runtime, e.g. 'apt-get install default-jre-headless', "
                         "and put java on PATH")


def caption_metrics(gts: dict[int, list[str]], res: dict[int, str]) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (fractions, as pycocoevalcap returns them).

    Args:
        gts: image id -> reference captions (in the GT file's order), in image order.
        res: image id -> the predicted caption; same keys as ``gts``.
    """
    require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    tok_gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in gts.items()})
    tok_res = tokenizer.tokenize({k: [{"caption": c}] for k, c in res.items()})
    # The tokenizer pairs output lines with ids by zip: an empty LAST caption can lose its line.
    for k in res:
        tok_res.setdefault(k, [""])
    out: dict[str, float] = {}
    chatter = io.StringIO()          # Bleu prints its statistics; keep stdout for the result lines
    with contextlib.redirect_stdout(chatter):
        bleu, _ = Bleu(4).compute_score(tok_gts, tok_res)
        out.update(zip(METRICS[:4], bleu))
        meteor = Meteor()
        try:
            out["METEOR"], _ = meteor.compute_score(tok_gts, tok_res)
        finally:
            _close_meteor(meteor)
        out["ROUGE_L"], _ = Rouge().compute_score(tok_gts, tok_res)
        out["CIDEr"], _ = Cider().compute_score(tok_gts, tok_res)
    logger.debug("pycocoevalcap: %s", chatter.getvalue().strip())
    return {k: float(out[k]) for k in METRICS}


def _close_meteor(meteor) -> None:
    proc = getattr(meteor, "meteor_p", None)
    if proc is not None and proc.poll() is None:
        proc.stdin.close()
        proc.kill()
        proc.wait()


def read_gt(path: str) -> tuple[list[int], dict[int, list[str]], dict[int, str]]:
    """A COCO caption file: image ids in file order, captions per image, file names per image."""
    gt = read_json(path)
    try:
        image_ids = [img["id"] for img in gt["images"]]
        names = {img["id"]: img.get("file_name", "") for img in gt["images"]}
        caps: dict[int, list[str]] = defaultdict(list)
        for ann in gt["annotations"]:
            caps[ann["image_id"]].append(ann["caption"])
    except (KeyError, TypeError):
        raise ScoreError(f"{path}: not a COCO caption file (images [{{id}}], annotations "
                         "[{image_id, caption}])") from None
    empty = [i for i in image_ids if not caps.get(i)]
    if empty:
        raise ScoreError(f"{path}: {len(empty)} image(s) without reference captions, e.g. {empty[:3]}")
    return image_ids, dict(caps), names


def score_records(task: str, gt_path: str, answers: Sequence[dict], *, protocol: str,
                  questions: Sequence[dict] | None = None, settings: dict | None = None) -> Scored:
    """Caption metrics (see the module docstring)."""
    settings = dict(settings or {})
    af, qf = settings.get("answers_file", ""), settings.get("question_file", "")
    image_ids, refs, names = read_gt(gt_path)
    notes = list(NOTES)
    if protocol == "official":
        report = check_same_questions(questions, answers, question_file=qf, answers_file=af) if questions else None
        captions = _official_captions(image_ids, answers, gt_path, af)
        n_questions = len(questions) if questions else len(image_ids)
    else:
        if not questions:
            raise ScoreError("the strict caption protocol needs --question-file (to join answers by id)")
        report = join_by_id(questions, answers, question_file=qf, answers_file=af)
        captions = _strict_captions(image_ids, names, report, gt_path, qf, notes)
        n_questions = len(questions)
    gts = {i: refs[i] for i in image_ids}
    res = {i: captions[i] for i in image_ids}
    metrics = {k: v * 100.0 for k, v in caption_metrics(gts, res).items()}
    metrics["Average"] = sum(metrics[k] for k in METRICS) / len(METRICS)
    samples = len(answers) if protocol == "official" else len(image_ids)
    unparsed = sum(is_empty(a["text"]) for a in answers) if protocol == "official" else \
        sum(is_empty(a["text"]) for _, a in report.answered)
    counts = _counts(report, n_questions, len(answers), samples, unparsed, answers)
    if report is not None:
        notes += join_notes(report, protocol)
    result = make_result(task, protocol, metrics, HEADLINE, counts, quirks=OFFICIAL_QUIRKS,
                         notes=notes, settings=settings)
    side = _side_files(task, image_ids, refs, captions, samples, metrics) if protocol == "official" else {}
    return Scored(result, _lines(metrics, samples), side)


def _official_captions(image_ids, answers, gt_path, af) -> dict[int, str]:
    captions = {k + 1: a["text"] for k, a in enumerate(answers)}
    if not captions:
        raise ScoreError(f"{af}: no answers")
    unknown = sorted(set(captions) - set(image_ids))
    if unknown:
        raise ScoreError(f"{af}: {len(answers)} answer lines but {gt_path} has {len(image_ids)} images "
                         f"(no image id {unknown[0]}); the original fails ('Results do not correspond "
                         "to current coco set'). Use --protocol strict")
    uncovered = [i for i in image_ids if i not in captions]
    if uncovered:
        raise ScoreError(f"{af}: only {len(answers)} answer lines for the {len(image_ids)} images of "
                         f"{gt_path}; the original fails an assertion. Use --protocol strict")
    return captions


def _strict_captions(image_ids, names, report, gt_path, qf, notes) -> dict[int, str]:
    n = len(report.pairs)
    if sorted(image_ids) != list(range(1, n + 1)):
        raise ScoreError(f"{gt_path}: image ids must be 1..{n} (one per question of {qf}, in order); "
                         f"found {len(image_ids)} images")
    captions, differ = {}, 0
    for i, (q, a) in enumerate(report.pairs, start=1):
        captions[i] = a["text"] if a is not None else ""
        name, image = names.get(i), q.get("image")
        if name and image and os.path.basename(name) != os.path.basename(image):
            differ += 1
    if differ:
        logger.warning("%s: %d GT file names differ from the questions' images", gt_path, differ)
        notes.append(f"{differ} GT image file_name(s) differ from the question's image at the same position")
    return captions


def _counts(report, n_questions, n_answers, samples, unparsed, answers) -> dict[str, int]:
    malformed = len(getattr(answers, "malformed", []))
    if report is None:
        return {"questions": n_questions, "answers": n_answers, "scored": samples, "unparsed": unparsed,
                "missing": 0, "duplicates": 0, "extra": 0, "malformed_lines": malformed}
    return join_counts(report, n_questions, n_answers, scored=samples, unparsed=unparsed, malformed=malformed)


def _lines(metrics: dict[str, float], samples: int) -> str:
    body = "".join(f"{k}: {metrics[k]:.2f}\n" for k in METRICS)
    return body + "Samples: {}\nAverage: {:.2f}%\n\n".format(samples, metrics["Average"])


def _side_files(task, image_ids, refs, captions, samples, metrics) -> dict[str, str]:
    preds = [{"image_id": k, "caption": captions[k]} for k in sorted(captions)]
    text = "Samples: {}\n".format(samples) + "".join(f"{k}: {metrics[k]:.2f}\n" for k in METRICS) \
        + "Average: {:.2f}\n".format(metrics["Average"])
    side = {"pred_coco_type.json": json.dumps(preds, indent=4), "Result.text": text}
    if WRITES_ANS_GT.get(task, False):
        merged = [{"pred": p["caption"], "ground_truth": refs.get(p["image_id"], [])} for p in preds]
        side["ans_gt.json"] = json.dumps(merged, indent=4, ensure_ascii=False)
    return side


def parse_caption(text: str) -> str:
    """A caption is scored as written (pycocoevalcap tokenises it)."""
    return text


def task_scorer(task: str) -> Callable:
    """``score(inputs, answers, protocol)`` of a caption task (ground truth: option ``gt_file``)."""
    def score(inputs, answers, protocol: str) -> Scored:
        require_java()
        gt_file = inputs.option("gt_file")
        if not gt_file:
            raise ScoreError(f"{task} needs --gt-file (its COCO caption ground truth)")
        questions = read_questions(inputs.question_file) if inputs.question_file else None
        settings = {"answers_file": str(inputs.answers_file), "gt_file": str(gt_file),
                    "skip_malformed": bool(inputs.skip_malformed)}
        if inputs.question_file:
            settings["question_file"] = str(inputs.question_file)
        return score_records(task, gt_file, answers, protocol=protocol, questions=questions, settings=settings)
    return score
