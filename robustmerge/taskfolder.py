"""The LLaVA LoRA task-folder format and the PEFT adapter-folder format: file names, folder
kinds, key names, lazy reading and atomic writing. The one owner of this contract between
training (``llava.train``), merging (``robustmerge``) and loading (``llava.model``).

A folder is an adapter folder when it holds :data:`ADAPTER_CONFIG` (a PEFT LoraConfig) and
one of :data:`WEIGHT_FILES` (the LoRA factors, keys
``base_model.model.<module>.lora_{A,B}.weight``, no adapter name). A LLaVA task folder also
carries :data:`PROJECTOR_FILE` (the fine-tuned projector, keys
``base_model.model.model.mm_projector.*``) and :data:`MODEL_CONFIG` (the LlavaConfig of the
run); a merged output adds :data:`MERGE_RECORD`.

Reading is lazy: :class:`TensorFile` gives every key's shape and dtype from the file header
(safetensors) or a memory map (``.bin``) and reads one tensor when asked
(``os.pread`` at header offsets). This module imports torch only where tensors are touched,
so :mod:`robustmerge.hashing` (imported before torch on purpose) can use the names.

Writing goes through :func:`write_folder` (a temporary folder renamed over the output) or
:func:`update_folder` (files moved into an existing folder, the adapter config last, so a
folder only looks like an adapter once it is complete).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_folder
from .errors import MergeInputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# ---------------------------------------------------------------- file names

ADAPTER_CONFIG = "adapter_config.json"  # PEFT LoraConfig: what makes a folder an adapter
ADAPTER_SAFETENSORS = "adapter_model.safetensors"
ADAPTER_BIN = "adapter_model.bin"  # legacy (PEFT < 0.5) torch pickle
WEIGHT_FILES = (ADAPTER_SAFETENSORS, ADAPTER_BIN)  # the first present is read
PROJECTOR_FILE = "non_lora_trainables.bin"  # LLaVA's fine-tuned projector (the "extra" weights)
MODEL_CONFIG = "config.json"  # the Hugging Face model config (LlavaConfig of a task folder)
MERGE_RECORD = "merge_record.json"  # what a merge wrote, from what, how
MODEL_CARD = "README.md"  # PEFT's model card
PROJECTOR_RUN_FILE = "mm_projector.bin"  # LLaVA pre-training output (projector only)

# ---------------------------------------------------------------- folder kinds

LLAVA_TASK = "llava-task"  # adapter + projector (LLaVA's train.py with LoRA)
PEFT_ADAPTER = "peft-adapter"  # adapter only
MERGED = "merged"  # a robustmerge output (adapter, projector if the tasks had one, record)


def is_adapter_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds :data:`ADAPTER_CONFIG`."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def folder_kind(folder: str | os.PathLike) -> str | None:
    """:data:`MERGED`, :data:`LLAVA_TASK`, :data:`PEFT_ADAPTER`, or None for a folder that is
    no adapter folder. Decided from the files present, never from the folder's name."""
    folder = Path(folder)
    if not is_adapter_folder(folder):
        return None
    if (folder / MERGE_RECORD).is_file():
        return MERGED
    return LLAVA_TASK if (folder / PROJECTOR_FILE).is_file() else PEFT_ADAPTER


def find_weight_file(folder: str | os.PathLike) -> Path | None:
    """The folder's adapter weights: the first of :data:`WEIGHT_FILES` present."""
    folder = Path(folder)
    return next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)


def find_projector_file(folder: str | os.PathLike) -> Path | None:
    """The folder's :data:`PROJECTOR_FILE`, or None."""
    path = Path(folder) / PROJECTOR_FILE
    return path if path.is_file() else None


# ---------------------------------------------------------------- key names

PEFT_PREFIX = "base_model.model."  # PeftModel.base_model (LoraModel) .model (the wrapped model)
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


