"""robustmerge.taskfolder: the one owner of the LLaVA task-folder / PEFT adapter-folder format."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustmerge import taskfolder as tf
from robustmerge.errors import MergeInputError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "up_proj"], "bias": "none",
          "task_type": "CAUSAL_LM"}


def _lora(dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Two modules' factors, PEFT file names (no adapter name), in a deliberate order."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name, (d_in, d_out) in (("model.layers.0.self_attn.q_proj", (6, 6)), ("model.layers.0.mlp.up_proj", (6, 10))):
        key = tf.peft_name(name)
        out[tf.lora_key(key, "A")] = torch.randn(2, d_in, generator=gen).to(dtype)  # [r, d_in]
        out[tf.lora_key(key, "B")] = torch.randn(d_out, 2, generator=gen).to(dtype)  # [d_out, r]
    return out


def _projector() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {tf.peft_name(f"model.mm_projector.{i}.{p}"): torch.randn((6, 4) if p == "weight" else (6,), generator=gen)
            for i in (0, 2) for p in ("weight", "bias")}


def _write(out: Path, fmt: str, projector: bool, dtype=torch.float32) -> tuple[dict, dict]:
    lora, proj = _lora(dtype), _projector()
    with tf.write_folder(out) as folder:
        folder.adapter_config(CONFIG)
        folder.lora(lora, fmt=fmt)
        if projector:
            folder.projector(proj)
            folder.model_config({"model_type": "llava_llama", "hidden_size": 6})
    return lora, proj


# ---------------------------------------------------------------- round trip and kinds


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_llava_task_folder_round_trip(tmp_path, fmt):
    lora, proj = _write(tmp_path / "task", fmt, projector=True, dtype=torch.bfloat16)
    names = {p.name for p in (tmp_path / "task").iterdir()}
    weight = tf.ADAPTER_SAFETENSORS if fmt == "safetensors" else tf.ADAPTER_BIN
    assert names == {tf.ADAPTER_CONFIG, weight, tf.PROJECTOR_FILE, tf.MODEL_CONFIG}
    folder = tf.open_folder(tmp_path / "task")
    assert folder.kind == tf.LLAVA_TASK
    assert folder.config == CONFIG
    assert folder.weight_file.name == weight and folder.projector_file.name == tf.PROJECTOR_FILE
    # file order kept (save_file writes its header sorted by name; torch.save keeps insertion order)
    assert folder.weights.keys() == (sorted(lora) if fmt == "safetensors" else list(lora))
    assert folder.weights.meta() == {k: (tuple(v.shape), torch.bfloat16) for k, v in lora.items()}
    for key, value in lora.items():
        assert torch.equal(folder.weights.get(key), value)
    assert list(tf.read_tensors(folder.projector_file)) == list(proj)
    assert all(torch.equal(tf.read_tensors(folder.projector_file)[k], v) for k, v in proj.items())
    a_q = "base_model.model.model.layers.0.self_attn.q_proj"
    assert folder.lora_modules() == {
        a_q: (f"{a_q}.lora_A.weight", f"{a_q}.lora_B.weight"),
        "base_model.model.model.layers.0.mlp.up_proj": ("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight",
                                                        "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"),
    }
    text = (tmp_path / "task" / tf.ADAPTER_CONFIG).read_text()
    assert text == json.dumps(CONFIG, indent=2) + "\n"
    assert (tmp_path / "task" / tf.MODEL_CONFIG).read_text() == '{\n  "hidden_size": 6,\n  "model_type": "llava_llama"\n}\n'


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_plain_peft_folder_round_trip_and_peft_reads_it(tmp_path, fmt):
    from safetensors.torch import load_file

    lora, _ = _write(tmp_path / "peft", fmt, projector=False)
    folder = tf.open_folder(tmp_path / "peft")
    assert folder.kind == tf.PEFT_ADAPTER and folder.projector is None and folder.projector_file is None
    got = tf.read_tensors(folder.weight_file)
    assert sorted(got) == sorted(lora) and all(torch.equal(got[k], v) for k, v in lora.items())
    if fmt == "safetensors":  # the reference reader agrees, and the header carries PEFT's metadata
        ref = load_file(folder.weight_file)
        assert all(torch.equal(ref[k], v) for k, v in lora.items())
        n = int.from_bytes(folder.weight_file.read_bytes()[:8], "little")
        assert json.loads(folder.weight_file.read_bytes()[8:8 + n])["__metadata__"] == {"format": "pt"}


def test_safetensors_is_preferred_over_bin(tmp_path):
    _write(tmp_path / "both", "bin", projector=False)
    with tf.write_folder(tmp_path / "st") as folder:
        folder.lora(_lora(), fmt="safetensors")
    os.replace(tmp_path / "st" / tf.ADAPTER_SAFETENSORS, tmp_path / "both" / tf.ADAPTER_SAFETENSORS)
    assert tf.find_weight_file(tmp_path / "both") == tmp_path / "both" / tf.ADAPTER_SAFETENSORS
    assert tf.WEIGHT_FILES == (tf.ADAPTER_SAFETENSORS, tf.ADAPTER_BIN)


def test_kind_detection(tmp_path):
    from robustmerge.driver import merge_to_folder
    from robustmerge.synthetic import LlamaShape, write_task_adapters

    (tmp_path / "empty").mkdir()
    assert tf.folder_kind(tmp_path / "empty") is None and not tf.is_adapter_folder(tmp_path / "empty")
    assert tf.folder_kind(tmp_path / "missing") is None
    _write(tmp_path / "peft", "safetensors", projector=False)
    assert tf.folder_kind(tmp_path / "peft") == tf.PEFT_ADAPTER
    tasks = write_task_adapters(tmp_path / "tasks", 2, LlamaShape(layers=1, hidden=8, intermediate=12, mm_hidden=4), r=2)
    assert [tf.folder_kind(t) for t in tasks] == [tf.LLAVA_TASK] * 2
    merge_to_folder(tasks, tmp_path / "merged", "task_arithmetic", hash_inputs=False)
    assert tf.folder_kind(tmp_path / "merged") == tf.MERGED
    record = json.loads((tmp_path / "merged" / tf.MERGE_RECORD).read_text())
    assert record["outputs"] == sorted([tf.ADAPTER_CONFIG, tf.ADAPTER_SAFETENSORS, tf.PROJECTOR_FILE,
                                        tf.MODEL_CONFIG]) + [tf.MERGE_RECORD]


def test_open_folder_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(MergeInputError, match=r"nowhere: adapter folder not found; pass the folder that holds adapter_config\.json"):
        tf.open_folder(tmp_path / "nowhere")
    (tmp_path / "f").mkdir()
    with pytest.raises(MergeInputError, match=r"adapter_config\.json: missing"):
        tf.open_folder(tmp_path / "f")
    (tmp_path / "f" / tf.ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(MergeInputError, match="not valid JSON"):
        tf.open_folder(tmp_path / "f")
    (tmp_path / "f" / tf.ADAPTER_CONFIG).write_text("{}")
    with pytest.raises(MergeInputError, match=r"no adapter weights \(looked for adapter_model\.safetensors or adapter_model\.bin\)"):
        tf.open_folder(tmp_path / "f")


# ---------------------------------------------------------------- key names


def test_lora_keys_both_ways_with_and_without_adapter_name():
    key = "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight"
    assert tf.parse_lora_key(key) == ("base_model.model.model.layers.3.mlp.down_proj", "B", None)
    assert tf.lora_key("base_model.model.model.layers.3.mlp.down_proj", "B") == key
    named = "base_model.model.model.layers.3.mlp.down_proj.lora_A.default.weight"  # a PeftModel's own state dict
    assert tf.parse_lora_key(named) == ("base_model.model.model.layers.3.mlp.down_proj", "A", "default")
    assert tf.lora_key("base_model.model.model.layers.3.mlp.down_proj", "A", "default") == named
    for not_lora in ("base_model.model.model.embed_tokens.lora_embedding_A", "model.mm_projector.0.weight",
                     "x.lora_C.weight", "x.lora_A.bias"):
        assert tf.parse_lora_key(not_lora) is None
    assert tf.module_name("base_model.model.model.layers.0.self_attn.q_proj") == "model.layers.0.self_attn.q_proj"
    assert tf.module_name("model.layers.0.self_attn.q_proj") == "model.layers.0.self_attn.q_proj"
    assert tf.peft_name("model.layers.0.self_attn.q_proj") == "base_model.model.model.layers.0.self_attn.q_proj"


def test_lora_modules_pairs_and_rejects():
    src = Path("w.safetensors")
    keys = ["m.x.lora_B.weight", "m.x.lora_A.weight", "m.y.lora_A.weight", "m.y.lora_B.weight"]
    assert tf.lora_modules(keys, src) == {"m.x": ("m.x.lora_A.weight", "m.x.lora_B.weight"),
                                          "m.y": ("m.y.lora_A.weight", "m.y.lora_B.weight")}
    with pytest.raises(MergeInputError, match=r"w\.safetensors: key 'm\.x\.lora_A\.default\.weight' is not a LoRA factor"):
        tf.lora_modules(["m.x.lora_A.default.weight", "m.x.lora_B.default.weight"], src)
    with pytest.raises(MergeInputError, match=r"module 'm\.x' has lora_A but no lora_B"):
        tf.lora_modules(["m.x.lora_A.weight"], src)
    with pytest.raises(MergeInputError, match="holds no LoRA weights"):
        tf.lora_modules([], src)


@pytest.mark.parametrize("stored,model_name", [
    # LLaVA's train.py (PeftModel names): every old rule (merge, loader, projector run) agreed
    ("base_model.model.model.mm_projector.0.weight", "model.mm_projector.0.weight"),
    ("base_model.model.model.mm_projector.2.bias", "model.mm_projector.2.bias"),
    # the released merge's output and LLaVA's pre-training mm_projector.bin: kept as they are
    ("model.mm_projector.0.weight", "model.mm_projector.0.weight"),
    ("model.mm_projector.2.bias", "model.mm_projector.2.bias"),
    # "base_model." already dropped (the old merge rule, and LLaVA's loader, strip the next "model.")
    ("model.model.mm_projector.0.weight", "model.mm_projector.0.weight"),
    # a non-projector trainable outside `model.` (the old loader rule): the wrapped model's name
    ("base_model.model.lm_head.weight", "lm_head.weight"),
])
def test_the_one_projector_key_rule(stored, model_name):
    assert tf.projector_key(stored) == model_name
    assert tf.projector_key(model_name) == model_name  # idempotent: a merged output reads back as written


def test_merge_and_loader_use_the_one_rule(tmp_path):
    """The merge writes, and the loader reads, projector keys through taskfolder.projector_key."""
    from llava.model.adapter_io import read_projector_weights
    from robustmerge.driver import merge_to_folder
    from robustmerge.synthetic import LlamaShape, write_task_adapters

    tasks = write_task_adapters(tmp_path / "tasks", 2, LlamaShape(layers=1, hidden=8, intermediate=12, mm_hidden=4), r=2)
    stored = list(tf.read_tensors(tasks[0] / tf.PROJECTOR_FILE))
    merge_to_folder(tasks, tmp_path / "merged", "task_arithmetic", hash_inputs=False)
    merged = list(tf.read_tensors(tmp_path / "merged" / tf.PROJECTOR_FILE))
    assert merged == [tf.projector_key(k) for k in stored] == [
        "model.mm_projector.0.weight", "model.mm_projector.0.bias", "model.mm_projector.2.weight",
        "model.mm_projector.2.bias"]
    weights, path = read_projector_weights(tasks[0])
    assert list(weights) == merged and path == tasks[0] / tf.PROJECTOR_FILE
    assert list(read_projector_weights(tmp_path / "merged")[0]) == merged


# ---------------------------------------------------------------- lazy reading


def test_index_reads_no_tensor_data(tmp_path, monkeypatch):
    """Opening a folder and its key/shape/dtype index reads headers only; tensors on demand."""
    lora, _ = _write(tmp_path / "task", "safetensors", projector=False, dtype=torch.float16)
    reads = []
    real = os.preadv

    def counting(fd, buffers, offset):
        reads.append(offset)
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", counting)
    folder = tf.open_folder(tmp_path / "task")
    modules = folder.lora_modules()
    meta = folder.weights.meta()
    assert reads == [] and folder.weights._fd is None  # no data read, no descriptor opened for data
    assert len(modules) == 2 and meta[next(iter(lora))] == ((2, 6), torch.float16)
    key = list(lora)[1]
    assert torch.equal(folder.weights.get(key), lora[key]) and len(reads) == 1
    buf = torch.empty(meta[key][0], dtype=torch.float16)
    assert folder.weights.get(key, out=buf) is buf and torch.equal(buf, lora[key])
    folder.weights.close()


def test_truncated_safetensors_names_itself(tmp_path):
    _write(tmp_path / "task", "safetensors", projector=False)
    path = tmp_path / "task" / tf.ADAPTER_SAFETENSORS
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(MergeInputError, match=r"adapter_model\.safetensors: truncated"):
        tf.open_folder(tmp_path / "task").weights.meta()


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / tf.PROJECTOR_FILE
    torch.save({"w": torch.zeros(1), "extra": Path("x")}, path)
    with pytest.raises(MergeInputError, match="a pickle can run code"):
        tf.read_tensors(path)


def test_names_and_hasher_import_without_torch():
    code = ("import sys; import robustmerge.taskfolder, robustmerge.hashing, robustmerge.cli; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- atomic writing


def test_write_folder_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), tf.write_folder(tmp_path / "out") as folder:
        folder.adapter_config(CONFIG)
        folder.lora(_lora())
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    _write(tmp_path / "out", "bin", projector=True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(RuntimeError, match="boom"), tf.write_folder(tmp_path / "out") as folder:
        folder.adapter_config({"r": 99})
        raise RuntimeError("boom")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_update_folder_moves_adapter_config_last_and_keeps_other_files(tmp_path, monkeypatch):
    out = tmp_path / "checkpoint-2"
    out.mkdir()
    (out / "trainer_state.json").write_text("{}")
    (out / tf.ADAPTER_BIN).write_bytes(b"stale")
    moved = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moved.append(Path(dst).name), real(src, dst)))
    with tf.update_folder(out) as folder:
        folder.adapter_config(CONFIG)
        folder.lora(_lora(), fmt="safetensors")
        folder.projector(_projector())
        folder.model_card("card\n")
    assert moved[-1] == tf.ADAPTER_CONFIG and sorted(moved) == sorted(
        [tf.ADAPTER_CONFIG, tf.ADAPTER_SAFETENSORS, tf.PROJECTOR_FILE, tf.MODEL_CARD])
    assert sorted(p.name for p in out.iterdir()) == sorted(moved + ["trainer_state.json"])  # stale .bin removed
    monkeypatch.setattr(os, "replace", real)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RuntimeError, match="boom"), tf.update_folder(out) as folder:
        folder.adapter_config({"r": 99})
        raise RuntimeError("boom")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no .saving- folder, nothing replaced


# ---------------------------------------------------------------- one definition


_LITERALS = re.compile(r"adapter_config\.json|adapter_model\.(?:bin|safetensors)|non_lora_trainables|"
                       r"merge_record\.json|mm_projector\.bin|(?<![\w.])config\.json")


def test_file_names_are_defined_only_in_taskfolder():
    """No module of llava/, robustmerge/ or bench/ spells a task-folder file name (code,
    messages or docstrings) except robustmerge/taskfolder.py, which defines each once."""
    owner = ROOT / "robustmerge" / "taskfolder.py"
    offenders = []
    for package in ("llava", "robustmerge", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == owner:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if _LITERALS.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
    definitions = re.findall(r'^[A-Z_]+ = "([^"]+)"', owner.read_text(), re.MULTILINE)
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "non_lora_trainables.bin",
                 "config.json", "merge_record.json", "mm_projector.bin"):
        assert definitions.count(name) == 1, name
