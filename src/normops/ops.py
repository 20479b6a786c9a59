"""The public BN/BRN ops: pick the backend, validate, then run the backend's whole op or
the composition of its kernels (always the composition when synchronized over ``comm``:
see _distributed). A call without ``comm`` first goes to the backend's plain op, where it
has one (see _interface), which takes the common case in one step and leaves the rest
to this path."""
from functools import partial

from . import _composed
from . import _distributed as distributed
from . import _validation as check
from ._interface import array_namespace
from ._registry import backend_for
from ._saved import BatchNormSaved, BatchRenormSaved


def _bridge(backend, x):
    """The backend's bridge for x (see _interface), or None."""
    bridge = getattr(backend, "host_bridge", None)
    return None if bridge is None else bridge(x)


def _plain(backend, name, *args):
    """The result of the backend's plain op ``name`` on a call's arguments, or None (the
    backend has no such op, or the arguments are not plain)."""
    plain = getattr(backend, name, None)
    return None if plain is None else plain(*args)


def _op(backend, name, sync):
    """The backend's own whole op ``name``, else (and always when synchronized) the one
    composed from its kernels."""
    if sync is not None:
        return partial(getattr(_composed, name), backend, sync=sync)
    own = getattr(backend, name, None)
    return own if callable(own) else partial(getattr(_composed, name), backend)


def batch_norm(x, gamma=None, beta=None, running_mean=None, running_var=None, *, training=True,
               momentum=0.1, eps=1e-5, axis=1, convention="pytorch", comm=None, backend=None):
    """Batch normalization over every axis but the channel axis ``axis``.

    Training normalizes with the batch mean and biased variance and, when running
    statistics are given, updates them in place:
    ``running = (1 - momentum) * running + momentum * batch``, where running_var receives
    the unbiased variance (convention="pytorch") or the biased one (convention="keras",
    whose ``decay``/``momentum`` is ``1 - momentum`` here). ``training=False``
    normalizes with the running statistics. NaN/inf in x propagate to the output.

    ``comm``: an mpi4py intracommunicator to normalize with the statistics of every
    rank's batch together (see the README's "Synchronized BN"); saved keeps it, so that
    batch_norm_backward syncs too.

    Returns ``(y, saved)``: y has x's shape and dtype; saved feeds batch_norm_backward.
    """
    if comm is None:
        result = _plain(backend_for(x, backend), "plain_batch_norm", x, gamma, beta,
                        running_mean, running_var, training, momentum, eps, axis, convention)
        if result is not None:
            return result
    with distributed.step(comm, "batch_norm") as sync:
        be = backend_for(x, backend)
        bridge = _bridge(be, x)
        if bridge is not None:
            return bridge.forward(batch_norm, x, gamma, beta, running_mean, running_var,
                                  names=("running_mean", "running_var"), training=training,
                                  momentum=momentum, eps=eps, axis=axis, convention=convention,
                                  comm=comm)
        xp = array_namespace(be, x)
        (x, gamma, beta, (running_mean, running_var), training, momentum, eps, axis,
         copies) = check.forward_args(
            xp, x, gamma, beta, (running_mean, running_var), ("running_mean", "running_var"),
            training=training, momentum=momentum, eps=eps, axis=axis, stats_required=False,
            shared_batch=sync is not None)
        convention = check.convention(convention)
        if not training:
            check.positive_stats(xp, running_var, "running_var", allow_zero=True)
        result = _op(be, "batch_norm", sync)(x, gamma, beta, running_mean, running_var,
                                             training=training, momentum=momentum, eps=eps,
                                             axis=axis, convention=convention)
    check.copy_back(copies)   # local, after the collective: into the caller's arrays
    return result


