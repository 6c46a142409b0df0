"""Output writing: a streaming safetensors writer, atomic output folders (file hashing: ``hashing``)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .atomic import atomic_folder  # noqa: F401  (re-exported)
from .adapters import all_finite
from .errors import MergeInputError

_DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


class SafetensorsStreamWriter:
    """Write a safetensors file one tensor at a time, never holding the whole file.

    The header (names, dtypes, shapes, offsets) is written first from the declared layout;
    tensors are then written in declaration order, each checked against its declaration.
    """

    def __init__(self, path: Path, layout: list[tuple[str, tuple[int, ...], torch.dtype]],
                 metadata: dict | None = None, header_order: list[str] | None = None, check_finite: bool = True):
        """layout: (name, shape, dtype) in the order tensors will be written; header_order:
        the order names are listed in the header (default: layout order); ``check_finite``:
        refuse (MergeInputError) a tensor holding NaN or Inf, so no all-NaN adapter is written."""
        self.path, self._check_finite = Path(path), check_finite
        entries: dict = {}
        offset = 0
        self._expected: list[tuple[str, tuple[int, ...], torch.dtype]] = []
        for name, shape, dtype in layout:
            nbytes = int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()
            entries[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self._expected.append((name, tuple(shape), dtype))
            offset += nbytes
        header = {"__metadata__": {"format": "pt", **(metadata or {})}}
        header.update({name: entries[name] for name in (header_order or list(entries))})
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self._f = open(path, "wb", buffering=0)
        self._write_all(len(blob).to_bytes(8, "little") + blob)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        exp_name, shape, dtype = self._expected[self._next]
        if (name, tuple(tensor.shape), tensor.dtype) != (exp_name, shape, dtype):
            raise RuntimeError(f"writer expected {exp_name} {shape} {dtype}, got {name} {tuple(tensor.shape)} {tensor.dtype}")
        if self._check_finite and not all_finite(tensor):
            raise MergeInputError(
                f"{self.path}: the merged tensor {name!r} holds NaN or Inf values (the inputs are finite, so a "
                "parameter such as lam is too large for float32); choose smaller parameters"
            )
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._write_all(data)  # straight from the tensor's memory, no copy
        self._next += 1

    def _write_all(self, data) -> None:
        view = memoryview(data).cast("B")
        while view:  # an unbuffered write may take only part of a large buffer
            view = view[self._f.write(view):]

    def close(self) -> None:
        if self._next != len(self._expected):
            self._f.close()
            raise RuntimeError(f"writer closed after {self._next} of {len(self._expected)} tensors")
        self._f.close()


def check_output_folder(out: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse an output that is, contains or lies inside an input, or a non-empty folder
    unless ``overwrite``, or an output path that is a symbolic link."""
    from .atomic import refuse_symlink

    refuse_symlink(out)
    out_r = out.resolve()
    for inp in inputs:
        inp_r = inp.resolve()
        if out_r == inp_r or inp_r in out_r.parents:
            raise MergeInputError(f"{out}: the output folder is or lies inside the input {inp}; choose another --out")
        if out_r in inp_r.parents:
            raise MergeInputError(f"{out}: the output folder contains the input {inp}; choose another --out")
    if out.exists() and not out.is_dir():
        raise MergeInputError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MergeInputError(f"{out}: folder exists and is not empty; pass --overwrite to replace it, or choose another --out")
