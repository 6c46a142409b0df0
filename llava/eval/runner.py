"""The one answer-generation core behind every benchmark runner.

Every runner (``model_vqa_loader`` for the twelve MM-MergeBench tasks, POPE and MME;
``model_vqa_mmbench`` for the MMBench TSV; :func:`llava.eval.pipeline.evaluate_task` in
process) turns its questions into :class:`EvalItem` s and calls :func:`run_items`, which

- builds each prompt with the conversation template (``vicuna_v1``) and
  ``tokenizer_image_token`` (the task's prompt transform has already made the user turn);
- preprocesses images per item: ``pad`` (expand to a square with the processor's mean colour,
  then the CLIP processor), ``crop`` (the processor as is: resize + center crop) or
  ``config`` (``process_images`` with the model's ``image_aspect_ratio``, LLaVA's default);
- generates greedily (``temperature == 0``) or by sampling, ``batch_size`` questions at a
  time: prompts sorted by token length (longest first), left padding with an attention mask,
  answers written back in question order. Batch size 1 (the default) runs the questions in
  file order without any padding or mask, exactly like LLaVA's ``model_vqa_loader``;
- is resumable: answers already in ``answers_file`` are kept (their ids must belong to the
  questions, their ``prompt`` and ``model_id`` must match this run), a truncated last line
  left by a crash is dropped with a warning, repeated ids are reported and only the first is
  kept; new answers are appended and flushed after every batch; at the end the file is
  rewritten atomically with exactly one answer per question, in question order.

Answers have LLaVA's format ``{question_id, prompt, text, answer_id, model_id, metadata}``
(plus any per-item ``extra`` fields, e.g. MMBench's ``round_id``). ``answer_id`` is derived
from the model, question, prompt and answer (LLaVA drew a random ``shortuuid``), so reruns
give byte-identical files.

Chunking (``--num-chunks N --chunk-idx K``): :func:`split_list` cuts the questions into
exactly N contiguous chunks whose sizes differ by at most one; concatenating the chunk files
in K order (:func:`merge_answer_files`) restores the question order.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from robustmerge.errors import UserError
from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.eval.scorers.common import write_text_atomic
from llava.eval.tasks import Prompt, TaskSpec
from llava.eval.tasks.prompts import prompt_as_is
from llava.mm_utils import expand2square, get_model_name_from_path, pad_token_ids, process_images, tokenizer_image_token

logger = logging.getLogger(__name__)

PREPROCESSING = ("pad", "crop", "config")


class RunnerError(UserError):
    """A problem with the runner's inputs a user can fix; the message names the file and the fix."""


# ----------------------------------------------------------------------------- model and settings


@dataclass
class ModelBundle:
    """An already-loaded model: what :func:`load_pretrained_model` returns, plus a display name.

    The demo swaps adapters on one loaded base and passes a new bundle each time; nothing here
    reloads anything.
    """

    tokenizer: Any
    model: Any
    image_processor: Any
    model_id: str = "llava"

    @classmethod
    def from_loaded(cls, loaded: Sequence, model_id: str = "llava") -> "ModelBundle":
        """From ``(tokenizer, model, image_processor[, context_len])``."""
        tokenizer, model, image_processor = loaded[:3]
        return cls(tokenizer, model, image_processor, model_id)


