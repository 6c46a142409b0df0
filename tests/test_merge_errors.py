"""Bad input: one clear message naming the file and the fix, exit status 2, no output left."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from robustmerge.cli import main
from robustmerge.synthetic import LlamaShape, write_task_adapters

SHAPE = LlamaShape(layers=1, hidden=16, intermediate=24, mm_hidden=8)


@pytest.fixture
def tasks(tmp_path):
    return write_task_adapters(tmp_path / "in", 3, SHAPE, r=4, seed=0)


def run_cli(capsys, *args):
    code = main(["merge", "-q", *map(str, args)])
    err = capsys.readouterr().err
    return code, err


def expect_error(capsys, out, *args, needles=()):
    code, err = run_cli(capsys, *args, "--out", out)
    assert code == 2, err
    assert err.startswith("robustmerge: error: ") and err.count("\n") == 1, err  # one line, no traceback
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temp folder left
    return err


def rewrite_weights(folder, fn):
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    tensors = fn(tensors)
    save_file(tensors, path)


def test_missing_folder(tasks, tmp_path, capsys):
    expect_error(capsys, tmp_path / "out", "--adapters", tasks[0], tmp_path / "nope",
                 needles=[str(tmp_path / "nope"), "not found"])


def test_missing_weight_file(tasks, tmp_path, capsys):
    (tasks[1] / "adapter_model.safetensors").unlink()
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=[str(tasks[1]), "adapter_model.safetensors or adapter_model.bin"])


def test_missing_adapter_config(tasks, tmp_path, capsys):
    (tasks[2] / "adapter_config.json").unlink()
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=[str(tasks[2] / "adapter_config.json"), "missing"])


def test_truncated_safetensors(tasks, tmp_path, capsys):
    path = tasks[1] / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=[str(path), "truncated"])


def test_garbage_safetensors(tasks, tmp_path, capsys):
    path = tasks[1] / "adapter_model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=[str(path), "not a readable safetensors file"])


def test_truncated_bin(tmp_path, capsys):
    tasks = write_task_adapters(tmp_path / "in", 2, SHAPE, r=4, fmt="bin")
    path = tasks[0] / "adapter_model.bin"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=[str(path), "corrupt"])


def test_bin_with_code_in_pickle(tmp_path, capsys):
    tasks = write_task_adapters(tmp_path / "in", 2, SHAPE, r=4, fmt="bin")
    path = tasks[1] / "adapter_model.bin"
    state = torch.load(path, weights_only=True)
    state["evil"] = print  # a global reference: not plain tensors
    torch.save(state, path)
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=[str(path), "more than plain tensors"])


def test_bin_not_a_dict(tmp_path, capsys):
    tasks = write_task_adapters(tmp_path / "in", 2, SHAPE, r=4, fmt="bin")
    torch.save([torch.zeros(2)], tasks[1] / "adapter_model.bin")
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=[str(tasks[1] / "adapter_model.bin"), "dict of name -> tensor"])


def test_non_lora_key(tasks, tmp_path, capsys):
    rewrite_weights(tasks[0], lambda t: {**t, "base_model.model.lm_head.weight": torch.zeros(3, 3)})
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=["lm_head.weight", "not a LoRA factor", str(tasks[0])])


def test_a_without_b(tasks, tmp_path, capsys):
    key = "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"
    rewrite_weights(tasks[2], lambda t: {k: v for k, v in t.items() if k != key})
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=["mlp.up_proj", "no lora_B", str(tasks[2])])


def test_different_modules(tasks, tmp_path, capsys):
    rewrite_weights(tasks[1], lambda t: {k: v for k, v in t.items() if ".v_proj." not in k})
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=["covers different modules", "v_proj", str(tasks[1])])


def test_incompatible_shapes(tmp_path, capsys):
    a = write_task_adapters(tmp_path / "a", 1, SHAPE, r=4)[0]
    b = write_task_adapters(tmp_path / "b", 1, LlamaShape(layers=1, hidden=16, intermediate=32, mm_hidden=8), r=4)[0]
    expect_error(capsys, tmp_path / "out", "--adapters", a, b, needles=["incompatible shapes", "different base models"])


def test_nan_weights(tasks, tmp_path, capsys):
    key = "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight"

    def poison(t):
        t[key][1, 2] = float("nan")
        return t
    rewrite_weights(tasks[1], poison)
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=[str(tasks[1]), "o_proj.lora_A", "NaN or Inf"])


def test_inf_in_projector(tasks, tmp_path, capsys):
    path = tasks[2] / "non_lora_trainables.bin"
    state = torch.load(path, weights_only=True)
    next(iter(state.values()))[0] = float("inf")
    torch.save(state, path)
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=[str(path), "NaN or Inf"])


def test_fewer_than_two(tasks, tmp_path, capsys):
    expect_error(capsys, tmp_path / "out", "--adapters", tasks[0], needles=["at least two"])


def test_same_adapter_twice(tasks, tmp_path, capsys):
    expect_error(capsys, tmp_path / "out", "--adapters", tasks[0], tasks[1], f"{tasks[0]}/.", needles=["given twice", str(tasks[0])])


@pytest.mark.parametrize("where", ["equal", "inside", "contains"])
def test_output_overlapping_an_input(where, tasks, tmp_path, capsys):
    out = {"equal": tasks[0], "inside": tasks[0] / "merged", "contains": tasks[0].parent}[where]
    before = {p: p.read_bytes() for p in tasks[0].iterdir()}
    code, err = run_cli(capsys, "--adapters", *tasks, "--out", out, "--overwrite")
    assert code == 2 and "input" in err and str(out) in err
    assert {p: p.read_bytes() for p in tasks[0].iterdir()} == before


def test_unknown_method_and_parameter(tasks, tmp_path, capsys):
    expect_error(capsys, tmp_path / "out", "--method", "fisher", "--adapters", *tasks, needles=["unknown merge method 'fisher'", "ties"])
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, "--set", "mask_ratio=0.2", needles=["unknown parameter 'mask_ratio'", "keep"])
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, "--preset", "fast", needles=["unknown preset 'fast'", "official"])


@pytest.mark.parametrize("setting,needle", [("keep=0", "keep=0.0 is out of range (0, 1]"), ("keep=1.5", "out of range"),
                                            ("lam=-1", "lam=-1.0 is out of range"), ("keep=abc", "is not a float"),
                                            ("lambda_on=sum", "not one of")])
def test_parameter_out_of_range(setting, needle, tasks, tmp_path, capsys):
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, "--set", setting, needles=[needle])


def test_dare_drop_of_one_rejected(tasks, tmp_path, capsys):
    expect_error(capsys, tmp_path / "out", "--method", "dare", "--adapters", *tasks, "--set", "drop=1", needles=["drop=1.0 is out of range [0, 1)"])


def test_non_empty_output_is_kept_unless_overwrite(tasks, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, err = run_cli(capsys, "--adapters", *tasks, "--out", out)
    assert code == 2 and "not empty" in err and "--overwrite" in err
    assert (out / "precious.txt").read_text() == "keep me"
    assert run_cli(capsys, "--adapters", *tasks, "--out", out, "--overwrite")[0] == 0
    assert not (out / "precious.txt").exists() and (out / "adapter_model.safetensors").is_file()


def test_failure_mid_merge_keeps_previous_output(tasks, tmp_path, capsys):
    """A run that fails after writing started leaves the earlier output folder as it was."""
    out = tmp_path / "out"
    assert run_cli(capsys, "--adapters", *tasks, "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    key = "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"  # the last module

    def poison(t):
        t[key][0, 0] = float("inf")
        return t
    rewrite_weights(tasks[0], poison)
    code, err = run_cli(capsys, "--adapters", *tasks, "--out", out, "--overwrite")
    assert code == 2 and "NaN or Inf" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_missing_projector_in_one_task(tasks, tmp_path, capsys):
    (tasks[1] / "non_lora_trainables.bin").unlink()
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, needles=[str(tasks[1]), "non_lora_trainables.bin", "--extras drop"])
    assert run_cli(capsys, "--adapters", *tasks, "--out", tmp_path / "o2", "--extras", "drop")[0] == 0
    assert not (tmp_path / "o2" / "non_lora_trainables.bin").exists()


def test_bad_yaml_config(tasks, tmp_path, capsys):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("method: ties\nparams: {density: 0.3}\nbogus: 1\n")
    expect_error(capsys, tmp_path / "out", "--adapters", *tasks, "--config", cfg, needles=[str(cfg), "bogus"])
    cfg.write_text("method: ties\nparams: {density: 0.3}\n")
    assert run_cli(capsys, "--adapters", *tasks, "--out", tmp_path / "ok", "--config", cfg)[0] == 0
    record = json.loads((tmp_path / "ok" / "merge_record.json").read_text())
    assert record["method"] == "ties" and record["params"]["density"] == 0.3


# ---- rule files on ROBUSTMERGE_RULES_PATH --------------------------------------------------------

@pytest.mark.parametrize("content,needles", [
    (None, ["is neither a folder nor a .py file", "missing"]),
    ("raise RuntimeError('boom')\n", ["bad.py failed to import", "RuntimeError: boom", "fix the rule file"]),
    ("from robustmerge.methods import register\n\n@register(paper='x', params=[])\ndef ties(A, B, p, ctx):\n"
     "    '''a second ties'''\n    return A.sum(0), B.sum(0)\n", ["merge rule 'ties' is defined twice", "bad.py"]),
])
def test_bad_rule_path_or_file(content, needles, tmp_path, monkeypatch):
    from robustmerge.errors import MergeInputError, UserError
    from robustmerge.methods import REGISTRY, load_rules

    before = dict(REGISTRY)
    target = tmp_path / "missing"
    if content is not None:
        target = tmp_path / "bad.py"
        target.write_text(content)
    monkeypatch.setenv("ROBUSTMERGE_RULES_PATH", str(target))
    with pytest.raises(MergeInputError) as err:
        load_rules()
    assert isinstance(err.value, UserError)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))
    assert REGISTRY == before  # nothing registered, nothing replaced
