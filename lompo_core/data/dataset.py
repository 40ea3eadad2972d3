"""The episode dataset of DESIGN.md: one ``.npz`` per episode plus ``meta.json``.

Keys follow the Dreamer/V-D4RL convention: ``action[t]`` is the action that led to ``image[t]``
(``action[0]`` is zeros) and ``reward[t]`` is received on arriving at ``image[t]``. Episodes are
loaded one at a time (memory independent of the dataset's size) and checked on load, so that a
bad file is named, not discovered as a shape error deep inside training.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lompo_core.errors import DatasetError
from lompo_core.files import atomic_write_bytes, atomic_writer

SCHEMA_VERSION = 1
META_FILE = "meta.json"
IMAGE_SHAPE = (64, 64, 3)

# key -> (dtype, trailing shape; None for the action dimension)
KEYS: dict[str, tuple[np.dtype, tuple]] = {
    "image": (np.dtype(np.uint8), IMAGE_SHAPE),
    "action": (np.dtype(np.float32), (None,)),
    "reward": (np.dtype(np.float32), ()),
    "is_first": (np.dtype(bool), ()),
    "is_last": (np.dtype(bool), ()),
    "is_terminal": (np.dtype(bool), ()),
}

Episode = dict[str, np.ndarray]


def validate_episode(ep: Episode, where: str | Path, action_dim: int | None = None) -> int:
    """Check keys, dtypes and shapes; return the episode's length. Raises DatasetError."""
    missing = [k for k in KEYS if k not in ep]
    if missing:
        raise DatasetError(f"{where}: missing key(s) {', '.join(missing)}")
    length = None
    for key, (dtype, tail) in KEYS.items():
        arr = ep[key]
        if arr.dtype != dtype:
            raise DatasetError(f"{where}: key {key!r} has dtype {arr.dtype}, expected {dtype}")
        if arr.ndim != 1 + len(tail) or any(
            want is not None and got != want for got, want in zip(arr.shape[1:], tail, strict=False)
        ):
            shape = ("T", *("A" if t is None else t for t in tail))
            raise DatasetError(f"{where}: key {key!r} has shape {arr.shape}, expected {shape}")
        if length is None:
            length = arr.shape[0]
        elif arr.shape[0] != length:
            raise DatasetError(
                f"{where}: key {key!r} has {arr.shape[0]} steps, 'image' has {length}"
            )
    if not length:
        raise DatasetError(f"{where}: empty episode (0 steps)")
    if action_dim is not None and ep["action"].shape[1] != action_dim:
        raise DatasetError(
            f"{where}: key 'action' has dimension {ep['action'].shape[1]}, dataset says {action_dim}"
        )
    for key in ("action", "reward"):
        if not np.all(np.isfinite(ep[key])):
            raise DatasetError(f"{where}: key {key!r} holds NaN or Inf")
    if not ep["is_first"][0]:
        raise DatasetError(f"{where}: 'is_first' must be true at step 0")
    return int(length)


def save_episode(path: Path, ep: Episode, compress: bool = False) -> str:
    """Validate and write one episode atomically; return the file's sha256."""
    validate_episode(ep, path)
    save = np.savez_compressed if compress else np.savez
    with atomic_writer(Path(path)) as f:
        save(f, **{key: np.ascontiguousarray(ep[key]) for key in KEYS})
    return file_sha256(path)


def write_episode(
    root: Path, file: str, ep: Episode, compress: bool = False, **extra: Any
) -> dict[str, Any]:
    """Save ``ep`` as ``root / file``; its record for meta.json's ``episodes`` (``extra`` added)."""
    digest = save_episode(Path(root) / file, ep, compress)
    return {
        "file": file,
        "length": len(ep["image"]),
        "return": float(np.sum(ep["reward"])),
        "success": bool(np.any(ep["is_terminal"])),
        "sha256": digest,
        **extra,
    }


def load_episode(path: Path, action_dim: int | None = None) -> Episode:
    try:
        with np.load(path, allow_pickle=False) as z:
            ep = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DatasetError(f"{path}: episode file not found") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a readable .npz episode ({exc})") from None
    validate_episode(ep, path, action_dim)
    return ep


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hash(episode_hashes: list[str]) -> str:
    """One hash for a dataset: the sha256 of its episodes' sha256s in file order."""
    return hashlib.sha256("\n".join(episode_hashes).encode()).hexdigest()


