"""DeepSpeed ZeRO-2/3 LoRA training in one CPU process (slow: run with ``-m slow``).

Each deepspeed run is a subprocess (deepspeed initialises torch.distributed, which must not
leak into the test process), launched as ``torchrun``/``deepspeed`` would set it up for rank 0
of 1. The first run on a machine JIT-builds DeepSpeed's CPU communication op (about two
minutes, cached afterwards in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import in_ci
from PIL import Image

from llava.conversation import build_prompt
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.tiny import make_tiny_llava
from llava.train.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import QUESTION, make_samples, write_images  # noqa: E402  (builders shared with the fast tests)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
STEPS = 12


@pytest.fixture(scope="module")
def needs_deepspeed() -> None:
    """Skip (with the import error) when `import deepspeed` fails, and fail under CI=true (where
    `.ci/run` installs it); checked in a subprocess, once."""
    run = subprocess.run([sys.executable, "-c", "import deepspeed"], capture_output=True, text=True)
    if run.returncode != 0:
        error = (run.stderr.strip().splitlines() or ["import failed"])[-1]
        message = f"deepspeed not importable ({error}); install it with pip install -e '.[train]'"
        if in_ci():
            pytest.fail("CI=true: " + message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    tiny = make_tiny_llava(root / "models")
    data = root / "data"
    (data / "train.json").parent.mkdir(parents=True, exist_ok=True)
    # Every sample has an image: a text-only batch leaves the projector without gradients, and
    # there the two optimizers part ways by design (torch's AdamW skips a parameter whose grad is
    # None; DeepSpeed's flat fp32 partitions give it a zero gradient, so its moments decay and
    # its momentum keeps moving it). With two text-only samples the losses after that batch
    # differed by up to 3e-3; without them the runs do the same arithmetic.
    (data / "train.json").write_text(json.dumps(make_samples(write_images(data / "images", 24), text_only=0)))
    return tiny, data


def _argv(tiny, data: Path, out: Path, *extra: str) -> list[str]:
    flags = {
        "model_name_or_path": tiny.base, "data_path": data / "train.json", "image_folder": data / "images",
        "output_dir": out, "use_cpu": True, "lora_r": 8, "lora_alpha": 16, "mm_projector_lr": 1e-3,
        "learning_rate": 3e-3, "max_steps": STEPS, "per_device_train_batch_size": 4, "logging_steps": 1,
        "save_steps": 6, "disable_tqdm": True, "group_by_modality_length": True, "seed": 0,
        "dataloader_pin_memory": False,
    }  # fmt: skip
    return [*(item for k, v in flags.items() for item in (f"--{k}", str(v))), *extra]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_cli(argv: list[str], prelude: str = "") -> subprocess.CompletedProcess:
    """`python -m llava.train.train argv` as rank 0 of a world of 1."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
           "LOCAL_RANK": "0", "WORLD_SIZE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # fmt: skip
    code = f"{prelude}\nimport sys\nfrom llava.train.train import main\nsys.exit(main(sys.argv[1:]))"
    run = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def _losses(out: Path) -> list[float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def plain(setup, tmp_path_factory):
    """The same run without deepspeed, in-process (the reference for the losses)."""
    tiny, data = setup
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(_argv(tiny, data, tmp_path_factory.mktemp("plain") / "out"))
    finally:
        torch.set_num_threads(threads)


def _logits(folder: Path, tiny, data: Path) -> torch.Tensor:
    """fp32 logits [T, V] of the model loaded from `folder` (a task folder on `tiny.base`, or the base)."""
    base = None if folder == tiny.base else tiny.base
    tokenizer, model, processor, _ = load_pretrained_model(folder, base, device="cpu", dtype="fp32")
    ids = tokenizer_image_token(build_prompt(QUESTION), tokenizer, return_tensors="pt")[None]  # [1, L]
    pixels = process_images([Image.open(data / "images" / "img000.png").convert("RGB")], processor, model.config)
    with torch.no_grad():
        return model(input_ids=ids, images=pixels).logits[0]


def _assert_task_folder_loads(out: Path, tiny, data: Path, like: Path | None = None) -> None:
    """`out` and its checkpoint-6 read as task folders; `out` holds the trained weights (not the
    zero-initialised LoRA B), equal to those of the run in `like` when given."""
    from robustmerge.adapters import load_adapter_set

    adapters = load_adapter_set([out, out / "checkpoint-6"])
    assert len(adapters.modules) == 14 and len(adapters.extra_keys()) == 4
    trained = _logits(out, tiny, data)
    assert (trained - _logits(tiny.base, tiny, data)).abs().max().item() > 1e-2  # training changed the model
    if like is not None:
        assert (trained - _logits(like, tiny, data)).abs().max().item() <= 1e-4


def test_zero2_single_process_matches_plain_training_and_resumes(needs_deepspeed, setup, plain, tmp_path):
    tiny, data = setup
    out = tmp_path / "zero2"
    _run_cli(_argv(tiny, data, out, "--deepspeed", str(REPO / "scripts" / "zero2.json")))
    losses = _losses(out)
    print("zero2 - plain, largest loss difference:", max(abs(a - b) for a, b in zip(losses, plain.losses)))
    assert len(losses) == STEPS
    # same init, same batches, same fp32 arithmetic: the largest difference observed is 1e-6
    assert losses == pytest.approx(plain.losses, abs=1e-4)
    assert (out / "checkpoint-6" / "global_step6").is_dir()  # deepspeed's own optimizer state
    _assert_task_folder_loads(out, tiny, data, like=plain.output_dir)

    # resume from checkpoint-6 in a fresh folder: the same losses for steps 7..12
    resumed = tmp_path / "zero2-resumed"
    resumed.mkdir()
    subprocess.run(["cp", "-r", str(out / "checkpoint-6"), str(resumed)], check=True)
    _run_cli(_argv(tiny, data, resumed, "--deepspeed", str(REPO / "scripts" / "zero2.json")))
    assert _losses(resumed)[6:] == pytest.approx(losses[6:], abs=1e-4)


def test_zero3_single_process_trains_and_saves(needs_deepspeed, setup, plain, tmp_path):
    tiny, data = setup
    out = tmp_path / "zero3"
    zero3 = str(REPO / "scripts" / "zero3.json")
    _run_cli(_argv(tiny, data, out, "--deepspeed", zero3, "--gradient_checkpointing", "True"))
    losses = _losses(out)
    assert losses[0] == pytest.approx(plain.losses[0], abs=1e-4)
    assert sum(losses[-3:]) / 3 < 0.75 * losses[0]
    _assert_task_folder_loads(out, tiny, data)


def test_trains_without_deepspeed_installed(setup, tmp_path):
    """With deepspeed unimportable, a run without --deepspeed works and writes the task folder."""
    tiny, data = setup
    out = tmp_path / "no-ds"
    block = "import sys\nsys.modules['deepspeed'] = None  # import deepspeed -> ImportError"
    _run_cli(_argv(tiny, data, out, "--max_steps", "2", "--save_strategy", "no"), prelude=block)
    assert (out / "adapter_config.json").is_file() and (out / "non_lora_trainables.bin").is_file()


def test_task_script_trains_on_cpu(setup, tmp_path):
    """scripts/v1_5/finetune_task_lora.sh end to end on CPU (NUM_GPUS=0), paths from an env file."""
    tiny, data = setup
    env_file = tmp_path / "run.env"
    env_file.write_text(
        f"MODEL_BASE={tiny.base}\nDATA_PATH={data / 'train.json'}\nIMAGE_FOLDER={data / 'images'}\n"
        f"OUTPUT_DIR={tmp_path / 'script-out'}\nNUM_GPUS=0\nNUM_WORKERS=0\nBATCH_SIZE=4\nLORA_R=4\nLORA_ALPHA=8\n"
    )
    env = {**os.environ, "ENV_FILE": str(env_file), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        ["bash", str(REPO / "scripts/v1_5/finetune_task_lora.sh"), "--", "--max_steps", "2", "--disable_tqdm", "True"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    config = json.loads((tmp_path / "script-out" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
