"""Hostile-input matrix for the merge surface (issue 17): every case exits with status 2 and
one ``error:`` line naming the file and the fix, no traceback, nothing written (no output
folder, no temporary or lock leftovers) and an earlier output byte-identical. Plus kill tests
(SIGKILL / SIGTERM mid-merge) and the output claim."""
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from robustmerge.cli import main
from robustmerge.synthetic import LlamaShape, write_task_adapters

SHAPE = LlamaShape(layers=1, hidden=16, intermediate=24, mm_hidden=8)
LORA = "adapter_model.safetensors"


@pytest.fixture
def env(tmp_path, capsys):
    """Three rank-4 tasks and an earlier merge ``prev`` (the output a mistake must not touch)."""
    tasks = write_task_adapters(tmp_path / "in", 3, SHAPE, r=4, seed=0)
    prev = tmp_path / "prev"
    assert main(["merge", "-q", "--adapters", *map(str, tasks), "--out", str(prev)]) == 0
    capsys.readouterr()
    return tasks, prev


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hostile(capsys, env, tmp_path, *args, out=None, needles=(), adapters=None):
    """Run one merge that must be refused; check every promise of the matrix."""
    tasks, prev = env
    before_prev, before_tasks = snapshot(prev), [snapshot(t) for t in tasks]
    out = tmp_path / "out" if out is None else out
    argv = ["merge", "-q", "--adapters", *map(str, tasks if adapters is None else adapters), *map(str, args)]
    if "--out" not in args:
        argv += ["--out", str(out)]
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err
    assert err.startswith("robustmerge: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and err.count("error:") == 1
    for needle in needles:
        assert needle in err, (needle, err)
    if not os.path.islink(out) and out != prev:
        assert not out.exists() or (out.is_dir() and not any(out.iterdir())) or out.is_file(), "output written"
    if out.parent.is_dir():
        assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "leftovers"
    assert not [p.name for p in prev.parent.iterdir() if p.name.startswith(".prev.")]
    assert snapshot(prev) == before_prev
    return err


def edit_config(folder: Path, **changes) -> Path:
    path = folder / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))  # json writes NaN / Infinity literals for float('nan') / inf
    return path


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "merge.yaml"
    path.write_text(text)
    return path


# ---- class 1: non-finite and out-of-type parameters ------------------------------------------

@pytest.mark.parametrize("method,setting,needle", [
    ("robustmerge", "lam=nan", "not a finite number"),  # the examples
    ("robustmerge", "lam=inf", "not a finite number"),
    ("robustmerge", "lam=1e400", "not a finite number"),
    ("robustmerge", "lam=-inf", "not a finite number"),
    ("robustmerge", "keep=nan", "not a finite number"),
    ("robustmerge", "clamp_ratio=NaN", "not a finite number"),
    ("robustmerge", "keep=", "is not a float"),
    ("ties", "density=nan", "not a finite number"),
    ("ties", "lam=inf", "not a finite number"),
    ("dare", "drop=nan", "not a finite number"),
    ("pcb", "ratio=inf", "not a finite number"),
    ("pcb", "clip=-nan", "not a finite number"),
    ("task_arithmetic", "lam=nan", "not a finite number"),
    ("robustmerge", "lam=1e300", "holds NaN or Inf"),  # finite but overflows float32: nothing written
])
def test_non_finite_parameter(method, setting, needle, env, tmp_path, capsys):
    hostile(capsys, env, tmp_path, "--method", method, "--set", setting, needles=[setting.split("=")[0], needle])


def test_integer_parameter_nan_and_fraction():
    from robustmerge.errors import MergeInputError
    from robustmerge.methods.registry import Param

    knob = Param("k", 3, "an integer knob", int, low=1)
    assert knob.parse("4", "m") == 4 and knob.parse(5.0, "m") == 5
    for bad, needle in [("nan", "not a finite number"), (float("nan"), "not a finite number"),
                        ("2.5", "not an integer"), (True, "not a int"), ("x", "not a int")]:
        with pytest.raises(MergeInputError, match=needle):
            knob.parse(bad, "m")


def test_range_checks_fail_for_nan():
    from robustmerge.methods.registry import Param

    p = Param("x", 0.5, "", float, 0.0, 1.0, open_low=True)
    assert not p._in_range(float("nan")) and p._in_range(1.0) and not p._in_range(0.0)


