"""The "torch" backend: PyTorch tensors, with the results as tensors of the input's
device and dtype.

CPU tensors go through the cpu backend's C kernels without a copy (``host_bridge``):
each tensor is seen as a NumPy array on the same memory (``Tensor.numpy()``), the op
runs on those as it runs on NumPy arrays (the same checks, once), and the outputs come
back as tensors on the memory the kernels wrote (``torch.from_numpy``). Tensors on any
other device take the array-API path (ArrayApiBackend, under ``torch.no_grad()``).
normops computes gradients explicitly: a tensor that requires grad is read through a
detached view, and no output carries an autograd graph.

bfloat16 tensors cross the bridge as well, without a copy: NumPy has no bfloat16 of
its own (nor DLPack a way to pass one to it), so the tensor's memory is viewed as
int16 and that array reinterpreted as ml_dtypes' bfloat16, and results go back the
same way (ml_dtypes is needed then: ``pip install "normops[bf16]"``).
"""
import dataclasses

import numpy

from .. import _arrays as arrays
from .. import _halves as halves
from .. import _validation as check
from .._saved import BatchNormSaved, BatchRenormSaved
from .array_api import ArrayApiBackend


class TorchBackend(ArrayApiBackend):
    device = "cpu, cuda"

    def __init__(self, cpu_kernels=True):
        """``cpu_kernels=False``: CPU tensors take the array-API path as well (the path
        every other device takes, which is how CI runs it without a GPU)."""
        import torch   # ImportError: unavailable, with the install hint
        super().__init__()
        self._torch = torch
        self._xp = arrays.compat().array_namespace(torch.empty(0))
        self._bridge = None if cpu_kernels else False

    def namespace(self, x):
        if not isinstance(x, self._torch.Tensor):
            raise TypeError(f"the torch backend works on torch.Tensor, got a "
                            f"{type(x).__module__}.{type(x).__qualname__}")
        return self._xp

    def host_bridge(self, x):
        """For a CPU tensor x: how the op runs on the cpu backend (CpuTensors); None for
        a tensor elsewhere, or when the cpu backend's extension cannot load."""
        if not (isinstance(x, self._torch.Tensor) and x.is_cpu):
            return None
        if self._bridge is None:
            from .._registry import BackendError, load_backend
            try:
                load_backend("cpu")
                self._bridge = CpuTensors(self._torch, self._xp)
            except BackendError:
                self._bridge = False
        return self._bridge or None


