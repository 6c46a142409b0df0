"""MMBench (dev) scorer: local CircularEval with exact-matching letter extraction, and the
submission spreadsheet for the official server.

Inputs: ``--question-file`` the MMBench TSV (see :mod:`llava.eval.mmbench_data`), which
already holds the option-rotated copies of each question (``index + k * 1_000_000``), and
``--answers-file`` the runner's JSONL with ``question_id`` = the TSV ``index``.

Rules (both protocols; LLaVA has no local MMBench scorer, so ``official`` and ``strict``
coincide and the result says so):

- Letter extraction (:func:`extract_letter`), exact matching only, no LLM judge: the
  characters ``.()[],:;!*#{}"'`` become spaces, the text is split on whitespace, and the
  tokens that equal one of the row's present option letters (upper case) are collected. One
  distinct letter -> that letter; none or several -> extraction failure (wrong). So "B",
  "B.", "(B) cat", "The answer is B" give B; "AB", "A and B", "b" and "" fail. A leading
  article "A" ("A cat") is read as the letter A, as exact matching must.
- Answers are joined to rows by id. CircularEval: the rows sharing ``index % 1_000_000``
  form a group; the group is right only if every copy in the TSV is answered and its
  extracted letter equals that copy's ``answer``. Headline ``circular_accuracy`` = 100 ·
  right groups / groups, overall and per ``category`` / ``l2-category`` (the group's).
- ``vanilla_accuracy``: per-row accuracy over the unrotated rows (``index < 1_000_000``).
- ``extraction_failure_rate``: 100 · failures / answered rows (also ``unparsed_share``).

The submission spreadsheet has the TSV's columns except ``image``, with ``prediction`` (the
raw answer text, empty when unanswered) inserted before ``answer``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from llava.eval.mmbench_data import CIRCULAR_STRIDE, MMBenchItem, read_mmbench_tsv, read_tsv_frame
from llava.eval.scorers.common import ScoreError, Scored, join_by_id, make_result

logger = logging.getLogger(__name__)

TASK = "MMBench"
_SEPARATORS = str.maketrans({c: " " for c in ".()[],:;!*#{}\"'"})


def extract_letter(text: str, letters: Iterable[str]) -> str | None:
    """The single option letter named in ``text`` (exact token match), else ``None``."""
    allowed = set(letters)
    found = {tok for tok in text.translate(_SEPARATORS).split() if tok in allowed}
    return found.pop() if len(found) == 1 else None


def parse(text: str) -> str | None:
    """The single letter A-E named in ``text`` (the scorer uses each row's own letters)."""
    return extract_letter(text, "ABCDE")


def judge(parsed: str | None, gt: str) -> bool:
    """Right iff a letter was extracted and it is the row's answer."""
    return parsed is not None and parsed == gt


@dataclass
class RowOutcome:
    """One TSV row's outcome: ``text`` None = unanswered; ``pred`` None = no letter."""

    item: MMBenchItem
    text: str | None
    pred: str | None

    @property
    def correct(self) -> bool:
        return self.pred is not None and self.pred == self.item.answer


@dataclass
class Tally:
    right: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return 100 * self.right / self.total if self.total else 0.0


def outcomes(items: Sequence[MMBenchItem], answers: Sequence[dict], tsv: str = "", answers_file: str = ""):
    """Join answers to rows by id and extract letters; returns (outcomes, join report)."""
    report = join_by_id([{"question_id": it.index} for it in items], answers,
                        question_file=tsv, answers_file=answers_file)
    out = []
    for it, (_, a) in zip(items, report.pairs):
        text = a["text"] if a is not None else None
        pred = extract_letter(text, it.options) if text is not None else None
        out.append(RowOutcome(it, text, pred))
    return out, report


def circular_groups(rows: Sequence[RowOutcome]) -> dict[int, list[RowOutcome]]:
    """Rows grouped by ``index % 1_000_000``, in first-seen order."""
    groups: dict[int, list[RowOutcome]] = defaultdict(list)
    for r in rows:
        groups[r.item.circular_id].append(r)
    return dict(groups)


def circular_tallies(groups: dict[int, list[RowOutcome]]) -> dict[str, Tally]:
    """CircularEval tallies: ``overall``, ``category/<name>`` and ``l2/<name>`` (a group is
    right iff all its rows are answered correctly; its labels are its first row's)."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    for rows in groups.values():
        right = all(r.correct for r in rows)
        first = rows[0].item
        keys = ["overall"]
        keys += [f"category/{first.category}"] if first.category else []
        keys += [f"l2/{first.l2_category}"] if first.l2_category else []
        for k in keys:
            tallies[k].total += 1
            tallies[k].right += right
    return dict(tallies)


@dataclass
class MMBenchScore:
    protocol: str
    rows: list[RowOutcome]
    tallies: dict[str, Tally]
    vanilla: Tally
    counts: dict[str, int]


def score_mmbench(items: Sequence[MMBenchItem], answers: Sequence[dict], protocol: str = "official",
                  tsv: str = "", answers_file: str = "") -> MMBenchScore:
    """CircularEval, vanilla accuracy and extraction failures of ``answers`` on ``items``."""
    missing_key = [it.index for it in items if it.answer is None]
    if missing_key:
        raise ScoreError(f"{tsv or 'MMBench TSV'}: no answer key for index {missing_key[:5]}; "
                         "local scoring needs the dev split (the test split is scored by the server)")
    rows, report = outcomes(items, answers, tsv, answers_file)
    vanilla = Tally()
    for r in rows:
        if r.item.index < CIRCULAR_STRIDE:
            vanilla.total += 1
            vanilla.right += r.correct
    answered = [r for r in rows if r.text is not None]
    groups = circular_groups(rows)
    counts = {"questions": len(rows), "answers": len(answers), "scored": len(answered),
              "unparsed": sum(r.pred is None for r in answered), "missing": len(report.missing),
              "duplicates": len(report.duplicates), "extra": len(report.extra),
              "malformed_lines": len(getattr(answers, "malformed", [])), "groups": len(groups)}
    tallies = circular_tallies(groups)
    counts["groups_correct"] = tallies["overall"].right if "overall" in tallies else 0
    return MMBenchScore(protocol, rows, tallies, vanilla, counts)


def to_metrics(score: MMBenchScore) -> dict[str, float]:
    """``circular_accuracy`` (headline), ``vanilla_accuracy``, ``extraction_failure_rate`` and
    ``circular/category/<name>``, ``circular/l2/<name>``; all ×100."""
    c = score.counts
    m = {"circular_accuracy": score.tallies.get("overall", Tally()).accuracy,
         "vanilla_accuracy": score.vanilla.accuracy,
         "extraction_failure_rate": 100 * c["unparsed"] / c["scored"] if c["scored"] else 0.0}
    for key in sorted(k for k in score.tallies if k != "overall"):
        m[f"circular/{key}"] = score.tallies[key].accuracy
    return m


def format_report(score: MMBenchScore) -> str:
    """Printed lines: overall CircularEval, vanilla, extraction failures, per category."""
    c, overall = score.counts, score.tallies.get("overall", Tally())
    lines = [f"CircularEval accuracy: {overall.accuracy:.2f}% ({overall.right} of {overall.total} groups)",
             f"Vanilla accuracy: {score.vanilla.accuracy:.2f}% ({score.vanilla.right} of {score.vanilla.total})",
             f"Extraction failures: {c['unparsed']} of {c['scored']} answered rows; missing: {c['missing']}"]
    for prefix, title in (("category/", "Category"), ("l2/", "L2-category")):
        keys = sorted(k for k in score.tallies if k.startswith(prefix))
        if keys:
            lines.append(f"{title} (CircularEval):")
            lines += [f"  {k[len(prefix):]}: {score.tallies[k].accuracy:.2f}% "
                      f"({score.tallies[k].right}/{score.tallies[k].total})" for k in keys]
    return "\n".join(lines) + "\n"


def build_result(score: MMBenchScore, settings: dict) -> dict:
    """The common result record; headline ``circular_accuracy``."""
    notes = ["CircularEval with exact-matching letter extraction (no LLM judge); the official server's "
             "ChatGPT-assisted extraction can score higher",
             "official and strict protocols coincide for MMBench (LLaVA has no local scorer)",
             "metrics are percentages (x100)"]
    return make_result(TASK, score.protocol, to_metrics(score), "circular_accuracy", score.counts,
                       notes=notes, settings=settings)


# ----------------------------------------------------------------------------- submission


def submission_frame(tsv: str | Path, answers: Sequence[dict]):
    """The TSV minus ``image`` with a ``prediction`` column (raw answer text; first answer per
    id wins; empty when unanswered) inserted before ``answer`` (appended if there is none)."""
    df = read_tsv_frame(tsv, drop_image=True)
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # control characters break .xlsx

    by_id: dict[str, str] = {}
    for a in answers:
        by_id.setdefault(str(a["question_id"]), ILLEGAL_CHARACTERS_RE.sub("", a["text"]))
    predictions = [by_id.get(str(int(i)), "") for i in df["index"]]
    at = list(df.columns).index("answer") if "answer" in df.columns else len(df.columns)
    df.insert(at, "prediction", predictions)
    df["index"] = df["index"].astype(int)
    return df


def write_submission(path: str | Path, df, inputs: Sequence[str | Path] = ()) -> Path:
    """Write ``df`` as .xlsx (openpyxl) atomically; never over one of ``inputs``."""
    path = Path(path)
    if any(Path(p).resolve() == path.resolve() for p in inputs):
        raise ScoreError(f"{path}: refusing to overwrite an input file; choose another --submission-file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".xlsx", dir=path.parent)
    os.close(fd)
    try:
        df.to_excel(tmp, index=False, engine="openpyxl")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def score(inputs, answers: Sequence[dict], protocol: str) -> Scored:
    """The scorer interface: CircularEval of the TSV ``question_file``, and the submission
    spreadsheet (option ``submission_file``, default ``submission.xlsx`` beside the result file;
    none with option ``no_submission``). A TSV without answer keys (the test split) gives only
    the spreadsheet and ``Scored.result`` None."""
    if not inputs.question_file:
        raise ScoreError("MMBench needs --question-file (the MMBench TSV)")
    items = read_mmbench_tsv(inputs.question_file)
    settings = {"question_file": str(inputs.question_file), "answers_file": str(inputs.answers_file),
                "protocol": protocol, "skip_malformed": bool(inputs.skip_malformed)}
    submit = not inputs.option("no_submission")
    if items and all(it.answer is None for it in items):      # test split: server scoring only
        written = [str(_submit(inputs, answers))] if submit else []
        return Scored(None, f"{inputs.question_file}: no answer key; local scoring skipped\n", written=written)
    mmbench = score_mmbench(items, answers, protocol, inputs.question_file, inputs.answers_file)
    written = [str(_submit(inputs, answers))] if submit else []
    if written:
        settings["submission_file"] = written[0]
    return Scored(build_result(mmbench, settings), format_report(mmbench), written=written)


def _submit(inputs, answers: Sequence[dict]) -> Path:
    result_file = Path(inputs.result_file or Path(inputs.answers_file).parent / "result.json")
    sub = Path(inputs.option("submission_file") or result_file.parent / "submission.xlsx")
    return write_submission(sub, submission_frame(inputs.question_file, answers),
                            inputs=[inputs.question_file, inputs.answers_file])


#: the answer runner of this task when the pipeline fans it out (module, its flags)
RUNNER = ("llava.eval.model_vqa_mmbench", ("--single-pred-prompt",))


def build_items(spec, question_file, image_folder, protocol: str) -> list:
    """The runner items: each TSV row with LLaVA-1.5's single-prediction prompt (see
    :mod:`llava.eval.model_vqa_mmbench`)."""
    from llava.eval.model_vqa_mmbench import mmbench_items

    return mmbench_items(question_file, single_pred_prompt=True)