def batch_renorm(x, gamma, beta, running_mean, running_std, *, training=True, rmax=3.0,
                 dmax=5.0, momentum=0.01, eps=1e-5, axis=1, comm=None, backend=None):
    """Batch renormalization (Ioffe, 2017) with running mean ``mu`` and running standard
    deviation ``sigma`` (both required).

    Training: sigma_B = sqrt(var_B + eps), r = clip(sigma_B / sigma, 1/rmax, rmax),
    d = clip((mu_B - mu) / sigma, -dmax, dmax) from the running statistics before this
    step, y = gamma * ((x - mu_B) / sigma_B * r + d) + beta; then, in place,
    mu += momentum * (mu_B - mu) and sigma += momentum * (sigma_B - sigma).
    Eval: y = gamma * (x - mu) / sigma + beta. rmax=1, dmax=0 is batch_norm.
    ``comm``: as for batch_norm; r and d then come from the global statistics.
    """
    if comm is None:
        result = _plain(backend_for(x, backend), "plain_batch_renorm", x, gamma, beta,
                        running_mean, running_std, training, rmax, dmax, momentum, eps, axis)
        if result is not None:
            return result
    with distributed.step(comm, "batch_renorm") as sync:
        be = backend_for(x, backend)
        bridge = _bridge(be, x)
        if bridge is not None:
            return bridge.forward(batch_renorm, x, gamma, beta, running_mean, running_std,
                                  names=("running_mean", "running_std"), training=training,
                                  rmax=rmax, dmax=dmax, momentum=momentum, eps=eps, axis=axis,
                                  comm=comm)
        xp = array_namespace(be, x)
        (x, gamma, beta, (running_mean, running_std), training, momentum, eps, axis,
         copies) = check.forward_args(
            xp, x, gamma, beta, (running_mean, running_std), ("running_mean", "running_std"),
            training=training, momentum=momentum, eps=eps, axis=axis, stats_required=True,
            shared_batch=sync is not None)
        check.positive_stats(xp, running_std, "running_std", allow_zero=False)
        rmax = check.number(rmax, "rmax", low=1.0)
        dmax = check.number(dmax, "dmax", low=0.0)
        result = _op(be, "batch_renorm", sync)(x, gamma, beta, running_mean, running_std,
                                               training=training, rmax=rmax, dmax=dmax,
                                               momentum=momentum, eps=eps, axis=axis)
    check.copy_back(copies)   # local, after the collective: into the caller's arrays
    return result


def _backward_args(be, dy, x, saved, gamma, axis, saved_type, forward_name, sync):
    xp = array_namespace(be, x)
    x = check.as_input(xp, x, shared_batch=sync is not None)
    dy = check.gradient(xp, dy, x)
    saved, axis = check.saved_state(xp, saved, saved_type, forward_name, x, axis)
    if sync is not None:
        check.global_count(saved)
    gamma = check.per_channel(xp, gamma, "gamma", x.shape[axis], x.dtype, x)
    return dy, x, saved, gamma


def _backward(op, saved_type, forward_name, dy, x, saved, gamma, axis, backend):
    """The backward op ``op``, over the forward's communicator when it had one."""
    comm = saved.comm if isinstance(saved, (BatchNormSaved, BatchRenormSaved)) else None
    if comm is None:   # (no with-block: a backward runs in every training step)
        return _backward_on(None, op, saved_type, forward_name, dy, x, saved, gamma, axis, backend)
    with distributed.Step(comm, op.__name__) as sync:
        return _backward_on(sync, op, saved_type, forward_name, dy, x, saved, gamma, axis, backend)


def _backward_on(sync, op, saved_type, forward_name, dy, x, saved, gamma, axis, backend):
    be = backend_for(x, backend)
    if sync is None:
        result = _plain(be, f"plain_{op.__name__}", dy, x, saved, gamma, axis)
        if result is not None:
            return result
    bridge = _bridge(be, x)
    if bridge is not None:
        return bridge.backward(op, dy, x, saved, gamma, axis=axis)
    dy, x, saved, gamma = _backward_args(be, dy, x, saved, gamma, axis, saved_type,
                                         forward_name, sync)
    return _op(be, op.__name__, sync)(dy, x, saved, gamma)


def batch_norm_backward(dy, x, saved, gamma=None, *, axis=None, backend=None):
    """Gradients of batch_norm: ``(dx, dgamma, dbeta)`` for the upstream gradient ``dy``.

    Pass the forward's ``x``, ``saved`` and ``gamma``. ``axis`` defaults to the forward's.
    Eval mode (saved.training False): dx = dy * gamma * invstd. dgamma and dbeta are
    always returned (for gamma=None/beta=None they are the gradients at gamma=1/beta=0).
    After a synchronized forward (``comm=``) the backward is synchronized over the same
    communicator: dx is this rank's part, dgamma and dbeta are sums over every rank's batch.
    """
    return _backward(batch_norm_backward, BatchNormSaved, "batch_norm", dy, x, saved, gamma,
                     axis, backend)


def batch_renorm_backward(dy, x, saved, gamma, *, axis=None, backend=None):
    """Gradients of batch_renorm, with r and d held constant: ``(dx, dgamma, dbeta)``.
    Synchronized as batch_norm_backward is."""
    return _backward(batch_renorm_backward, BatchRenormSaved, "batch_renorm", dy, x, saved,
                     gamma, axis, backend)
