"""align.stack_frames: an episode's frames as one array, without a copy where they already are."""

from __future__ import annotations

import numpy as np
import pytest

from lompo_core.data.align import stack_frames


def rows(n: int) -> np.ndarray:
    """An array that owns its memory, as slices.FrameRows' blocks do."""
    return np.arange(n * 4 * 4 * 3, dtype=np.uint8).reshape(n, 4, 4, 3).copy()


def test_consecutive_rows_of_one_array_are_a_view_of_them() -> None:
    block = rows(10)
    frames = list(block[2:7])
    out = stack_frames(frames)
    assert out.base is block and out.shape == (5, 4, 4, 3)
    np.testing.assert_array_equal(out, np.stack(frames))
    one = stack_frames([block[9]])
    assert one.base is block and one.shape == (1, 4, 4, 3)


@pytest.mark.parametrize(
    "pick",
    [
        lambda b: [b[0], b[2], b[3]],  # a frame thinned away
        lambda b: [b[3], b[2], b[1]],  # reversed
        lambda b: [b[1], b[1], b[2]],  # repeated
        lambda b: [b[0], b[1], rows(3)[2]],  # another array
        lambda b: [b[0], b[1].copy()],  # a frame of its own
        lambda b: list(b.reshape(-1)[3:].reshape(-1)[: 2 * 48].reshape(2, 4, 4, 3)),  # off a row
        lambda b: [b[0].transpose(1, 0, 2), b[1].transpose(1, 0, 2)],  # rows read across
        lambda b: [b[0], b[1, :2]],  # part of a row
    ],
    ids=[
        "gap",
        "reversed",
        "repeated",
        "two arrays",
        "own frame",
        "misaligned",
        "transposed",
        "part",
    ],
)
def test_anything_else_is_copied(pick) -> None:
    block = rows(6)
    frames = pick(block)
    try:
        want = np.stack(frames)
    except ValueError:  # frames of different shapes: no array of them
        with pytest.raises(ValueError):
            stack_frames(frames)
        return
    out = stack_frames(frames)
    assert not np.shares_memory(out, block)
    np.testing.assert_array_equal(out, want)
