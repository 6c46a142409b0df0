"""The answer-generation core (llava.eval.runner): chunking, resuming, bad input, batching.

A tiny random LLaVA (llava.model.tiny) answers a handful of generated questions; torch runs
on one thread (faster and steadier than two on a shared machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from llava.eval import runner
from llava.eval.runner import EvalItem, GenerationSettings, RunnerError
from llava.eval.tasks.prompts import Prompt

PHRASE = "Answer the question using a single word or phrase."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from llava.model.tiny import make_tiny_llava

    tiny = make_tiny_llava(tmp_path_factory.mktemp("tiny") / "m")
    return runner.load_bundle(tiny.base, device="cpu")


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[EvalItem]:
    """Eight questions: prompts of different lengths, pad and crop, one text-only."""
    folder = tmp_path_factory.mktemp("images")
    questions = [f"What color is the shape?\n{PHRASE}", "Describe the image briefly.",
                 "What is shown in the image? Please describe it in detail, with every shape and colour.",
                 f"What shape is this?\n{PHRASE}"]
    out = []
    for i in range(8):
        path = folder / f"{i}.png"
        Image.new("RGB", (30 + 9 * i, 60 - 3 * i), (25 * i, 120, 220 - 25 * i)).save(path)
        text, has_image = questions[i % 4], i != 5
        prompt = Prompt(("<image>\n" if has_image else "") + text, text, has_image)
        out.append(EvalItem(i if i % 3 else f"q{i}", prompt, "pad" if i % 2 else "crop", path if has_image else None))
    return out


SETTINGS = GenerationSettings(max_new_tokens=10)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(bundle, items, tmp_path_factory) -> bytes:
    """The uninterrupted batch-size-1 answers file."""
    path = tmp_path_factory.mktemp("ref") / "answers.jsonl"
    summary = runner.run_items(bundle, items, path, SETTINGS, progress=False)
    assert (summary.questions, summary.generated, summary.reused) == (8, 8, 0)
    return path.read_bytes()


# ----------------------------------------------------------------------------- chunking


def test_split_list_is_exact():
    for n_items in range(0, 23):
        data = list(range(n_items))
        for n in range(1, 9):
            chunks = runner.split_list(data, n)
            sizes = [len(c) for c in chunks]
            assert len(chunks) == n and sum(chunks, []) == data
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
            assert [runner.get_chunk(data, n, k) for k in range(n)] == chunks
    with pytest.raises(RunnerError, match="chunk-idx"):
        runner.get_chunk([1, 2], 2, 2)
    with pytest.raises(RunnerError, match="num-chunks"):
        runner.split_list([1], 0)


# ----------------------------------------------------------------------------- inputs


def test_question_file_reader_and_item_checks(tmp_path):
    rows = [{"question_id": 1, "image": "a.png", "text": "x"}, {"question_id": "2", "image": "b.png", "text": "y"}]
    (tmp_path / "q.json").write_text(json.dumps(rows))
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert runner.read_question_file(tmp_path / "q.json") == runner.read_question_file(tmp_path / "q.jsonl") == rows
    (tmp_path / "bad.jsonl").write_text('{"question_id": 1}\n{"text": "no id"}\n')
    with pytest.raises(RunnerError, match="question_id"):
        runner.read_question_file(tmp_path / "bad.jsonl")
    with pytest.raises(RunnerError, match="not found"):
        runner.read_question_file(tmp_path / "missing.json")

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    items = runner.items_from_questions(rows, None, tmp_path)
    assert [it.prompt.text for it in items] == ["<image>\nx", "<image>\ny"] and items[0].preprocessing == "config"
    with pytest.raises(RunnerError, match=r"1 image file\(s\) not found.*b.png.*--image-folder"):
        runner.check_items(items, "q.json")
    twice = runner.items_from_questions([rows[0], dict(rows[0], text="z")], None, tmp_path)
    with pytest.raises(RunnerError, match="repeated question id.*--task MME"):
        runner.check_items(twice, "q.json")


# ----------------------------------------------------------------------------- batching


def test_batched_answers_equal_single(bundle, items, reference, tmp_path):
    texts = [r["text"] for r in map(json.loads, reference.decode().splitlines())]
    assert len(set(texts)) >= 3  # the questions get different answers, so the comparison means something
    for batch_size in (3, 8):
        path = tmp_path / f"b{batch_size}.jsonl"
        runner.run_items(bundle, items, path, GenerationSettings(max_new_tokens=10, batch_size=batch_size),
                         progress=False)
        assert path.read_bytes() == reference, batch_size  # same answers, same (question) order


def test_answer_records_have_llava_format(reference, items):
    rows = [json.loads(x) for x in reference.decode().splitlines()]
    assert [r["question_id"] for r in rows] == [it.question_id for it in items]
    for row, it in zip(rows, items):
        assert list(row) == ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]
        assert row["prompt"] == it.prompt.record and row["model_id"] == "llava-v1.5-tiny" and row["metadata"] == {}
        assert row["answer_id"] == runner.answer_id(row["model_id"], it.question_id, row["prompt"], row["text"])


# ----------------------------------------------------------------------------- resume


def test_resume_drops_partial_line_and_duplicates(bundle, items, reference, tmp_path):
    ref = reference.decode().splitlines(keepends=True)
    path = tmp_path / "answers.jsonl"
    path.write_text(ref[2] + ref[0] + ref[2] + ref[1][: len(ref[1]) // 2])  # crash mid-line
    summary = runner.run_items(bundle, items, path, SETTINGS, progress=False)
    assert path.read_bytes() == reference
    assert (summary.reused, summary.generated) == (2, 6)
    assert (summary.duplicates_dropped, summary.partial_line_dropped) == (1, True)


def test_interrupted_then_resumed_equals_uninterrupted(bundle, items, reference, tmp_path):
    path = tmp_path / "answers.jsonl"

    def stop(done):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_items(bundle, items, path, GenerationSettings(max_new_tokens=10, batch_size=2),
                         on_batch=stop, progress=False)
    assert len(path.read_text().splitlines()) == 4  # flushed batch by batch
    summary = runner.run_items(bundle, items, path, SETTINGS, progress=False)
    assert (summary.reused, summary.generated) == (4, 4)
    assert path.read_bytes() == reference
    again = runner.run_items(bundle, items, path, SETTINGS, progress=False)  # nothing left to do
    assert (again.reused, again.generated) == (8, 0) and path.read_bytes() == reference


def test_resume_refuses_answers_it_cannot_trust(bundle, items, reference, tmp_path):
    ref = reference.decode().splitlines(keepends=True)
    path = tmp_path / "answers.jsonl"
    cases = {
        "another question file": ref[0].replace('"question_id": "q0"', '"question_id": "other-1"'),
        "another prompt": ref[0].replace("What color", "Which colour"),
        "is not JSON": "{broken\n" + ref[1],
        "not an answer record": '{"question_id": 1}\n',
    }
    for message, content in cases.items():
        path.write_text(content)
        with pytest.raises(RunnerError, match=message):
            runner.run_items(bundle, items, path, SETTINGS, progress=False)
        assert path.read_text() == content  # nothing was overwritten
    path.write_text(ref[0])
    other_model = runner.ModelBundle(bundle.tokenizer, bundle.model, bundle.image_processor, "another-model")
    with pytest.raises(RunnerError, match="another prompt or model"):
        runner.run_items(other_model, items, path, SETTINGS, progress=False)
    runner.run_items(other_model, items[:1], path, SETTINGS, resume=False, progress=False)  # --no-resume overwrites
    assert lines(path)[0]["model_id"] == "another-model"


def test_shared_question_ids_are_keyed_by_prompt(bundle, items, tmp_path):
    """MME: both questions of an image share the question id."""
    pair = [EvalItem("color/1.png", Prompt("<image>\n" + t, t, True), "pad", items[0].image_path, key_with_prompt=True)
            for t in ("Is it red?", "Is it blue?")]
    path = tmp_path / "mme.jsonl"
    runner.run_items(bundle, pair, path, SETTINGS, progress=False)
    full = path.read_bytes()
    path.write_bytes(full.splitlines(keepends=True)[1])  # only the second question answered
    summary = runner.run_items(bundle, pair, path, SETTINGS, progress=False)
    assert (summary.reused, summary.generated) == (1, 1) and path.read_bytes() == full


# ----------------------------------------------------------------------------- chunk merging


def test_merge_answer_files(bundle, items, reference, tmp_path):
    chunks = []
    for k, part in enumerate(runner.split_list(items, 3)):
        chunks.append(tmp_path / f"3_{k}.jsonl")
        runner.run_items(bundle, part, chunks[-1], SETTINGS, progress=False)
    keys = [it.key for it in items]
    assert runner.merge_answer_files(chunks, tmp_path / "merged.jsonl", keys) == 8
    assert (tmp_path / "merged.jsonl").read_bytes() == reference
    with pytest.raises(RunnerError, match="0 missing|missing"):
        runner.merge_answer_files(chunks[:2], tmp_path / "m2.jsonl", keys)
    with pytest.raises(RunnerError, match="more than one"):
        runner.merge_answer_files([chunks[0], chunks[0]], tmp_path / "m3.jsonl")
    chunks[1].write_text(chunks[1].read_text()[:-5])
    with pytest.raises(RunnerError, match="not JSON"):
        runner.merge_answer_files(chunks, tmp_path / "m4.jsonl", keys)
    assert not (tmp_path / "m2.jsonl").exists() and not (tmp_path / "m4.jsonl").exists()
