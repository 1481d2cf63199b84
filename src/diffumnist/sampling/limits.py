"""What one sampling call may ask for: images whose size the UNet takes, and no more samples
or animation frames than fit in memory. Checked before any work."""

from __future__ import annotations

import operator

from diffumnist.config import ConfigError, is_integer

MAX_SAMPLES_PER_CALL = 10_000  # 28x28 tiles per sampling call
# The animation is kept in memory as uint8; past this a request must take fewer frames.
MAX_FRAME_BYTES = 2**30


def image_size(img_wh: object) -> tuple[int, int]:
    """(width, height) checked to be two whole multiples of 28 (the UNet's 7x7 bottleneck)."""
    try:
        width, height = img_wh  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ConfigError(f"img_wh must be a (width, height) pair; got {img_wh!r}") from None
    if not (is_integer(width) and is_integer(height)):
        raise ConfigError(f"img_wh must be whole numbers; got {img_wh!r}")
    width, height = operator.index(width), operator.index(height)
    if width < 28 or height < 28 or width % 28 or height % 28:
        raise ConfigError(f"img_wh must be multiples of 28 (the UNet's 7x7 bottleneck): {img_wh}")
    return width, height


def check_memory(count: int, size: tuple[int, int], num_steps: int, frame_every: int) -> None:
    """Refuse requests whose samples or animation would not fit; before any work."""
    tiles = count * (size[0] // 28) * (size[1] // 28)  # larger images mean fewer samples
    if tiles > MAX_SAMPLES_PER_CALL:
        raise ConfigError(
            f"at most {MAX_SAMPLES_PER_CALL} samples of 28x28 per call (fewer when larger); "
            f"got {count} of {size[0]}x{size[1]}"
        )
    if not is_integer(frame_every) or frame_every < 1:
        raise ConfigError(f"frame_every must be an integer >= 1; got {frame_every!r}")
    frame_bytes = (num_steps // frame_every + 2) * tiles * 28 * 28
    if frame_bytes > MAX_FRAME_BYTES:
        raise ConfigError(
            f"the animation would take {frame_bytes / 2**30:.1f} GiB; ask for fewer "
            f"samples or a larger frame_every (at most {MAX_FRAME_BYTES / 2**30:.0f} GiB)"
        )