def parse_lora_key(key: str) -> tuple[str, str, str | None] | None:
    """``<module>.lora_{A|B}[.<adapter>].weight`` -> (module, 'A'|'B', adapter name or None);
    None for a key that is no LoRA factor of a linear layer. Files hold no adapter name; a
    PeftModel's own state dict has one (``.lora_A.default.weight``)."""
    m = _LORA_KEY.match(key)
    return None if m is None else (m["module"], m["factor"], m["adapter"])


def lora_key(module: str, factor: str, adapter: str | None = None) -> str:
    """The key of one LoRA factor: ``<module>.lora_<factor>[.<adapter>].weight``."""
    return f"{module}.lora_{factor}{'.' + adapter if adapter else ''}.weight"


def module_name(peft_name: str) -> str:
    """PEFT name -> the wrapped model's name: ``base_model.model.model.layers.0.mlp.up_proj``
    -> ``model.layers.0.mlp.up_proj`` (names without the prefix are returned as they are)."""
    return peft_name.removeprefix(PEFT_PREFIX)


def peft_name(name: str) -> str:
    """The wrapped model's name -> PEFT name (the inverse of :func:`module_name`)."""
    return PEFT_PREFIX + name


def projector_key(key: str) -> str:
    """The one projector-key rule: a stored projector key -> the model's parameter name.

    ``base_model.model.model.mm_projector.0.weight`` (LLaVA's train.py) and
    ``model.model.mm_projector.0.weight`` (``base_model.`` already dropped) ->
    ``model.mm_projector.0.weight``; ``model.mm_projector.0.weight`` (the released merge,
    LLaVA's pre-training ``mm_projector.bin``) stays. That is: drop :data:`PEFT_PREFIX`, else
    drop the first ``model.`` of a ``model.model.`` key.
    """
    if key.startswith(PEFT_PREFIX):
        return key[len(PEFT_PREFIX):]
    if key.startswith("model.model."):
        return key[len("model."):]
    return key


def lora_modules(keys: list[str], source: Path) -> dict[str, tuple[str, str]]:
    """module -> (A key, B key) in file order, for the keys of an adapter weight file.

    Raises MergeInputError (naming ``source``) for a key that is no LoRA factor (an adapter
    name in the key counts as one), a module with only one factor, or no LoRA keys at all.
    """
    found: dict[str, dict[str, str]] = {}
    for key in keys:
        parsed = parse_lora_key(key)
        if parsed is None or parsed[2] is not None:
            raise MergeInputError(
                f"{source}: key {key!r} is not a LoRA factor (expected '<module>.lora_A.weight' "
                "or '<module>.lora_B.weight'); remove it or save the adapter without extra weights"
            )
        found.setdefault(parsed[0], {})[parsed[1]] = key
    for module, pair in found.items():
        if set(pair) != {"A", "B"}:
            missing = "B" if "A" in pair else "A"
            raise MergeInputError(
                f"{source}: module {module!r} has lora_{'A' if missing == 'B' else 'B'} but no "
                f"lora_{missing}; the file is incomplete, re-export the adapter"
            )
    if not found:
        raise MergeInputError(f"{source}: holds no LoRA weights")
    return {m: (p["A"], p["B"]) for m, p in found.items()}


# ---------------------------------------------------------------- lazy reading

_ST_DTYPE_NAMES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL")


def _st_dtypes() -> dict:
    import torch

    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
            "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool}


