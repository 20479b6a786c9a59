"""Arrays with given values in memory the cpu backend cannot use as it is."""
import numpy as np


def unaligned(values):
    """A copy of ``values`` (C order) that starts one byte into its buffer, so its items
    are not aligned to their size."""
    raw = np.zeros(values.nbytes + 1, np.uint8)[1:]
    out = raw.view(values.dtype).reshape(values.shape)
    out[...] = values
    assert not out.flags.aligned
    return out