# ---- class 1: task adapter configs ------------------------------------------------------------

@pytest.mark.parametrize("changes,needle", [
    (dict(lora_alpha=float("nan")), "lora_alpha=nan is not a finite number"),  # the example
    (dict(lora_alpha=float("inf")), "lora_alpha=inf is not a finite number"),
    (dict(lora_alpha="16"), "lora_alpha='16' is not a number"),
    (dict(lora_alpha=0), "lora_alpha=0 is not positive"),
    (dict(lora_alpha=[16]), "is not a number"),
    (dict(r=float("nan")), "r=nan is not a finite number"),
    (dict(r="4"), "r='4' is not a number"),
    (dict(r=4.5), "r=4.5 is not a whole number"),
    (dict(r=True), "r=True is not a number"),
    (dict(r=0), "r=0 is not a positive rank"),  # class 4's example too
    (dict(use_rslora="false"), "use_rslora='false' is not true or false"),
    (dict(rank_pattern=[4]), "rank_pattern=[4] is not an object"),
    (dict(alpha_pattern={"q_proj": "x"}), "alpha_pattern['q_proj']='x' is not a number"),
    (dict(target_modules=5), "target_modules=5 is not"),
    (dict(target_modules="q_proj("), "is not a valid regular expression"),
    (dict(rank_pattern={"[": 4}), "is not a valid regular expression"),
])
def test_bad_adapter_config_value(changes, needle, env, tmp_path, capsys):
    path = edit_config(env[0][1], **changes)
    hostile(capsys, env, tmp_path, needles=[str(path), needle])


@pytest.mark.parametrize("text,needle", [("[1, 2]", "holds a JSON list"), ("null", "holds a JSON NoneType"),
                                         ('"r"', "holds a JSON str"), ("{", "not valid JSON"),
                                         ("\xff\xfe", "not valid JSON")])
def test_adapter_config_of_wrong_json_type(text, needle, env, tmp_path, capsys):
    path = env[0][2] / "adapter_config.json"
    path.write_bytes(text.encode("latin-1"))
    hostile(capsys, env, tmp_path, needles=[str(path), needle])


# ---- class 1 and 2: the --config YAML --------------------------------------------------------

@pytest.mark.parametrize("text,needle", [
    ("- method: ties\n", "expected a mapping"),  # the examples
    ("seed: abc\n", "seed: 'abc' is not a non-negative integer"),
    ("params: [lam, 2]\n", "params: ['lam', 2] is not a mapping"),
    ("out: 5\n", "out: 5 is not a folder path"),
    ("seed: -1\n", "seed: -1 is not a non-negative integer"),
    ("seed: 1.5\n", "seed: 1.5 is not"),
    ("overwrite: maybe\n", "overwrite: 'maybe' is not a boolean"),
    ("write_bin: 2\n", "write_bin: 2 is not a boolean"),
    ("adapters: in/task\n", "adapters: 'in/task' is not a list of folders"),
    ("method: [ties]\n", "method: ['ties'] is not a method name"),
    ("params: {lam: .nan}\n", "lam=nan is not a finite number"),
    ("params: {keep: [1]}\n", "keep=[1] is not a float"),
    ("method: ties\n\tparams: 1\n", "not valid YAML"),
    ("just a string\n", "expected a mapping"),
])
def test_bad_yaml_config(text, needle, env, tmp_path, capsys):
    cfg = write_yaml(tmp_path, text)
    hostile(capsys, env, tmp_path, "--config", cfg, needles=[needle])