class TensorFile:
    """Lazy access to the tensors of one weight file (safetensors or torch pickle)."""

    REMAP_BYTES = 64 << 20

    def __init__(self, path: Path):
        self.path = path
        self._meta: dict[str, tuple[tuple[int, ...], torch.dtype]] | None = None
        self._offsets: dict[str, tuple[int, int]] = {}
        self._data_start = 0
        self._bin: dict[str, torch.Tensor] | None = None
        self._served = 0
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def meta(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """key -> (shape, dtype), in file order, without reading tensor data."""
        if self._meta is None:
            if self.path.suffix == ".safetensors":
                header, dtypes = self._read_safetensors_header(), _st_dtypes()
                self._meta = {}
                for k, v in header.items():
                    if v.get("dtype") not in _ST_DTYPE_NAMES:
                        raise MergeInputError(f"{self.path}: tensor {k!r} has unsupported dtype {v.get('dtype')}")
                    self._meta[k] = (tuple(v["shape"]), dtypes[v["dtype"]])
                    self._offsets[k] = tuple(v["data_offsets"])
            else:
                self._meta = {k: (tuple(t.shape), t.dtype) for k, t in self._bin_dict().items()}
        return self._meta

    def keys(self) -> list[str]:
        return list(self.meta())

    def get(self, key: str, out: torch.Tensor | None = None, copy: bool = True) -> torch.Tensor:
        """One tensor, read on demand into memory of its own (or into ``out``, e.g. a slice of
        a stacked buffer, which saves a copy).

        safetensors: read with ``os.pread`` at the offsets of the header (no memory map, so
        the process's resident memory holds only what the merge is working on).
        ``.bin``: ``torch.load(mmap=True, weights_only=True)``; the tensor is copied out and
        the mapping is dropped after :attr:`REMAP_BYTES` bytes, which bounds resident memory
        (``copy=False`` returns the mapped tensor itself, for callers that :meth:`close` soon).
        """
        if self.path.suffix != ".safetensors":
            with self._lock:  # the driver reads modules from several threads
                src = self._bin_dict()[key]
                tensor = (src.clone() if copy else src) if out is None else out.copy_(src)
                self._served += tensor.numel() * tensor.element_size()
                if self._served > self.REMAP_BYTES:
                    self._bin, self._served = None, 0
            return tensor
        import torch

        shape, dtype = self.meta()[key]
        begin, end = self._offsets[key]
        tensor = torch.empty(shape, dtype=dtype) if out is None else out
        if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype or not tensor.is_contiguous():
            raise ValueError(f"{key}: out has {tuple(tensor.shape)} {tensor.dtype}, the file {tuple(shape)} {dtype}")
        if end == begin:
            return tensor
        try:
            with self._lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDONLY)
            view = tensor.view(-1).view(torch.uint8).numpy()
            got = os.preadv(self._fd, [view], self._data_start + begin)  # pread: safe across threads
        except OSError as exc:
            raise MergeInputError(f"{self.path}: cannot read tensor {key!r} ({exc}); copy the file again") from exc
        if got != end - begin:
            raise MergeInputError(f"{self.path}: tensor {key!r} is truncated; copy the file again from its source")
        return tensor

    def read_all(self) -> dict[str, torch.Tensor]:
        """Every tensor, in file order (each in memory of its own)."""
        return {k: self.get(k) for k in self.meta()}

    def close(self) -> None:
        """Release the file descriptor and any memory map."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._bin = None

    def _read_safetensors_header(self) -> dict:
        # Read and check the header by hand so that a truncated file names itself clearly.
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                if n <= 0 or 8 + n > size:
                    raise ValueError(f"header length {n} does not fit a file of {size} bytes")
                header = json.loads(f.read(n))
            header.pop("__metadata__", None)
            end = max((v["data_offsets"][1] for v in header.values()), default=0)
            self._data_start = 8 + n
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MergeInputError(
                f"{self.path}: not a readable safetensors file ({exc}); copy it again from its source"
            ) from exc
        if 8 + n + end > size:
            raise MergeInputError(
                f"{self.path}: truncated ({size} bytes, its header promises {8 + n + end}); "
                "copy it again from its source"
            )
        return header

    def _bin_dict(self) -> dict[str, torch.Tensor]:
        if self._bin is None:
            self._bin = load_bin(self.path)
        return self._bin


def load_bin(path: Path) -> dict[str, torch.Tensor]:
    """Load a torch-pickled dict of tensors safely (``weights_only=True``, mmap when possible)."""
    import torch

    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # legacy (non-zip) files cannot be memory-mapped
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except MergeInputError:
        raise
    except Exception as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise MergeInputError(
                f"{path}: the pickle holds more than plain tensors, so it is not loaded (a pickle "
                "can run code). Re-save it as a dict of tensors or as safetensors"
            ) from exc
        raise MergeInputError(
            f"{path}: cannot read weights ({type(exc).__name__}: {exc}); the file looks truncated "
            "or corrupt: copy it again from its source"
        ) from exc
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise MergeInputError(
            f"{path}: expected a dict of name -> tensor, found {type(obj).__name__}; "
            "re-save the weights as a state dict"
        )
    return obj


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a weight file at once, in file order (safetensors or ``.bin`` pickle,
    the latter with ``weights_only=True``: a pickle can run code). For loaders, which copy
    the tensors into a model; the merge reads through :class:`TensorFile` instead."""
    path = Path(path)
    return TensorFile(path).read_all() if path.suffix == ".safetensors" else load_bin(path)