def load_bundle(model_path: str | os.PathLike, model_base: str | os.PathLike | None = None, *,
                device: str = "auto", dtype: str | None = None, vision_tower: str | None = None,
                model_id: str | None = None) -> ModelBundle:
    """Load a checkpoint with :func:`llava.model.builder.load_pretrained_model`."""
    from llava.model.builder import load_pretrained_model

    name = model_id or get_model_name_from_path(str(model_path))
    loaded = load_pretrained_model(model_path, model_base, name, device=device, dtype=dtype,
                                   vision_tower_path=vision_tower)
    return ModelBundle.from_loaded(loaded, name)


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings (LLaVA's flags). ``temperature == 0`` is greedy."""

    conv_mode: str = "vicuna_v1"
    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1
    max_new_tokens: int = 128
    batch_size: int = 1
    #: batch only prompts of the same token length (no padding inside a batch); see ``_batches``
    same_length_batches: bool = False

    def __post_init__(self):
        if self.conv_mode not in conv_templates:
            raise RunnerError(f"unknown --conv-mode {self.conv_mode!r}; choose one of {sorted(conv_templates)}")
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.num_beams < 1:
            raise RunnerError("--batch-size, --max-new-tokens and --num-beams must be at least 1")
        if self.temperature < 0:
            raise RunnerError("--temperature must be >= 0")


# ----------------------------------------------------------------------------- items


@dataclass
class EvalItem:
    """One question to answer.

    Attributes:
        question_id: written into the answer as is (its ``str`` is the join key).
        prompt: the user turn (``Prompt.text``) and the stored ``prompt`` (``Prompt.record``).
        preprocessing: "pad", "crop" or "config" (see the module docstring).
        image_path: the image file, for questions with an image on disk.
        image_loader: returns the PIL image, for images held elsewhere (MMBench's base64).
        extra: more fields for the answer record (after ``text``).
        key_with_prompt: identify the question by id AND stored prompt (MME, where the two
            questions of an image share one question id); else by id alone.
    """

    question_id: Any
    prompt: Prompt
    preprocessing: str = "config"
    image_path: Path | None = None
    image_loader: Callable[[], Image.Image] | None = None
    extra: dict = field(default_factory=dict)
    key_with_prompt: bool = False

    @property
    def key(self) -> str:
        return record_key({"question_id": self.question_id, "prompt": self.prompt.record}, self.key_with_prompt)

    def load_image(self) -> Image.Image | None:
        if not self.prompt.has_image:
            return None
        if self.image_loader is not None:
            return self.image_loader()
        try:
            return Image.open(self.image_path).convert("RGB")
        except (OSError, ValueError) as e:
            raise RunnerError(f"{self.image_path}: cannot read the image of question "
                              f"{self.question_id!r} ({e})") from None




def record_key(record: dict, with_prompt: bool = False) -> str:
    """The join key of an answer (or question) record: ``str(question_id)`` [+ its prompt]."""
    if with_prompt:
        return json.dumps([str(record.get("question_id")), record.get("prompt")])
    return str(record.get("question_id"))


def read_question_file(path: str | os.PathLike) -> list[dict]:
    """A question file (JSON list or JSONL) whose records all have a ``question_id``.

    Repeated ids are NOT checked here (see :func:`check_items`; MME repeats them on purpose).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunnerError(f"{path}: question file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunnerError(f"{path}: cannot read ({e})") from None
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise RunnerError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    else:
        records, bad = [], []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    bad.append(n)
        if bad:
            raise RunnerError(f"{path}: line(s) {bad[:10]} are not JSON")
    missing = [n for n, r in enumerate(records, start=1) if not isinstance(r, dict) or "question_id" not in r]
    if missing:
        raise RunnerError(f"{path}: record(s) {missing[:10]} are not objects with a question_id")
    return records


def items_from_questions(questions: Sequence[dict], task: TaskSpec | None, image_folder: str | os.PathLike,
                         protocol: str = "official") -> list[EvalItem]:
    """Questions (``question_id``, ``image``, ``text``) -> items, with the task's prompt and preprocessing.

    Without a task: LLaVA's ``model_vqa_loader`` defaults (prompt as is, preprocessing from the
    model's ``image_aspect_ratio``).
    """
    folder = Path(image_folder)
    items = []
    for n, q in enumerate(questions, start=1):
        if "text" not in q:
            raise RunnerError(f"question {n} ({q.get('question_id')!r}) has no 'text'")
        prompt = task.build_prompt(q) if task is not None else prompt_as_is(q)
        path = None
        if prompt.has_image:
            if not q.get("image"):
                raise RunnerError(f"question {q['question_id']!r} has no 'image' field; "
                                  "every question of this task needs one")
            path = folder / q["image"]
        items.append(EvalItem(q["question_id"], prompt, task.preprocessing_for(protocol) if task else "config", path,
                              key_with_prompt=task is not None and task.key_with_prompt))
    return items


def check_items(items: Sequence[EvalItem], source: str = "") -> None:
    """Fail on repeated question ids and on image files that do not exist (before any model work)."""
    seen, dups = set(), []
    for it in items:
        if it.key in seen and it.key not in dups:
            dups.append(it.key)
        seen.add(it.key)
    if dups:
        hint = "" if any(it.key_with_prompt for it in items) else \
            " (MME's file repeats ids on purpose: pass --task MME)"
        raise RunnerError(f"{source or 'questions'}: repeated question id(s) {dups[:5]}; fix the question file{hint}")
    bad = [it for it in items if it.preprocessing not in PREPROCESSING]
    if bad:
        raise RunnerError(f"unknown preprocessing {bad[0].preprocessing!r}; use one of {PREPROCESSING}")
    missing = [str(it.image_path) for it in items if it.prompt.has_image and it.image_loader is None
               and (it.image_path is None or not it.image_path.is_file())]
    if missing:
        raise RunnerError(f"{len(missing)} image file(s) not found, e.g. {missing[:3]}; check --image-folder "
                          f"(image paths in {source or 'the question file'} are relative to it)")


def split_list(items: Sequence, n: int) -> list[list]:
    """Exactly ``n`` contiguous chunks; sizes differ by at most one (the first ones are larger)."""
    if n < 1:
        raise RunnerError(f"--num-chunks must be at least 1 (got {n})")
    size, rest = divmod(len(items), n)
    out, start = [], 0
    for k in range(n):
        end = start + size + (k < rest)
        out.append(list(items[start:end]))
        start = end
    return out


def get_chunk(items: Sequence, n: int, k: int) -> list:
    """Chunk ``k`` (0-based) of :func:`split_list` ``(items, n)``."""
    if not 0 <= k < n:
        raise RunnerError(f"--chunk-idx must be in 0..{n - 1} (got {k})")
    return split_list(items, n)[k]


# ----------------------------------------------------------------------------- encoding and generation


def encode_prompt(prompt: Prompt, tokenizer, conv_mode: str, use_im_start_end: bool = False) -> list[int]:
    """Token ids of the full conversation prompt, ``IMAGE_TOKEN_INDEX`` where the image goes."""
    text = prompt.text
    if use_im_start_end:
        text = text.replace(DEFAULT_IMAGE_TOKEN, DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN)
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], text)
    conv.append_message(conv.roles[1], None)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX)


def pixel_values(image: Image.Image, image_processor, mode: str, model_config) -> torch.Tensor:
    """One image -> [3, H, W] per ``mode`` ("pad", "crop" or "config")."""
    if mode == "pad":
        fill = tuple(int(x * 255) for x in image_processor.image_mean)
        return image_processor(images=expand2square(image, fill), return_tensors="pt")["pixel_values"][0]
    if mode == "crop":
        return image_processor(images=image, return_tensors="pt")["pixel_values"][0]
    return process_images([image], image_processor, model_config)[0]


def generate_batch(bundle: ModelBundle, items: Sequence[EvalItem], ids: Sequence[list[int]],
                   settings: GenerationSettings) -> list[str]:
    """Answers (decoded, stripped) for one batch; a batch of one runs without padding or mask."""
    model, tokenizer = bundle.model, bundle.tokenizer
    device, dtype = model.device, model.dtype
    images = [it.load_image() for it in items]
    pixels = [None if img is None else pixel_values(img, bundle.image_processor, it.preprocessing, model.config)
              for it, img in zip(items, images)]  # each [3, H, W] or None
    if len(items) == 1:
        input_ids, mask = torch.tensor([ids[0]], dtype=torch.long), None  # [1, L]
    else:
        input_ids, mask = pad_token_ids(ids, pad_token_id(tokenizer), "left")  # [B, Lmax] each
    if all(p is None for p in pixels):
        batch_images = None
    elif all(p is not None for p in pixels):
        batch_images = torch.stack(pixels).to(device=device, dtype=dtype)  # [B, 3, H, W]
    else:  # text-only questions next to image questions (ScienceQA)
        batch_images = [None if p is None else p.to(device=device, dtype=dtype) for p in pixels]
    image_sizes = [img.size for img in images if img is not None]
    return generate_answers(model, tokenizer, input_ids, batch_images, image_sizes, settings, attention_mask=mask)


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad token, else its end-of-sequence token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def generate_answers(model, tokenizer, input_ids: torch.Tensor, images, image_sizes: list, settings: GenerationSettings,
                     attention_mask: torch.Tensor | None = None) -> list[str]:
    """The project's one generation call (the runner's batches and ``llava.eval.run_llava``).

    Args:
        input_ids: [B, L] prompt ids (``IMAGE_TOKEN_INDEX`` where the images go), left-padded for B > 1.
        images: ``None``, a [N, 3, H, W] tensor, or a list of [3, H, W] tensors / ``None`` per row,
            already on the model's device and dtype.
        image_sizes: (width, height) of each image ([] for none).
        settings: LLaVA's decoding flags; ``temperature == 0`` is greedy.
        attention_mask: [B, L] for a padded batch, else ``None``.

    Returns:
        B answers, decoded and stripped.
    """
    device = model.device
    sample = settings.temperature > 0
    with torch.inference_mode():
        out = model.generate(
            input_ids.to(device),
            attention_mask=None if attention_mask is None else attention_mask.to(device),
            images=images,
            image_sizes=image_sizes or None,
            do_sample=sample,
            temperature=settings.temperature if sample else None,
            top_p=settings.top_p if sample else None,
            num_beams=settings.num_beams,
            max_new_tokens=settings.max_new_tokens,
            use_cache=True,
            pad_token_id=pad_token_id(tokenizer),
        )  # [B, new]: only the new tokens (generation from embeddings)
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


def answer_id(model_id: str, question_id: Any, prompt: str, text: str) -> str:
    """A 22-character id derived from the answer (stable across reruns, unlike LLaVA's shortuuid)."""
    digest = hashlib.sha256(json.dumps([model_id, str(question_id), prompt, text]).encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode("ascii").rstrip("=")


def answer_record(item: EvalItem, text: str, model_id: str) -> dict:
    """LLaVA's answer line for ``item``."""
    record = {"question_id": item.question_id, "prompt": item.prompt.record, "text": text}
    record.update(item.extra)
    record.update(answer_id=answer_id(model_id, item.question_id, item.prompt.record, text),
                  model_id=model_id, metadata={})
    return record


# ----------------------------------------------------------------------------- resume


@dataclass
class ExistingAnswers:
    """What an answers file already holds: the first record per id, plus what was dropped."""

    records: dict[str, dict] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    partial_line: bool = False


def read_existing_answers(path: Path, items: Sequence[EvalItem], model_id: str) -> ExistingAnswers:
    """Answers of an earlier (interrupted) run of the same questions, checked before they are reused.

    A last line that is not JSON and has no newline is a crash's partial write: dropped with a
    warning. Any other malformed line, answers to questions not in ``items`` (another question
    file or chunk), or answers with another ``prompt`` or ``model_id`` raise ``RunnerError``.
    """
    text = path.read_text(encoding="utf-8")
    expected = {it.key: it for it in items}
    with_prompt = any(it.key_with_prompt for it in items)
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    out, foreign, changed = ExistingAnswers(), [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == last and not text.endswith("\n"):
                out.partial_line = True
                logger.warning("%s: dropping a truncated last line (interrupted run)", path)
                continue
            raise RunnerError(f"{path}: line {i + 1} is not JSON; the file is damaged: move it away or "
                              "pass --no-resume to start over") from None
        if not isinstance(rec, dict) or "question_id" not in rec or not isinstance(rec.get("text"), str):
            raise RunnerError(f"{path}: line {i + 1} is not an answer record (question_id, text); "
                              "move the file away or pass --no-resume")
        key = record_key(rec, with_prompt)
        if key not in expected:
            foreign.append(key)
        elif key in out.records:
            out.duplicates.append(key)
        else:
            if rec.get("prompt") != expected[key].prompt.record or rec.get("model_id") != model_id:
                changed.append(key)
            out.records[key] = rec
    _check_reusable(path, foreign, changed, out, model_id)
    return out


def _check_reusable(path: Path, foreign: list, changed: list, found: ExistingAnswers, model_id: str) -> None:
    if foreign:
        raise RunnerError(f"{path}: {len(foreign)} answer(s) to questions that are not in this run's questions "
                          f"(e.g. {foreign[0]!r}): the file belongs to another question file, chunk or --limit; "
                          "use another --answers-file or pass --no-resume to overwrite it")
    if changed:
        rec = found.records[changed[0]]
        raise RunnerError(f"{path}: {len(changed)} earlier answer(s) were made with another prompt or model "
                          f"(e.g. question {changed[0]!r}: model_id {rec.get('model_id')!r}, this run {model_id!r}); "
                          "use another --answers-file or pass --no-resume to overwrite it")
    if found.duplicates:
        logger.warning("%s: %d question id(s) answered more than once; keeping the first answer of each",
                       path, len(found.duplicates))


def _write_in_order(path: Path, items: Sequence[EvalItem], records: dict[str, dict]) -> int:
    """Rewrite ``path`` atomically with the answers of ``items`` that exist, in item order."""
    rows = [records[it.key] for it in items if it.key in records]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


# ----------------------------------------------------------------------------- the run


@dataclass
class RunSummary:
    """What one run did."""

    answers_file: str
    questions: int
    reused: int
    generated: int
    duplicates_dropped: int
    partial_line_dropped: bool
    seconds: float

    def line(self) -> str:
        extra = f", {self.duplicates_dropped} duplicate(s) dropped" if self.duplicates_dropped else ""
        extra += ", a truncated line dropped" if self.partial_line_dropped else ""
        return (f"{self.answers_file}: {self.questions} answers ({self.reused} kept from an earlier run, "
                f"{self.generated} generated{extra}) in {self.seconds:.1f}s")


def _batches(items: Sequence[EvalItem], ids: Sequence[list[int]], batch_size: int,
             same_length: bool = False) -> list[list[int]]:
    """Index batches: file order for batch size 1, else longest prompts first (stable).

    With ``same_length``, a batch holds only prompts of one token length (at most
    ``batch_size``), so nothing is padded: fewer, smaller batches, in exchange for answers that
    do not depend on what else is in the batch through padding."""
    order = list(range(len(items)))
    if batch_size > 1:
        order.sort(key=lambda i: -len(ids[i]))
    if not same_length or batch_size == 1:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and len(ids[batches[-1][0]]) == len(ids[i]):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def run_items(bundle: ModelBundle, items: Sequence[EvalItem], answers_file: str | os.PathLike,
              settings: GenerationSettings = GenerationSettings(), *, resume: bool = True,
              source: str = "", on_batch: Callable[[int], None] | None = None,
              progress: bool = True) -> RunSummary:
    """Answer ``items`` into ``answers_file`` (see the module docstring).

    Args:
        bundle: the loaded model.
        items: the questions, in the order the answers file will have.
        answers_file: the JSONL output; reused when ``resume`` (else overwritten).
        settings: decoding settings.
        resume: keep the answers already in ``answers_file``.
        source: the question file's name, for messages.
        on_batch: called with the number of answers generated so far after each batch.
        progress: show a tqdm bar.

    Returns:
        A :class:`RunSummary`.
    """
    start = time.perf_counter()
    path = Path(answers_file)
    if source and path.resolve() == Path(source).resolve():
        raise RunnerError(f"{path}: the answers file would overwrite the question file; choose another --answers-file")
    check_items(items, source)
    existing = ExistingAnswers()
    if path.exists() and resume:
        existing = read_existing_answers(path, items, bundle.model_id)
    elif path.exists():
        logger.warning("%s exists; overwriting it (--no-resume)", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = dict(existing.records)
    _write_in_order(path, items, records)  # drops a partial line and duplicates before appending
    todo = [it for it in items if it.key not in records]
    generated = _generate_into(bundle, todo, path, settings, records, on_batch, progress)
    written = _write_in_order(path, items, records)
    assert written == len(items), (written, len(items))
    return RunSummary(str(path), len(items), len(existing.records), generated, len(existing.duplicates),
                      existing.partial_line, time.perf_counter() - start)


def _generate_into(bundle: ModelBundle, todo: Sequence[EvalItem], path: Path, settings: GenerationSettings,
                   records: dict[str, dict], on_batch, progress: bool) -> int:
    """Generate ``todo`` batch by batch, appending (and flushing) every batch's answers to ``path``."""
    if not todo:
        return 0
    from tqdm import tqdm

    use_se = bool(getattr(bundle.model.config, "mm_use_im_start_end", False))
    ids = [encode_prompt(it.prompt, bundle.tokenizer, settings.conv_mode, use_se) for it in todo]
    done = 0
    with open(path, "a", encoding="utf-8") as f, tqdm(total=len(todo), disable=not progress,
                                                       desc=path.name, unit="q") as bar:
        for batch in _batches(todo, ids, settings.batch_size, settings.same_length_batches):
            texts = generate_batch(bundle, [todo[i] for i in batch], [ids[i] for i in batch], settings)
            for i, text in zip(batch, texts):
                rec = answer_record(todo[i], text, bundle.model_id)
                records[todo[i].key] = rec
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
            done += len(batch)
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(done)
    return done


# ----------------------------------------------------------------------------- chunk files


def merge_answer_files(chunk_files: Sequence[str | os.PathLike], out: str | os.PathLike,
                       expected_keys: Sequence[str] | None = None, key_with_prompt: bool = False) -> int:
    """Concatenate chunk answer files in the given order into ``out`` (atomically).

    Every line must be a complete answer record; no question (:func:`record_key`) may appear
    twice; with ``expected_keys`` the merged keys must be exactly those, in that order.
    Returns the number of answers.
    """
    rows, seen = [], set()
    for chunk in map(Path, chunk_files):
        if not chunk.is_file():
            raise RunnerError(f"{chunk}: chunk answers file not found; did that chunk's run fail?")
        text = chunk.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise RunnerError(f"{chunk}: line {n} is not JSON (an interrupted chunk?); rerun the chunk "
                                  "to resume it") from None
            if not isinstance(rec, dict) or "question_id" not in rec:
                raise RunnerError(f"{chunk}: line {n} is not an answer record")
            key = record_key(rec, key_with_prompt)
            if key in seen:
                raise RunnerError(f"{chunk}: question {key!r} is answered in more than one line or chunk")
            seen.add(key)
            rows.append(line)
    if expected_keys is not None:
        want = list(expected_keys)
        got = [record_key(json.loads(r), key_with_prompt) for r in rows]
        if got != want:
            missing = [x for x in want if x not in seen]
            raise RunnerError(f"{out}: the chunks hold {len(got)} answers for {len(want)} questions "
                              f"({len(missing)} missing, e.g. {missing[:3]}); rerun the incomplete chunks")
    write_text_atomic(out, "".join(r + "\n" for r in rows))
    return len(rows)