def test_yaml_config_not_utf8_or_a_folder(env, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_bytes(b"method: \xff\xfe\n")
    hostile(capsys, env, tmp_path, "--config", cfg, needles=[str(cfg), "not valid YAML"])
    hostile(capsys, env, tmp_path, "--config", tmp_path, needles=[str(tmp_path), "config file not found"])


def test_yaml_overwrite_false_string_keeps_earlier_output(env, tmp_path, capsys):
    """Class 2: ``overwrite: "false"`` is false; the earlier merge stays."""
    cfg = write_yaml(tmp_path, 'overwrite: "false"\n')
    hostile(capsys, env, tmp_path, "--config", cfg, out=env[1], needles=[str(env[1]), "not empty", "--overwrite"])


def test_yaml_overwrite_true_string_replaces(env, tmp_path, capsys):
    tasks, prev = env
    cfg = write_yaml(tmp_path, 'overwrite: "yes"\nmethod: ties\n')
    assert main(["merge", "-q", "--adapters", *map(str, tasks), "--out", str(prev), "--config", str(cfg)]) == 0
    assert json.loads((prev / "merge_record.json").read_text())["method"] == "ties"


def test_yaml_empty_values_mean_not_given(env, tmp_path, capsys):
    cfg = write_yaml(tmp_path, "params:\nseed:\noverwrite:\nmethod: ties\n")
    assert main(["merge", "-q", "--adapters", *map(str, env[0]), "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 0
    record = json.loads((tmp_path / "o" / "merge_record.json").read_text())
    assert record["method"] == "ties" and record["seed"] == 0


def test_strict_bool_parser():
    from robustmerge.errors import UserError
    from robustmerge.values import parse_bool

    assert [parse_bool(v, "x") for v in (True, "false", "False", "no", "0", 0, "on", "yes", 1)] == \
        [True, False, False, False, False, False, True, True, True]
    for bad in ("", "flase", 2, None, [True]):
        with pytest.raises(UserError, match="not a boolean"):
            parse_bool(bad, "x")


# ---- class 4: inputs the merge accepted but should refuse ------------------------------------

def rewrite_header(path: Path, fn) -> None:
    """Edit a safetensors header in place (the data bytes stay)."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = fn(json.loads(raw[8:8 + n]))
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])


def _overlap(h):
    keys = [k for k in h if k != "__metadata__"]
    first = min(keys, key=lambda k: h[k]["data_offsets"][0])
    second = min((k for k in keys if k != first), key=lambda k: h[k]["data_offsets"][0])
    h[second]["data_offsets"] = list(h[first]["data_offsets"])  # two tensors share bytes
    return h


def _gap(h):
    for k, v in h.items():
        if k != "__metadata__" and v["data_offsets"][0] == 0:
            v["data_offsets"] = [4, v["data_offsets"][1] + 4]
    return h


@pytest.mark.parametrize("edit,needle", [
    (_overlap, "overlaps the previous tensor"),  # the example
    (_gap, "leaves a gap"),
    (lambda h: [h], "the header is a JSON list"),
    (lambda h: {k: ({**v, "shape": [-1, 4]} if k != "__metadata__" else v) for k, v in h.items()}, "not a list of non-negative"),
    (lambda h: {k: ({**v, "data_offsets": [0]} if k != "__metadata__" else v) for k, v in h.items()}, "data_offsets [0]"),
    (lambda h: {k: ({**v, "shape": [v["shape"][0], v["shape"][1] + 1]} if k != "__metadata__" else v)
                for k, v in h.items()}, "bytes for shape"),
])
def test_bad_safetensors_layout(edit, needle, env, tmp_path, capsys):
    path = env[0][1] / LORA
    rewrite_header(path, edit)
    hostile(capsys, env, tmp_path, needles=[str(path), needle, "copy it again"])


def test_overlapping_entries_are_rejected_by_the_library_too(env):
    from safetensors import SafetensorError

    path = env[0][1] / LORA
    rewrite_header(path, _overlap)
    with pytest.raises(SafetensorError):
        load_file(path)


def test_trailing_bytes_and_half_copied_files(env, tmp_path, capsys):
    path = env[0][0] / LORA
    good = path.read_bytes()
    path.write_bytes(good + b"\0" * 16)
    hostile(capsys, env, tmp_path, needles=[str(path), "bytes after the last tensor"])
    path.write_bytes(good[: len(good) // 2])
    hostile(capsys, env, tmp_path, needles=[str(path), "truncated"])
    path.write_bytes(b"")
    hostile(capsys, env, tmp_path, needles=[str(path), "not a readable safetensors file"])


@pytest.mark.parametrize("r", [0, 8, 2])
def test_config_rank_disagrees_with_tensors(r, env, tmp_path, capsys):
    """Config r=0 / r=8 / r=2 on rank-4 tensors (the issue: r=0, r=4 on rank-8)."""
    path = edit_config(env[0][0], r=r)
    hostile(capsys, env, tmp_path, needles=[str(path), f"r={r}"] + (["holds rank 4"] if r else []))


def test_rank_pattern_disagrees_with_tensors(env, tmp_path, capsys):
    path = edit_config(env[0][1], rank_pattern={"q_proj": 8})
    hostile(capsys, env, tmp_path, needles=[str(path), "r=8", "q_proj", "holds rank 4"])


def test_target_modules_narrower_than_tensors(env, tmp_path, capsys):
    path = edit_config(env[0][2], target_modules=["q_proj", "v_proj"])
    hostile(capsys, env, tmp_path, needles=[str(path), "does not cover", "k_proj"])
    edit_config(env[0][2], target_modules="^nothing$")
    hostile(capsys, env, tmp_path, needles=[str(path), "does not cover"])


@pytest.mark.parametrize("name", ["non_lora_trainables.bin", LORA, "adapter_config.json"])
def test_folder_where_a_file_should_be(name, env, tmp_path, capsys):
    path = env[0][1] / name
    path.unlink()
    path.mkdir()
    (path / "x").write_text("x")
    hostile(capsys, env, tmp_path, needles=[str(path), "is a folder, not a file"])


def test_dangling_weight_link(env, tmp_path, capsys):
    path = env[0][0] / LORA
    path.unlink()
    path.symlink_to(tmp_path / "gone.safetensors")
    hostile(capsys, env, tmp_path, needles=[str(path), "dangling link"])


def test_nan_inside_one_task_tensor(env, tmp_path, capsys):
    path = env[0][2] / LORA
    t = load_file(path)
    key = sorted(k for k in t if k.endswith("lora_B.weight"))[-1]
    t[key][0, 0] = float("-inf")
    save_file(t, path)
    hostile(capsys, env, tmp_path, needles=[str(path), key, "NaN or Inf"])


# ---- paths -----------------------------------------------------------------------------------

def test_adapter_path_is_a_file_or_missing(env, tmp_path, capsys):
    tasks = env[0]
    f = tmp_path / "a_file"
    f.write_text("x")
    hostile(capsys, env, tmp_path, adapters=[tasks[0], f], needles=[str(f), "is a file, not a folder"])
    hostile(capsys, env, tmp_path, adapters=[tasks[0], tmp_path / "typo"], needles=["typo", "not found"])


def test_same_adapter_through_a_symlink(env, tmp_path, capsys):
    link = tmp_path / "alias"
    link.symlink_to(env[0][0])
    hostile(capsys, env, tmp_path, adapters=[env[0][0], env[0][1], link], needles=["given twice", str(env[0][0])])


def test_out_is_a_symlink(env, tmp_path, capsys):
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "out"
    link.symlink_to(target)
    hostile(capsys, env, tmp_path, "--overwrite", out=link, needles=[str(link), "symbolic link", "real folder path"])
    assert link.is_symlink() and not any(target.iterdir())
    dangling = tmp_path / "out2"
    dangling.symlink_to(tmp_path / "missing")
    hostile(capsys, env, tmp_path, out=dangling, needles=[str(dangling), "symbolic link"])
    assert dangling.is_symlink() and not (tmp_path / "missing").exists()


def test_out_is_a_file_or_under_a_file(env, tmp_path, capsys):
    f = tmp_path / "out.txt"
    f.write_text("keep")
    hostile(capsys, env, tmp_path, out=f, needles=[str(f), "not a folder"])
    hostile(capsys, env, tmp_path, out=f / "merged", needles=[str(f / "merged"), "cannot write the output"])
    assert f.read_text() == "keep"


def test_out_inside_an_input_via_symlink(env, tmp_path, capsys):
    link = tmp_path / "link_to_task"
    link.symlink_to(env[0][0])
    hostile(capsys, env, tmp_path, "--overwrite", out=link / "merged", needles=["input", "choose another --out"])


def test_unwritable_output_parent(env, tmp_path, capsys, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    if os.geteuid() == 0:  # root writes into any folder: deny creating entries there as the kernel would
        _deny_writes_under(monkeypatch, parent)
    try:
        hostile(capsys, env, tmp_path, out=parent / "out", needles=[str(parent / "out"), "cannot write the output"])
    finally:
        parent.chmod(0o700)


def _deny_writes_under(monkeypatch, folder: Path) -> None:
    """Make creating files or folders inside ``folder`` fail with EACCES (for a root user)."""
    import errno

    real_open, real_mkdir = os.open, os.mkdir

    def inside(path) -> bool:
        return Path(os.fsdecode(path)).resolve().parent == folder.resolve()

    def fake_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and inside(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


# ---- class 3: a second run on the same output ------------------------------------------------

def test_second_terminal_on_the_same_output(env, tmp_path, capsys):
    """A live run holds the claim: the second one stops at once, exit 2, nothing replaced."""
    import socket

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = env[1].parent / ".prev.lock"
        lock.write_text(f"{other.pid} {socket.gethostname()}\n")
        err_out = env[1]
        tasks, prev = env
        before = snapshot(prev)
        code = main(["merge", "-q", "--adapters", *map(str, tasks), "--out", str(err_out), "--overwrite"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "another run" in err and str(other.pid) in err, err
        assert snapshot(prev) == before and lock.exists()  # the other run's claim is not ours to remove
    finally:
        other.kill()
        other.wait()
    # its owner is gone: the claim is stale and the next run takes it over
    assert main(["merge", "-q", "--adapters", *map(str, tasks), "--out", str(prev), "--overwrite"]) == 0
    assert not lock.exists()


def test_output_appearing_during_the_merge_is_not_replaced(tmp_path):
    """The replace decision is made again at the final swap, under the claim."""
    from robustmerge.errors import OutputError
    from robustmerge.taskfolder import write_folder

    out = tmp_path / "out"
    with pytest.raises(OutputError, match="another run wrote this folder"):
        with write_folder(out, replace=False) as folder:
            (folder.folder / "mine.txt").write_text("second")
            out.mkdir()
            (out / "theirs.txt").write_text("first")  # a run that finished meanwhile
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_two_concurrent_merges_to_one_new_out(tmp_path):
    """Two processes merge to the same new --out: exactly one succeeds, the other gets exit 2;
    the folder holds the winner's merge, whole."""
    tasks = write_task_adapters(tmp_path / "in", 3, LlamaShape(layers=2, hidden=128, intermediate=256, mm_hidden=32),
                                r=16, seed=1)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "robustmerge", "merge", "-q", "--no-hash", "--adapters", *map(str, tasks),
           "--out", str(out)]
    procs = [subprocess.Popen(cmd + ["--method", m], stderr=subprocess.PIPE, text=True, env=_env())
             for m in ("ties", "task_arithmetic")]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(c for c, _ in results) == [0, 2], results  # never both "success" with one result lost
    loser = next(e for c, e in results if c == 2)
    assert loser.count("\n") == 1 and "Traceback" not in loser and ("another run" in loser or "not empty" in loser)
    record = json.loads((out / "merge_record.json").read_text())
    winner = "ties" if results[0][0] == 0 else "task_arithmetic"
    assert record["method"] == winner
    load_file(out / LORA)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


# ---- class 3: kills --------------------------------------------------------------------------

def _env():
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


@pytest.fixture(scope="module")
def big_tasks(tmp_path_factory):
    """Three tasks of ~12 MB each (big enough to kill a merge mid-write)."""
    root = tmp_path_factory.mktemp("big")
    return write_task_adapters(root / "in", 3, LlamaShape(layers=6, hidden=384, intermediate=1024, mm_hidden=32),
                               r=64, seed=2)


def _start_and_kill(tasks, out: Path, sig) -> tuple[int, list[str]]:
    cmd = [sys.executable, "-m", "robustmerge", "merge", "-q", "--no-hash", "--adapters", *map(str, tasks),
           "--out", str(out), "--method", "robustmerge", "--write-bin"]  # --write-bin: more work after the LoRA file
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any((p / LORA).exists() for p in out.parent.glob(f".{out.name}.tmp-*")):
            break  # writing has started
        time.sleep(0.002)
    assert proc.poll() is None, "the merge finished before it could be killed"
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    return code, sorted(p.name for p in out.parent.iterdir())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_kill_mid_merge_leaves_no_partial_output_and_reruns_clean(sig, big_tasks, tmp_path):
    out = tmp_path / "out"
    code, left = _start_and_kill(big_tasks, out, sig)
    assert code != 0 and "out" not in left  # no partial output folder
    if sig == signal.SIGTERM:
        assert code == 128 + signal.SIGTERM and left == []  # cleaned up on the way out
    else:
        assert left and all(n.startswith(".out.") for n in left)  # a killed run cannot clean up...
    rerun = subprocess.run([sys.executable, "-m", "robustmerge", "merge", "-q", "--no-hash", "--adapters",
                            *map(str, big_tasks), "--out", str(out)], capture_output=True, text=True, env=_env())
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # ...the next run removes its leftovers
    load_file(out / LORA)


def test_killed_earlier_output_survives(big_tasks, tmp_path):
    """SIGKILL during an --overwrite merge: the earlier output stays whole."""
    out = tmp_path / "out"
    assert subprocess.run([sys.executable, "-m", "robustmerge", "merge", "-q", "--no-hash", "--method", "ties",
                           "--adapters", *map(str, big_tasks), "--out", str(out)], env=_env()).returncode == 0
    before = snapshot(out)
    code = _start_and_kill_overwrite(big_tasks, out)
    assert code != 0 and snapshot(out) == before


def _start_and_kill_overwrite(tasks, out):
    cmd = [sys.executable, "-m", "robustmerge", "merge", "-q", "--no-hash", "--overwrite", "--write-bin", "--adapters",
           *map(str, tasks), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    while proc.poll() is None and not any((p / LORA).exists() for p in out.parent.glob(f".{out.name}.tmp-*")):
        time.sleep(0.002)
    proc.kill()
    return proc.wait(timeout=60)


def test_stale_cleanup_spares_live_owners(tmp_path):
    from robustmerge.atomic import clean_stale

    out = tmp_path / "out"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".out.tmp-{other.pid}-0123abcd"
        dead = tmp_path / ".out.tmp-999999999-89abcdef"
        unrelated = tmp_path / ".other.tmp-999999999-89abcdef"
        for d in (live, dead, unrelated):
            d.mkdir()
        assert clean_stale(out) == [dead]
        assert live.exists() and unrelated.exists()
    finally:
        other.kill()
        other.wait()


# ---- class 9: permissions --------------------------------------------------------------------

def test_atomic_text_file_uses_the_umask(tmp_path):
    from robustmerge.atomic import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "result.json", "{}")
        assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        write_text_atomic(tmp_path / "answers.jsonl", "")
        assert (tmp_path / "answers.jsonl").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_merged_folder_files_use_the_umask(env):
    old = os.umask(0o022)
    os.umask(old)
    for p in env[1].iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~old, p


def test_trainer_adapter_file_uses_the_umask(tmp_path):
    """The trainer saves through update_folder + FolderWriter.lora (safetensors' save_file
    creates 0600): the adapter file gets the umask's mode like its neighbours."""
    from robustmerge.taskfolder import update_folder

    old = os.umask(0o022)
    try:
        with update_folder(tmp_path / "ckpt") as folder:
            folder.lora({"m.lora_A.weight": torch.zeros(2, 2), "m.lora_B.weight": torch.zeros(2, 2)})
            folder.adapter_config({"r": 2})
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ckpt").iterdir()}
    finally:
        os.umask(old)
    assert modes == {"adapter_model.safetensors": 0o644, "adapter_config.json": 0o644}


def test_mmbench_submission_uses_the_umask(tmp_path):
    import pandas as pd  # the eval extra, installed by the README's test command
    from llava.eval.tasks.mmbench.scorer import write_submission

    old = os.umask(0o022)
    try:
        path = write_submission(tmp_path / "sub.xlsx", pd.DataFrame({"a": [1]}))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_full_disk_while_writing_is_one_error_line(tmp_path):
    """ENOSPC inside the output's temporary folder: an OutputError naming the output; no
    leftovers; an unrelated OSError (an input) keeps its own type."""
    import errno

    from robustmerge.errors import OutputError
    from robustmerge.taskfolder import write_folder

    out = tmp_path / "out"
    with pytest.raises(OutputError, match="cannot write the output.*free space"):
        with write_folder(out):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(PermissionError):
        with write_folder(out):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "input.bin"))
    assert list(tmp_path.iterdir()) == []