def read_adapter_config(folder: str | os.PathLike) -> dict:
    """The folder's :data:`ADAPTER_CONFIG` as a dict (MergeInputError naming the fix)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MergeInputError(f"{folder}: adapter folder not found; pass the folder that holds {ADAPTER_CONFIG}")
    path = folder / ADAPTER_CONFIG
    if not path.is_file():
        raise MergeInputError(f"{path}: missing; an adapter folder needs its {ADAPTER_CONFIG}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MergeInputError(f"{path}: not valid JSON ({exc}); restore the file") from exc


@dataclass
class FolderIndex:
    """An adapter folder opened lazily: its config and the key/shape/dtype index of its
    weight files (``weights.meta()``, ``projector.meta()``); tensors are read on demand
    (``weights.get(key)``)."""

    path: Path
    kind: str
    config: dict
    weights: TensorFile
    projector: TensorFile | None

    @property
    def weight_file(self) -> Path:
        return self.weights.path

    @property
    def projector_file(self) -> Path | None:
        return None if self.projector is None else self.projector.path

    def lora_modules(self) -> dict[str, tuple[str, str]]:
        """module -> (A key, B key) of the adapter weights (see :func:`lora_modules`)."""
        return lora_modules(self.weights.keys(), self.weight_file)


def open_folder(folder: str | os.PathLike) -> FolderIndex:
    """Open an adapter folder: config read, weight files found; no tensor data read."""
    folder = Path(folder)
    config = read_adapter_config(folder)
    weight_file = find_weight_file(folder)
    if weight_file is None:
        raise MergeInputError(
            f"{folder}: no adapter weights (looked for {' or '.join(WEIGHT_FILES)}); "
            "copy the adapter's weight file into the folder"
        )
    projector = find_projector_file(folder)
    return FolderIndex(folder, folder_kind(folder), config, TensorFile(weight_file),
                       None if projector is None else TensorFile(projector))


# ---------------------------------------------------------------- writing


def _json_text(obj: dict, sort_keys: bool = False) -> str:
    return json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n"


class FolderWriter:
    """Writes the files of one adapter / task folder into ``folder`` (the temporary folder of
    :func:`write_folder` or :func:`update_folder`). Every method returns the written path."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def adapter_config(self, config) -> Path:
        """:data:`ADAPTER_CONFIG`: a dict (JSON, indent 2) or a PEFT config (``save_pretrained``)."""
        if isinstance(config, dict):
            (self.folder / ADAPTER_CONFIG).write_text(_json_text(config))
        else:
            config.save_pretrained(str(self.folder))
        return self.folder / ADAPTER_CONFIG

    def lora(self, tensors: dict, fmt: str = "safetensors") -> Path:
        """The LoRA factors as :data:`ADAPTER_SAFETENSORS` (``fmt='safetensors'``) or
        :data:`ADAPTER_BIN` (``fmt='bin'``, torch.save)."""
        if fmt == "safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(self.folder / ADAPTER_SAFETENSORS), metadata={"format": "pt"})
            return self.folder / ADAPTER_SAFETENSORS
        if fmt != "bin":
            raise ValueError(f"fmt must be 'safetensors' or 'bin', not {fmt!r}")
        import torch

        torch.save(tensors, self.folder / ADAPTER_BIN)
        return self.folder / ADAPTER_BIN

    def lora_stream(self, layout: list, metadata: dict | None = None, header_order: list[str] | None = None):
        """A :class:`~robustmerge.io.SafetensorsStreamWriter` on :data:`ADAPTER_SAFETENSORS`."""
        from .io import SafetensorsStreamWriter

        return SafetensorsStreamWriter(self.folder / ADAPTER_SAFETENSORS, layout, metadata, header_order)

    def lora_bin_copy(self) -> Path:
        """:data:`ADAPTER_BIN` holding the tensors of the :data:`ADAPTER_SAFETENSORS` written."""
        from safetensors.torch import load_file

        return self.lora(load_file(self.folder / ADAPTER_SAFETENSORS), fmt="bin")

    def projector(self, tensors: dict) -> Path:
        """:data:`PROJECTOR_FILE` (torch.save, as LLaVA writes it)."""
        import torch

        torch.save(tensors, self.folder / PROJECTOR_FILE)
        return self.folder / PROJECTOR_FILE

    def model_config(self, config: dict | Path, sort_keys: bool = True) -> Path:
        """:data:`MODEL_CONFIG`: a dict (JSON, indent 2, keys sorted unless ``sort_keys=False``)
        or the path of a config file to copy byte for byte."""
        if isinstance(config, dict):
            (self.folder / MODEL_CONFIG).write_text(_json_text(config, sort_keys))
        else:
            shutil.copyfile(config, self.folder / MODEL_CONFIG)
        return self.folder / MODEL_CONFIG

    def merge_record(self, record: dict) -> Path:
        """:data:`MERGE_RECORD` (JSON, indent 2)."""
        (self.folder / MERGE_RECORD).write_text(_json_text(record))
        return self.folder / MERGE_RECORD

    def model_card(self, text: str) -> Path:
        """:data:`MODEL_CARD`."""
        (self.folder / MODEL_CARD).write_text(text)
        return self.folder / MODEL_CARD

    def names(self) -> list[str]:
        """The names of the files written so far, sorted."""
        return sorted(p.name for p in self.folder.iterdir())


@contextmanager
def write_folder(out: str | os.PathLike) -> Iterator[FolderWriter]:
    """Write a whole folder atomically: the files go into a temporary folder beside ``out``,
    which replaces ``out`` in one rename on success and is removed on failure (``out``
    untouched). The caller decides beforehand whether an existing ``out`` may be replaced."""
    with atomic_folder(Path(out)) as tmp:
        yield FolderWriter(tmp)


@contextmanager
def update_folder(out: str | os.PathLike) -> Iterator[FolderWriter]:
    """Write task-folder files into an existing folder that holds other files too (a
    training checkpoint): written into a temporary folder inside ``out``, then each moved
    into place, :data:`ADAPTER_CONFIG` last (a folder only looks like an adapter once it is
    complete). A weight file of :data:`WEIGHT_FILES` not written this time is removed
    (an old PEFT would read a stale one). On failure ``out`` keeps its files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".saving-", dir=out))
    try:
        writer = FolderWriter(tmp)
        yield writer
        names = writer.names()
        for stale in WEIGHT_FILES:
            if stale not in names and (out / stale).is_file():
                (out / stale).unlink()
        for name in sorted(names, key=lambda n: n == ADAPTER_CONFIG):
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
