"""The "torch" backend: PyTorch tensors, with the results as tensors of the input's
device and dtype.

CPU tensors go through the cpu backend's C kernels without a copy: each tensor is seen
as a NumPy array on the same memory (``Tensor.numpy()``), and the outputs come back as
tensors on the memory the kernels wrote (``torch.from_numpy``). Tensors on any other
device take the array-API path (ArrayApiBackend). normops computes gradients
explicitly, so ops run under ``torch.no_grad()``: a tensor that requires grad is read
through a detached view, and no output carries an autograd graph.
"""
from .. import _arrays as arrays
from .. import _composed
from .._saved import BatchNormSaved, BatchRenormSaved
from .array_api import ArrayApiBackend

FORWARD = ("batch_norm", "batch_renorm")


class TorchBackend(ArrayApiBackend):
    device = "cpu, cuda"

    def __init__(self, cpu_kernels=True):
        """``cpu_kernels=False``: CPU tensors take the array-API path as well (the path
        every other device takes, which is how CI runs it without a GPU)."""
        import torch   # ImportError: unavailable, with the install hint
        super().__init__()
        self._torch = torch
        self._xp = arrays.compat().array_namespace(torch.empty(0))
        self._cpu_ops_found = None if cpu_kernels else False

    def namespace(self, x):
        if not isinstance(x, self._torch.Tensor):
            raise TypeError(f"the torch backend works on torch.Tensor, got a "
                            f"{type(x).__module__}.{type(x).__qualname__}")
        return self._xp

    def _cpu_ops(self):
        """The public ops, run on the cpu backend, or None when its extension cannot load
        (CPU tensors then take the array-API path too)."""
        if self._cpu_ops_found is None:
            from .. import ops
            from .._registry import BackendError, load_backend
            try:
                load_backend("cpu")
                self._cpu_ops_found = ops
            except BackendError:
                self._cpu_ops_found = False
        return self._cpu_ops_found or None

    def _run(self, name, x, args, options):
        with self._torch.no_grad():
            ops = self._cpu_ops() if x.device.type == "cpu" else None
            if ops is None:
                return getattr(_composed, name)(self, *args, **options)
            # the NumPy views pass the NumPy checks too: those give the C kernels what they
            # assume (aligned per-channel arrays, running statistics updated via a copy
            # where they are not)
            host = [_map_saved(a, _host) if _is_saved(a) else _host(a) for a in args]
            result = getattr(ops, name)(*host, backend="cpu", **options)
            if name in FORWARD:   # running statistics updated in a copy (see _host) go back
                for tensor, array in zip(args[3:5], host[3:5]):
                    if tensor is not None and array.ctypes.data != tensor.data_ptr():
                        tensor.copy_(self._torch.from_numpy(array))
        if name in FORWARD:
            y, saved = result
            return self._torch.from_numpy(y), _map_saved(saved, self._torch.from_numpy)
        return tuple(self._torch.from_numpy(a) for a in result)

    def batch_norm(self, x, *args, **options):
        return self._run("batch_norm", x, (x,) + args, options)

    def batch_renorm(self, x, *args, **options):
        return self._run("batch_renorm", x, (x,) + args, options)

    def batch_norm_backward(self, dy, x, saved, gamma):
        return self._run("batch_norm_backward", x, (dy, x, saved, gamma), {})

    def batch_renorm_backward(self, dy, x, saved, gamma):
        return self._run("batch_renorm_backward", x, (dy, x, saved, gamma), {})


def _host(tensor):
    """A CPU tensor as a NumPy array on its memory (None stays None); a view whose values
    are negated or conjugated lazily (its neg or conj bit set) as a copy of them."""
    if tensor is None:
        return None
    tensor = tensor.detach()
    if tensor.is_neg() or tensor.is_conj():
        tensor = tensor.resolve_neg().resolve_conj()
    return tensor.numpy()


def _is_saved(value):
    return isinstance(value, (BatchNormSaved, BatchRenormSaved))


def _map_saved(saved, convert):
    """``saved`` with ``convert`` applied to each of its per-channel arrays."""
    fields = dict(mean=convert(saved.mean), invstd=convert(saved.invstd), training=saved.training,
                  axis=saved.axis, shape=saved.shape)
    if isinstance(saved, BatchRenormSaved):
        r, d = saved.r, saved.d
        return BatchRenormSaved(r=None if r is None else convert(r),
                                d=None if d is None else convert(d), **fields)
    return BatchNormSaved(**fields)
