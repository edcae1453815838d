"""The one head label (core/heads.py)."""

import numpy as np

from successor_heads.core.heads import flat_head_label, head_label


def test_head_label():
    assert head_label(12, 0) == "L12H0"
    assert head_label(np.int64(3), np.int32(7)) == "L3H7"
    assert flat_head_label(np.int64(2 * 16 + 5), 16) == "L2H5"
