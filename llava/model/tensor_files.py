"""Tensor files read and written one tensor at a time, so a 7B checkpoint never sits in memory.

- `TensorFiles`: the weights of a folder (or one file) in any of the layouts transformers
  writes: `model.safetensors`, sharded `model-*.safetensors` + `model.safetensors.index.json`,
  `pytorch_model.bin` (+ index) or a single tensor file such as a LoRA adapter file. Names,
  shapes and dtypes come from the headers; `get(name)` reads only that tensor (safetensors:
  a seek and a read, no memory map; `.bin`: a `weights_only` memory-mapped load that is
  dropped again after the read).
- `write_sharded_safetensors`: a planned list of tensors streamed into shards of at most
  `max_shard_bytes` (names `model-0000i-of-0000n.safetensors` + index, or one
  `model.safetensors`), each shard's header and data in name order as `safetensors` itself
  writes them, so a one-shard output is byte-identical to `safetensors.torch.save_file`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from llava.model.errors import LlavaLoadError
from robustmerge.io import SafetensorsStreamWriter

_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}  # fmt: skip
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies: its file, shape, dtype and (safetensors) byte range."""

    path: Path
    shape: tuple[int, ...]
    dtype: torch.dtype
    start: int = -1  # absolute byte offset of the data; -1 for .bin files
    end: int = -1


def _safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor infos from a safetensors header (8-byte length, JSON, then the data)."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
    except (OSError, ValueError) as exc:
        raise LlavaLoadError(f"{path}: not a readable safetensors file ({exc}); re-export or re-download it") from exc
    base = 8 + size
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in _ST_DTYPES:
            raise LlavaLoadError(f"{path}: tensor {name} has unsupported dtype {entry['dtype']}")
        start, end = entry["data_offsets"]
        out[name] = TensorInfo(path, tuple(entry["shape"]), _ST_DTYPES[entry["dtype"]], base + start, base + end)
    return out


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A torch pickle, memory-mapped when it is a zip archive (no code runs: weights_only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) format: cannot be memory-mapped
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise LlavaLoadError(f"{path}: cannot read tensors ({exc}); re-export or re-download it") from exc
    except Exception as exc:
        raise LlavaLoadError(f"{path}: cannot read tensors ({exc}); re-export or re-download it") from exc


def _bin_header(path: Path) -> dict[str, TensorInfo]:
    state = _load_bin(path)
    return {k: TensorInfo(path, tuple(v.shape), v.dtype) for k, v in state.items()}


def _read_file(path: Path) -> dict[str, TensorInfo]:
    return _safetensors_header(path) if path.suffix == ".safetensors" else _bin_header(path)


class TensorFiles:
    """Lazy, read-only view of the tensors in a weights folder or a single tensor file."""

    def __init__(self, source: str | Path, files: Iterable[str | Path] | None = None):
        source = Path(source)
        paths = [Path(p) for p in files] if files is not None else weight_files(source)
        self.source = source
        self.infos: dict[str, TensorInfo] = {}
        for path in paths:
            self.infos.update(_read_file(path))

    def keys(self) -> list[str]:
        return list(self.infos)

    def __iter__(self):
        return iter(self.infos)

    def __contains__(self, name: str) -> bool:
        return name in self.infos

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (a fresh CPU tensor in its stored dtype)."""
        info = self.infos[name]
        if info.start < 0:
            return _load_bin(info.path)[name].clone()  # the memory map is dropped with the dict
        n = info.end - info.start
        buf = bytearray(n)
        with open(info.path, "rb") as f:
            f.seek(info.start)
            if f.readinto(buf) != n:
                raise LlavaLoadError(f"{info.path}: truncated file (tensor {name}); re-export or re-download it")
        if n == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        return torch.frombuffer(buf, dtype=info.dtype).reshape(info.shape)


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model folder: the shards an index names, or the single file."""
    for index in _INDEXES:
        if (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text())["weight_map"]
            return [folder / name for name in sorted(set(weight_map.values()))]
    for single in _SINGLES:
        if (folder / single).is_file():
            return [folder / single]
    raise LlavaLoadError(f"{folder}: no weights ({', '.join(_SINGLES + _INDEXES)}); check the folder")


def parse_size(text: str | int) -> int:
    """'5GB' / '500MB' / '2GiB' / 123 -> bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise LlavaLoadError(f"cannot read the size {text!r}; write e.g. 5GB, 500MB or 2GiB")
    unit = (match.group(2) or "B").upper()
    power = "BKMGT".index(unit[0]) if unit != "B" else 0
    return int(float(match.group(1)) * ((1024 if "I" in unit else 1000) ** power))


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: its name, shape, dtype and how to compute it."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    make: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return int(torch.Size(self.shape).numel()) * torch.empty((), dtype=self.dtype).element_size()


def _shards(plan: list[PlannedTensor], max_bytes: int) -> list[list[PlannedTensor]]:
    """Consecutive groups (in name order) of at most `max_bytes` (a larger tensor gets its own)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for item in sorted(plan, key=lambda t: t.name):
        if shards[-1] and size + item.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item.nbytes
    return shards


def write_sharded_safetensors(plan: list[PlannedTensor], folder: Path, max_shard_bytes: int,
                              progress: Callable[[str], None] | None = None) -> list[Path]:
    """Compute and write every planned tensor, one at a time; returns the files written."""
    names = [t.name for t in plan]
    if len(set(names)) != len(names):
        raise ValueError("duplicate output tensor names")
    shards = _shards(plan, max_shard_bytes)
    files = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for shard, file in zip(shards, files):
        writer = SafetensorsStreamWriter(folder / file, [(t.name, t.shape, t.dtype) for t in shard])
        for item in shard:
            tensor = item.make()
            writer.write(item.name, tensor)
            del tensor
            if progress is not None:
                progress(item.name)
        writer.close()
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in plan)},
                 "weight_map": {t.name: f for shard, f in zip(shards, files) for t in shard}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return [folder / f for f in files]
