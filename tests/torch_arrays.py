"""NumPy arrays and CPU tensors on the same memory, bfloat16 included: through int16 views,
as NumPy knows no bfloat16 to torch (ml_dtypes' is NumPy's bfloat16)."""
import numpy as np


def to_torch(a):
    """A torch tensor sharing a's memory."""
    import torch
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def to_numpy(t):
    """A NumPy array on a CPU tensor's memory (detached)."""
    import torch
    t = t.detach()
    if t.dtype == torch.bfloat16:
        from normops._halves import bfloat16
        return t.view(torch.int16).numpy().view(bfloat16())
    return t.numpy()
