"""What a backend is: four per-channel kernels over a canonical (outer, C, inner) view,
and optionally whole ops that replace the composition of those kernels.

Kernel contract (every array argument is 3-D, shaped (outer, C, inner), float32 or
float64; per-channel arguments are 1-D float64 arrays of length C):

``batch_stats(x)``
    -> ``(count, mean, m2)``: ``count`` the int number of values per channel
    (outer * inner), ``mean`` and ``m2 = sum((x - mean) ** 2)`` float64 arrays of shape
    (C,), computed stably (never E[x^2] - E[x]^2 in working precision).
``scale_shift(x, a, b)``
    -> ``y = a[c] * x + b[c]``, a new (outer, C, inner) array of x's dtype.
``grad_stats(dy, x, mean)``
    -> ``(sum(dy), sum(dy * (x - mean)))``, two float64 arrays of shape (C,).
``grad_input(dy, x, p, q, s)``
    -> ``dx = p[c] * dy + q[c] * x + s[c]``, a new (outer, C, inner) array of x's dtype.

The fused epilogue of a residual block (optional): a backend whose kernels take it
says so with ``epilogue = True``. Its ``scale_shift(x, a, b, residual=None,
activation=None)`` then writes ``y = act(round(a[c] * x + b[c]) + z)`` (z of x's shape,
the sum rounded once to x's dtype; act: None, or "relu": 0 where v < 0, else v), and its
``grad_stats(dy, x, mean, y=None)`` and ``grad_input(dy, x, p, q, s, y=None)`` first
take dy through relu with the forward's output y as the mask source: 0 where y <= 0,
else dy. Its whole ops (if any) take ``residual=`` and ``activation=`` (forward) and
``y=`` (backward, which then returns dz after a residual) too. A backend without
``epilogue`` gets the same results from the composition, which applies the epilogue
with elementwise array ops around the four kernels above; its whole ops are not used
for fused calls. Optionally ``relu_mask(dy, y)`` (x-shaped arrays) gives the masked dy
that the composition keeps as dz.

A backend works on the arrays of one library, its ``xp`` attribute (the namespace the
per-channel math and the checks use; default numpy), or on several: then
``namespace(x)`` returns the namespace of x's library, or raises TypeError for an array
it cannot take. Per-channel arrays are then that library's, on x's device, in float64
(float32 on a device without float64).

A backend may also run some of its arrays through another backend before any check
(the torch backend runs CPU tensors as NumPy views on the cpu backend's ops):
``host_bridge(x)`` returns None, or an object whose ``forward(op, x, gamma, beta,
first, second, *, names, training, **options)`` and ``backward(op, dy, x, saved,
gamma, **options)`` call the public ``op`` on converted arguments with
``backend=bridge.backend`` and convert its results back.

Whole ops (optional) replace the composition of the kernels. They receive validated
arguments: the forward ops ``batch_norm`` and ``batch_renorm`` take the public
signature minus ``backend``, with ``axis`` a non-negative int, update the running
statistics in place when training and return ``(y, saved)``; the backward ops
``batch_norm_backward`` and ``batch_renorm_backward`` take ``(dy, x, saved, gamma)``
(the channel axis is ``saved.axis``) and return ``(dx, dgamma, dbeta)``.

Plain ops (optional; normops' cpu backend has them) take the common case of an
unsynchronized call in one step, before any check: ``plain_batch_norm(x, gamma, beta,
running_mean, running_var, training, momentum, eps, axis, convention)``,
``plain_batch_renorm(x, gamma, beta, running_mean, running_std, training, rmax, dmax,
momentum, eps, axis)`` and ``plain_batch_norm_backward`` / ``plain_batch_renorm_backward``
``(dy, x, saved, gamma, axis)`` get the public op's arguments unchecked and return None
unless they are plain: arguments every check of _validation passes as they are (it
would raise nothing and return them unchanged). Then they return the op's result, as
the whole op would on the checked arguments; a None sends the call down the general
path, which checks and raises.

Synchronized calls (``comm=``) always run the composition of the four kernels, which
meets the other ranks between ``batch_stats`` and ``scale_shift`` (and between
``grad_stats`` and ``grad_input``): every backend gets them, and whole ops never see a
communicator. A rank's part of a synchronized batch may be empty; the composition then
calls no kernel on it.
"""
import numpy

KERNELS = ("batch_stats", "scale_shift", "grad_stats", "grad_input")


def missing_kernels(backend):
    """Names of the required kernels that ``backend`` (an instance or a class) lacks."""
    return [name for name in KERNELS if not callable(getattr(backend, name, None))]


def array_namespace(backend, x=None):
    """The array namespace for the per-channel math and validation of an op on ``x``:
    ``backend.namespace(x)`` for a backend that serves several array libraries, else
    ``backend.xp`` (default: numpy)."""
    resolve = getattr(backend, "namespace", None)
    if resolve is not None and x is not None:
        return resolve(x)
    return getattr(backend, "xp", numpy)


def device_of(backend):
    """The kind of device the backend's arrays live on (default: "cpu")."""
    return getattr(backend, "device", "cpu")
