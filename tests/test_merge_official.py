"""The `official` preset reproduces the released RobustMerge merge (../shared/fixtures/official_merge).

Tolerance: zero. Every case, the float32 ones and the bfloat16 one (case_b), is compared with
torch.equal: the implementation follows the released arithmetic (thresholds, S and the B
denominator in the stored dtype, float32 numerators accumulated in task order, the
projector as a running mean in the stored dtype), so no rounding slack is needed. The
spec's fallback tolerance for bf16 (rtol 1e-2) would hide a one-ulp change of S.
"""
import hashlib
import json
import subprocess
import sys

import pytest
import torch
from conftest import FIXTURES, needs_fixture
from safetensors import safe_open
from safetensors.torch import load_file

from robustmerge import load_adapter_set, merge

CASES = FIXTURES / "official_merge"
CASE_NAMES = ["case_a", "case_b", "case_c", "case_d"]
needs_cases = needs_fixture("official_merge")  # every test but the hashing one reads the cases


def case_setup(name):
    case = json.loads((CASES / name / "case.json").read_text())
    params = dict(keep=case["keep_fraction"], clamp_ratio=case["clamp_ratio"], lam=case["lambda"])
    return case, [CASES / name / t for t in case["task_folders"]], params


def expected(name):
    exp = torch.load(CASES / name / "expected" / "adapter_model.bin", weights_only=True)
    proj = torch.load(CASES / name / "expected" / "non_lora_trainables.bin", weights_only=True)
    return exp, proj


def assert_identical(got: dict, want: dict):
    assert list(got) == list(want)  # same keys, same order
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert torch.equal(got[k], want[k]), f"{k}: max abs diff {(got[k].float() - want[k].float()).abs().max()}"
        # byte for byte, so that even the sign of zeros matches
        assert torch.equal(got[k].contiguous().view(torch.uint8), want[k].contiguous().view(torch.uint8)), k


@needs_cases
@pytest.mark.parametrize("name", CASE_NAMES)
def test_official_preset_is_bit_exact(name):
    case, folders, params = case_setup(name)
    result = merge(load_adapter_set(folders), "robustmerge", preset="official", params=params)
    exp, proj = expected(name)
    assert_identical(result.tensors, exp)
    assert_identical(result.extras, proj)


@needs_cases
@pytest.mark.parametrize("name", CASE_NAMES)
def test_kept_counts_match_summary(name):
    """Masks: per tensor and task, the kept count and threshold equal the fixture's summary."""
    from robustmerge.methods.common import magnitude_mask

    case, folders, params = case_setup(name)
    summary = json.loads((CASES / name / "expected" / "summary.json").read_text())["lora_tensors"]
    adapters = load_adapter_set(folders)
    checked = 0
    for module in adapters.modules:
        A, B = adapters.factors(module)
        a_key, b_key = adapters.tasks[0].modules[module]
        for key, x in ((a_key, A), (b_key, B)):
            info = summary[key]
            kept = magnitude_mask(x, params["keep"]).reshape(x.shape[0], -1).sum(1).tolist()
            want = info["kept_count_per_task"]
            assert kept == want, key
            checked += 1
    assert checked == 2 * len(adapters.modules)


@needs_cases
def test_official_is_the_default_preset():
    _, folders, _ = case_setup("case_a")
    default = merge(load_adapter_set(folders), "robustmerge")
    exp, _ = expected("case_a")
    assert_identical(default.tensors, exp)