def write_meta(root: Path, meta: dict[str, Any]) -> None:
    atomic_write_bytes(Path(root) / META_FILE, json.dumps(meta, indent=2).encode())


def write_dataset(
    root: Path,
    episodes: Iterable[Episode],
    action: dict[str, Any],
    preprocessing: dict[str, Any],
    name: str = "episode_{:06d}.npz",
    **meta: Any,
) -> Path:
    """A dataset folder from episodes in memory: each saved as ``name.format(i)``, then meta.json
    with their records, ``action``, ``preprocessing``, any other ``meta`` and the content hash.

    For programs, tests and benchmarks that make episodes without bags; ``lompo convert`` records
    sources, alignment and counts on top of this.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    records = [write_episode(root, name.format(i), ep) for i, ep in enumerate(episodes)]
    write_meta(
        root,
        {
            "schema_version": SCHEMA_VERSION,
            "action": action,
            "preprocessing": preprocessing,
            **meta,
            "episodes": records,
            "content_hash": content_hash([r["sha256"] for r in records]),
        },
    )
    return root


@dataclass(frozen=True)
class EpisodeInfo:
    file: str
    length: int
    ret: float
    success: bool
    sha256: str = ""  # of the file, as the converter wrote it


class EpisodeDataset:
    """A dataset folder: its metadata and lazily loaded episodes.

    ``meta.json`` holds at least ``schema_version``, ``action`` (``names``, ``unit``, ``max``),
    ``preprocessing`` and ``episodes`` (a list of ``{file, length, return, success, sha256}``).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / META_FILE
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset folder not found")
        if not meta_path.is_file():
            raise DatasetError(
                f"{meta_path}: missing; is {self.root} a dataset made by lompo convert?"
            )
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{meta_path}: not valid JSON ({exc})") from None
        version = self.meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DatasetError(
                f"{meta_path}: schema_version {version!r}, this lompo reads {SCHEMA_VERSION}"
            )
        try:
            self.episodes = [
                EpisodeInfo(
                    e["file"],
                    int(e["length"]),
                    float(e["return"]),
                    bool(e["success"]),
                    str(e.get("sha256", "")),
                )
                for e in self.meta["episodes"]
            ]
            self.action_dim = len(self.meta["action"]["names"])
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{meta_path}: missing field {exc}") from None
        if not self.episodes:
            raise DatasetError(f"{self.root}: the dataset holds no episodes")

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([e.length for e in self.episodes], np.int64)

    @property
    def total_steps(self) -> int:
        return int(self.lengths.sum())

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.meta.get("preprocessing", {}))

    @property
    def camera(self) -> dict[str, Any] | None:
        """The source camera's image size and encoding (from the converter's ``sources``).

        A crop in fractions means the same picture only at the same resolution: whatever renders
        images for this dataset's policy (the sim in evaluation) should use this size."""
        for source in self.meta.get("sources") or []:
            size = source.get("image_size")
            if isinstance(size, (list, tuple)) and len(size) == 2:
                return {
                    "width": int(size[0]),
                    "height": int(size[1]),
                    "encoding": source.get("image_encoding"),
                }
        return None

    @property
    def hash(self) -> str:
        return str(self.meta.get("content_hash", ""))

    def load(self, index: int, verify: bool = False) -> Episode:
        """Episode ``index``; ``verify``: also check the file against its sha256 in meta.json
        (after its structure, so that a malformed file is named by what is wrong with it)."""
        info = self.episodes[index]
        path = self.root / info.file
        ep = load_episode(path, self.action_dim)
        if verify and info.sha256:
            digest = file_sha256(path)
            if digest != info.sha256:
                raise DatasetError(
                    f"{path}: its content changed since it was written (sha256 {digest[:12]}..., "
                    f"{META_FILE} says {info.sha256[:12]}...)"
                )
        if len(ep["image"]) != info.length:
            raise DatasetError(
                f"{self.root / info.file}: {len(ep['image'])} steps, {META_FILE} says {info.length}"
            )
        return ep

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self.load(i)
