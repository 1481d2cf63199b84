"""Writing output files: checked before any work, and written so that a crash never leaves
a half-written one in place."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from diffumnist.config import ConfigError

# File name endings a grid can be written as, and Pillow's name for each format.
IMAGE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".bmp": "bmp",
                 ".tif": "tiff", ".tiff": "tiff"}  # fmt: skip


def grid_format(path: Path) -> str:
    """The image format `path`'s ending asks for; a ConfigError for endings we cannot write."""
    image_format = IMAGE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ConfigError(
            f"--out {path}: the name must end in one of {', '.join(IMAGE_FORMATS)} "
            "(the format is taken from it)"
        )
    return image_format


def check_writable(paths: Sequence[Path | None]) -> None:
    """Fail before any work unless a file can really be created beside each output: a
    missing or read-only folder, or one such as /proc or /sys that refuses new files even to
    root (whom permission bits do not stop)."""
    for path in paths:
        if path is None:
            continue
        path = Path(path)
        folder = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise ConfigError(f"output {path} is a folder; give a file name")
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"cannot write {path}: folder {folder}: {reason}") from None


def remove_partial_writes(path: Path) -> None:
    """Delete temp files a killed `write_atomic(path, ...)` left behind; `path` is untouched."""
    for leftover in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to `path` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide outputs from other users
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