@needs_cases
@pytest.mark.parametrize("name", ["case_b", "case_c"])
def test_cli_output_folder_matches_fixture(name, tmp_path):
    case, folders, params = case_setup(name)
    out = tmp_path / "merged"
    cmd = [sys.executable, "-m", "robustmerge", "merge", "--method", "robustmerge", "--preset", "official",
           "--adapters", *map(str, folders), "--out", str(out), "--write-bin", "-q"]
    cmd += [f"--set=keep={params['keep']}", f"--set=clamp_ratio={params['clamp_ratio']}", f"--set=lam={params['lam']}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    exp, proj = expected(name)
    st = load_file(out / "adapter_model.safetensors")
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "pt"
    assert_identical({k: st[k] for k in exp}, exp)
    assert set(st) == set(exp)
    assert_identical(torch.load(out / "adapter_model.bin", weights_only=True), exp)
    assert_identical(torch.load(out / "non_lora_trainables.bin", weights_only=True), proj)
    # The fixture's adapter_config.json is a byte copy of task 0's (the original function does not
    # write one). The merge keeps task 0's config unchanged (ranks and scalings agree) and writes it
    # as JSON: what must hold is the same keys, in the same order, with the same values. The bytes
    # are not the contract (the fixture file has no final newline; the merge ends its file with one).
    config = json.loads((out / "adapter_config.json").read_text())
    assert list(config.items()) == list(json.loads((folders[0] / "adapter_config.json").read_text()).items())
    assert list(config.items()) == list(json.loads((CASES / name / "expected" / "adapter_config.json").read_text()).items())
    assert (out / "config.json").read_bytes() == (folders[0] / "config.json").read_bytes()
    record = json.loads((out / "merge_record.json").read_text())
    assert record["method"] == "robustmerge" and record["preset"] == "official"
    assert record["params"]["keep"] == params["keep"] and record["params"]["lam"] == params["lam"]
    assert record["task_order"] == case["task_order"]
    assert record["inputs"][0]["sha256"] == hashlib.sha256((folders[0] / "adapter_model.bin").read_bytes()).hexdigest()
    assert record["inputs"][0]["r"] == [case["r"]] and record["inputs"][0]["lora_alpha"] == case["lora_alpha"]
    assert "merged as stored" in record["harmonisation"][0]
    assert {"torch", "robustmerge", "python"} <= set(record["versions"])
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folder left


@pytest.mark.parametrize("size", [0, 1, 4096 * 3 + 17, 65536 * 3])
def test_sha256_file_through_windows(tmp_path, size):
    """The record's input hashes equal hashlib's over the whole file, across window edges."""
    import mmap

    from robustmerge.hashing import sha256_file

    f = tmp_path / "blob"
    f.write_bytes(torch.randint(0, 256, (size,), generator=torch.Generator().manual_seed(size), dtype=torch.uint8)
                  .numpy().tobytes())
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert sha256_file(f) == want
    assert sha256_file(f, window=mmap.ALLOCATIONGRANULARITY) == want


@needs_cases
def test_cli_no_hash_writes_the_same_adapter(tmp_path):
    """--no-hash leaves the record's input hashes null and changes nothing else that is written."""
    _, folders, _ = case_setup("case_b")
    outs = {}
    for flag in ([], ["--no-hash"]):
        out = tmp_path / ("plain" if not flag else "nohash")
        cmd = [sys.executable, "-m", "robustmerge", "merge", "--adapters", *map(str, folders), "--out", str(out), "-q",
               *flag]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        outs[bool(flag)] = out
    for name in ("adapter_model.safetensors", "non_lora_trainables.bin", "adapter_config.json"):
        assert (outs[True] / name).read_bytes() == (outs[False] / name).read_bytes()
    hashed = json.loads((outs[False] / "merge_record.json").read_text())["inputs"]
    unhashed = json.loads((outs[True] / "merge_record.json").read_text())["inputs"]
    assert [i["sha256"] for i in unhashed] == [None] * len(folders)
    assert [i["extra_sha256"] for i in unhashed] == [None] * len(folders)
    assert hashed[1]["sha256"] == hashlib.sha256((folders[1] / hashed[1]["weight_file"]).read_bytes()).hexdigest()
    assert [{k: v for k, v in i.items() if "sha256" not in k} for i in hashed] == \
        [{k: v for k, v in i.items() if "sha256" not in k} for i in unhashed]


@needs_cases
def test_input_hasher_background_and_on_demand(tmp_path):
    """The CLI's early hasher: files given at the start are hashed on its thread, others on
    demand; a missing file reports its error to whoever asks for its digest."""
    from robustmerge.hashing import InputHasher, task_files

    _, folders, _ = case_setup("case_b")
    files = task_files(folders)
    assert files == [f for d in folders for f in (d / "adapter_model.bin", d / "non_lora_trainables.bin")]
    gone = tmp_path / "gone.bin"  # never written
    hasher = InputHasher(files[:2] + [gone])
    for f in files:
        assert hasher.digest(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    with pytest.raises(FileNotFoundError):
        hasher.digest(gone)