class CpuTensors:
    """Runs an op on CPU tensors as the same public op on NumPy views of them, on the
    cpu backend, and gives its results back as tensors on the same memory. Only what
    NumPy's checks cannot see is checked here: arrays of another library, tensors on
    another device or of a form without plain values, and running statistics that are
    not tensors."""

    backend = "cpu"

    def __init__(self, torch, xp):
        self._torch, self._xp = torch, xp

    def forward(self, op, x, gamma, beta, first, second, *, names, training, **options):
        # NumPy's checks refuse any other training flag
        written = isinstance(training, (bool, numpy.bool_)) and bool(training)
        copies, resolved = [], []   # see _view
        written_copies = copies if written else None
        args = (self._view(x, "x", x, None, resolved), self._view(gamma, "gamma", x, None, resolved),
                self._view(beta, "beta", x, None, resolved),
                self._view(first, names[0], x, written_copies, resolved),
                self._view(second, names[1], x, written_copies, resolved))
        written = written and first is not None and second is not None
        if written:
            self._writable(first, second, names, x, gamma, beta, resolved)
        options["residual"] = self._view(options.get("residual"), "residual", x)
        y, saved = op(*args, training=training, backend=self.backend, **options)
        from_numpy = self._tensor
        for tensor, array in copies:   # running statistics updated in a copy
            tensor.copy_(from_numpy(array))
        if written:
            # those written through NumPy views: tell autograd, as an in-place op would
            through_views = tuple(t for t in (first, second) if all(t is not c for c, _ in copies))
            self._torch.autograd.graph.increment_version(through_views)
        return from_numpy(y), _map_saved(saved, lambda a, _: from_numpy(a))

    def backward(self, op, dy, x, saved, gamma, *, y=None, **options):
        if isinstance(saved, (BatchNormSaved, BatchRenormSaved)):
            saved = _map_saved(saved, lambda t, field: self._saved_view(t, field, x))
        result = op(self._view(dy, "dy", x), self._view(x, "x", x), saved,
                    self._view(gamma, "gamma", x), y=self._view(y, "y", x), backend=self.backend,
                    **options)
        return tuple(self._tensor(a) for a in result)

    def _tensor(self, array):
        """A tensor on the memory of a NumPy array the op returned (bfloat16 through an
        int16 view: torch.from_numpy does not know ml_dtypes' dtype)."""
        if array.dtype.name == "bfloat16":
            return self._torch.from_numpy(array.view(numpy.int16)).view(self._torch.bfloat16)
        return self._torch.from_numpy(array)

    def _writable(self, first, second, names, x, gamma, beta, resolved):
        """What NumPy's checks cannot see of the running statistics to update: an
        inference tensor outside inference mode, and (when a view had to be a copy of a
        lazily negated tensor) memory shared with another argument."""
        for tensor, name in ((first, names[0]), (second, names[1])):
            if isinstance(tensor, self._torch.Tensor) and not arrays.writeable(tensor):
                check.read_only(tensor, name, self._xp)
        if resolved:
            check.no_overlap(self._xp, zip(names, (first, second)),
                             (("x", x), ("gamma", gamma), ("beta", beta)))

    def _view(self, value, name, x, copies=None, resolved=None):
        """A tensor as a NumPy array on its memory; None and values that are no
        library's arrays (lists) as they are, for NumPy's checks to convert. ``copies``:
        the op updates this running statistic, so it must be a tensor, and a view made
        as a copy (of a lazily negated tensor) is listed there to be written back."""
        if isinstance(value, self._torch.Tensor):
            try:   # one call into torch where all is well (each costs 1-3 us here)
                return value.numpy()
            except (RuntimeError, TypeError):   # it says why below
                return self._view_of_odd_tensor(value, name, x, copies, resolved)
        if value is not None:
            check.not_foreign(self._xp, value, name)
            if copies is not None:
                check.not_updatable(value, name, self._xp)
        return value

    def _view_of_odd_tensor(self, value, name, x, copies, resolved):
        """_view of a tensor Tensor.numpy() refused: on another device or of a form
        without plain values (refused here), of a dtype NumPy lacks (refused), that
        requires grad (a detached view) or whose values are negated lazily (a copy)."""
        check.supported(value, name)
        check.same_device(value, name, x)
        if value.requires_grad:
            value = value.detach()
        if value.is_conj():   # a complex tensor, which NumPy's checks then refuse
            value = value.resolve_conj()
        if value.is_neg():   # x.conj().imag of a complex tensor
            array = _numpy(value.resolve_neg(), name, x)
            if copies is not None:
                copies.append((value, array))
            if resolved is not None:
                resolved.append(name)
            return array
        return _numpy(value, name, x)

    def _saved_view(self, value, field, x):
        name = f"saved.{field}"
        if value is None or isinstance(value, self._torch.Tensor):
            return self._view(value, name, x)
        return check.not_saved_array(value, name, self._xp)


def _numpy(tensor, name, x):
    try:
        return tensor.numpy()
    except RuntimeError as exc:   # nothing known reaches here; said in normops's words
        raise TypeError(f"{name} cannot be read as a NumPy array ({exc})") from None
    except TypeError:   # a dtype NumPy lacks (bfloat16, ...)
        if name.startswith("saved.") and tensor.is_floating_point():
            return tensor.double().numpy()   # saved fields take any float, as float64
        if arrays.dtype_name(tensor.dtype) == "bfloat16":   # same memory (see the docstring)
            import torch   # (imported already: the tensor is one)
            return tensor.view(torch.int16).numpy().view(halves.bfloat16())
        dtype = arrays.dtype_name(tensor.dtype)
        if name in ("x", "dy"):
            raise TypeError(f"{name} must have dtype {check.INPUT_DTYPES}, got {dtype}") from None
        raise TypeError(f"{name} has dtype {dtype} but x has dtype "
                        f"{arrays.dtype_name(x.dtype)}") from None


def _map_saved(saved, convert):
    """``saved`` with ``convert(array, field)`` applied to each of its per-channel arrays."""
    fields = dict(mean=convert(saved.mean, "mean"), invstd=convert(saved.invstd, "invstd"))
    if isinstance(saved, BatchRenormSaved):
        fields.update(r=convert(saved.r, "r") if saved.r is not None else None,
                      d=convert(saved.d, "d") if saved.d is not None else None)
    return dataclasses.replace(saved, **fields)
