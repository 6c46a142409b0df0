"""Find the CLIP tower named in `mm_vision_tower` on disk, offline, and build it.

Resolution order (first folder holding a model config, `robustmerge.taskfolder.MODEL_CONFIG`, wins):
1. the explicit `override` argument (`vision_tower_path=` / `--vision-tower`);
2. the environment variable `LLAVA_VISION_TOWER` (a tower folder);
3. `mm_vision_tower` itself when it is an absolute path;
4. `<dir>/<name>` and `<dir>/<last part of name>` for every folder in `LLAVA_VISION_TOWER_DIRS`
   (os.pathsep-separated), then for the model folder, the base folder and their parents
   (LLaVA resolved relative names against the working directory; fixtures put the tower next
   to the model);
5. a copy already in the local Hugging Face cache (`local_files_only`, never a download).
An explicit override (1 or 2) that is not a tower folder is an error rather than a fallback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from llava.model.errors import LlavaLoadError
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from robustmerge.taskfolder import MODEL_CONFIG

logger = logging.getLogger(__name__)

VISION_TOWER_ENV = "LLAVA_VISION_TOWER"
VISION_TOWER_DIRS_ENV = "LLAVA_VISION_TOWER_DIRS"


def _is_tower_folder(path: Path) -> bool:
    return path.is_dir() and (path / MODEL_CONFIG).is_file()


def _explicit_override(override: str | Path | None) -> Path | None:
    """The tower folder forced by argument or environment, checked to exist."""
    for source, value in (("vision_tower_path", override), (VISION_TOWER_ENV, os.environ.get(VISION_TOWER_ENV))):
        if not value:
            continue
        path = Path(value).expanduser()
        if not _is_tower_folder(path):
            raise LlavaLoadError(
                f"{path} (from {source}) is not a vision tower folder (no {MODEL_CONFIG}); "
                "point it at a folder saved with CLIPVisionModel/CLIPModel.save_pretrained"
            )
        return path
    return None


def _hub_cache_copy(name: str) -> Path | None:
    """A snapshot of hub id `owner/name` already in the local HF cache, else None."""
    if name.count("/") != 1 or Path(name).expanduser().is_absolute():
        return None
    try:
        from huggingface_hub import snapshot_download

        # cache_dir read now (not at import) so HF_HUB_CACHE set by a caller is honoured
        return Path(snapshot_download(name, local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE")))
    except Exception:  # noqa: BLE001 - any miss (not cached, bad id) means "not here"
        return None


def candidate_tower_paths(name: str, search_dirs: Sequence[str | Path] = ()) -> list[Path]:
    """Every local folder `name` may refer to, in the order they are tried."""
    raw = Path(name).expanduser()
    candidates = [raw] if raw.is_absolute() else []
    env_dirs = [d for d in os.environ.get(VISION_TOWER_DIRS_ENV, "").split(os.pathsep) if d]
    for folder in [*env_dirs, *search_dirs]:
        for rel in dict.fromkeys([name, raw.name]):
            candidates.append(Path(folder).expanduser() / rel)
    return list(dict.fromkeys(candidates))


def resolve_vision_tower(
    name: str,
    search_dirs: Sequence[str | Path] = (),
    override: str | Path | None = None,
    source: str = "mm_vision_tower",
) -> Path:
    """The local folder of the vision tower `name` (see module docstring for the order).

    `source` names where `name` came from, for the error message.
    """
    forced = _explicit_override(override)
    if forced is not None:
        return forced
    candidates = candidate_tower_paths(name, search_dirs)
    for path in candidates:
        if _is_tower_folder(path):
            logger.info("vision tower %r resolved to %s", name, path)
            return path
    cached = _hub_cache_copy(name)
    if cached is not None:
        return cached
    looked = "\n  ".join(str(p) for p in candidates) or "(no candidate folders)"
    raise LlavaLoadError(
        f"vision tower {name!r} ({source}) not found offline. Looked for:\n  {looked}\n"
        "  and the local Hugging Face cache.\nFix: pass vision_tower_path= (CLI: --vision-tower), "
        f"set {VISION_TOWER_ENV}=<tower folder> or {VISION_TOWER_DIRS_ENV}=<folder holding it>, "
        "or put the tower folder next to the model folder."
    )


def build_vision_tower(config, tower_path: str | Path, dtype=None, attn_implementation=None) -> CLIPVisionTower:
    """The CLIP tower for a LlavaConfig, loaded from an already resolved folder."""
    return CLIPVisionTower(
        tower_path,
        select_layer=getattr(config, "mm_vision_select_layer", -2),
        select_feature=getattr(config, "mm_vision_select_feature", "patch"),
        dtype=dtype,
        attn_implementation=attn_implementation,
    )
