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


def _plain(backend, name, *args, **epilogue):
    """The result of the backend's plain op ``name`` on a call's arguments, or None (the
    backend has no such op, or the arguments are not plain, or they ask for the fused
    ``epilogue`` of a backend whose ops do not take it)."""
    plain = getattr(backend, name, None)
    if plain is None or (epilogue and not getattr(backend, "epilogue", False)):
        return None
    return plain(*args, **epilogue)


def _op(backend, name, sync, epilogue=False):
    """The backend's own whole op ``name``, else (and always when synchronized, and for
    a fused ``epilogue`` unless the backend's ops take one: see _interface) the one
    composed from its kernels."""
    if sync is not None:
        return partial(getattr(_composed, name), backend, sync=sync)
    own = getattr(backend, name, None)
    if callable(own) and (not epilogue or getattr(backend, "epilogue", False)):
        return own
    return partial(getattr(_composed, name), backend)


def _epilogue(residual, activation):
    """The fused epilogue's keyword arguments for a backend's op: none without one, so
    that ops written before it keep working."""
    if residual is None and activation is None:
        return {}
    return {"residual": residual, "activation": activation}


def batch_norm(x, gamma=None, beta=None, running_mean=None, running_var=None, *, training=True,
               momentum=0.1, eps=1e-5, axis=1, convention="pytorch", residual=None,
               activation=None, comm=None, backend=None):
    """Batch normalization over every axis but the channel axis ``axis``.

    Training normalizes with the batch mean and biased variance and, when running
    statistics are given, updates them in place:
    ``running = (1 - momentum) * running + momentum * batch``, where running_var receives
    the unbiased variance (convention="pytorch") or the biased one (convention="keras",
    whose ``decay``/``momentum`` is ``1 - momentum`` here). ``training=False``
    normalizes with the running statistics. NaN/inf in x propagate to the output.

    ``residual`` (z, of x's shape, dtype and library) and ``activation`` (None or
    "relu") fuse the epilogue of a residual block: y = relu(BN(x) + z) in the same pass
    over memory. The sum is BN(x) rounded to x's dtype plus z, rounded once; relu(v) is
    0 where v < 0, else v (-0.0 and NaN stay). The backward then needs ``y`` and, with a
    residual, also returns dz (see batch_norm_backward).

    ``comm``: an mpi4py intracommunicator to normalize with the statistics of every
    rank's batch together (see the README's "Synchronized BN"); saved keeps it, so that
    batch_norm_backward syncs too.

    Returns ``(y, saved)``: y has x's shape and dtype; saved feeds batch_norm_backward.
    """
    if comm is None:
        result = _plain(backend_for(x, backend), "plain_batch_norm", x, gamma, beta,
                        running_mean, running_var, training, momentum, eps, axis, convention,
                        **_epilogue(residual, activation))
        if result is not None:
            return result
    with distributed.step(comm, "batch_norm") as sync:
        be = backend_for(x, backend)
        bridge = _bridge(be, x)
        if bridge is not None:
            return bridge.forward(batch_norm, x, gamma, beta, running_mean, running_var,
                                  names=("running_mean", "running_var"), training=training,
                                  momentum=momentum, eps=eps, axis=axis, convention=convention,
                                  residual=residual, activation=activation, comm=comm)
        xp = array_namespace(be, x)
        (x, gamma, beta, (running_mean, running_var), training, momentum, eps, axis,
         copies, residual) = check.forward_args(
            xp, x, gamma, beta, (running_mean, running_var), ("running_mean", "running_var"),
            training=training, momentum=momentum, eps=eps, axis=axis, stats_required=False,
            shared_batch=sync is not None, residual=residual)
        convention = check.convention(convention)
        epilogue = _epilogue(residual, check.activation(activation))
        if not training:
            check.positive_stats(xp, running_var, "running_var", allow_zero=True)
        result = _op(be, "batch_norm", sync, epilogue)(
            x, gamma, beta, running_mean, running_var, training=training, momentum=momentum,
            eps=eps, axis=axis, convention=convention, **epilogue)
    check.copy_back(copies)   # local, after the collective: into the caller's arrays
    return result


def batch_renorm(x, gamma, beta, running_mean, running_std, *, training=True, rmax=3.0,
                 dmax=5.0, momentum=0.01, eps=1e-5, axis=1, residual=None, activation=None,
                 comm=None, backend=None):
    """Batch renormalization (Ioffe, 2017) with running mean ``mu`` and running standard
    deviation ``sigma`` (both required).

    Training: sigma_B = sqrt(var_B + eps), r = clip(sigma_B / sigma, 1/rmax, rmax),
    d = clip((mu_B - mu) / sigma, -dmax, dmax) from the running statistics before this
    step, y = gamma * ((x - mu_B) / sigma_B * r + d) + beta; then, in place,
    mu += momentum * (mu_B - mu) and sigma += momentum * (sigma_B - sigma).
    Eval: y = gamma * (x - mu) / sigma + beta. rmax=1, dmax=0 is batch_norm.
    ``comm``: as for batch_norm; r and d then come from the global statistics.
    ``residual`` and ``activation``: the fused epilogue, as for batch_norm.
    """
    if comm is None:
        result = _plain(backend_for(x, backend), "plain_batch_renorm", x, gamma, beta,
                        running_mean, running_std, training, rmax, dmax, momentum, eps, axis,
                        **_epilogue(residual, activation))
        if result is not None:
            return result
    with distributed.step(comm, "batch_renorm") as sync:
        be = backend_for(x, backend)
        bridge = _bridge(be, x)
        if bridge is not None:
            return bridge.forward(batch_renorm, x, gamma, beta, running_mean, running_std,
                                  names=("running_mean", "running_std"), training=training,
                                  rmax=rmax, dmax=dmax, momentum=momentum, eps=eps, axis=axis,
                                  residual=residual, activation=activation, comm=comm)
        xp = array_namespace(be, x)
        (x, gamma, beta, (running_mean, running_std), training, momentum, eps, axis,
         copies, residual) = check.forward_args(
            xp, x, gamma, beta, (running_mean, running_std), ("running_mean", "running_std"),
            training=training, momentum=momentum, eps=eps, axis=axis, stats_required=True,
            shared_batch=sync is not None, residual=residual)
        epilogue = _epilogue(residual, check.activation(activation))
        check.positive_stats(xp, running_std, "running_std", allow_zero=False)
        rmax = check.number(rmax, "rmax", low=1.0)
        dmax = check.number(dmax, "dmax", low=0.0)
        result = _op(be, "batch_renorm", sync, epilogue)(
            x, gamma, beta, running_mean, running_std, training=training, rmax=rmax, dmax=dmax,
            momentum=momentum, eps=eps, axis=axis, **epilogue)
    check.copy_back(copies)   # local, after the collective: into the caller's arrays
    return result


def _backward_args(be, dy, x, saved, gamma, axis, y, saved_type, forward_name, sync):
    xp = array_namespace(be, x)
    x = check.as_input(xp, x, shared_batch=sync is not None)
    dy = check.gradient(xp, dy, x)
    saved, axis = check.saved_state(xp, saved, saved_type, forward_name, x, axis)
    y = check.forward_output(xp, y, x, saved)
    if sync is not None:
        check.global_count(saved)
    gamma = check.per_channel(xp, gamma, "gamma", x.shape[axis], x.dtype, x)
    return dy, x, saved, gamma, y


def _backward(op, saved_type, forward_name, dy, x, saved, gamma, axis, y, backend):
    """The backward op ``op``, over the forward's communicator when it had one."""
    comm = saved.comm if isinstance(saved, (BatchNormSaved, BatchRenormSaved)) else None
    if comm is None:   # (no with-block: a backward runs in every training step)
        return _backward_on(None, op, saved_type, forward_name, dy, x, saved, gamma, axis, y,
                            backend)
    with distributed.Step(comm, op.__name__) as sync:
        return _backward_on(sync, op, saved_type, forward_name, dy, x, saved, gamma, axis, y,
                            backend)


def _fused(saved, y):
    """The plain backward's epilogue argument: none for a call that gives no y after a
    forward (``saved``, not checked yet) without a fused epilogue."""
    if y is None and getattr(saved, "activation", None) is None \
            and getattr(saved, "residual", False) is False:
        return {}
    return {"y": y}


def _backward_on(sync, op, saved_type, forward_name, dy, x, saved, gamma, axis, y, backend):
    be = backend_for(x, backend)
    if sync is None:
        result = _plain(be, f"plain_{op.__name__}", dy, x, saved, gamma, axis, **_fused(saved, y))
        if result is not None:
            return result
    bridge = _bridge(be, x)
    if bridge is not None:
        return bridge.backward(op, dy, x, saved, gamma, axis=axis, y=y)
    dy, x, saved, gamma, y = _backward_args(be, dy, x, saved, gamma, axis, y, saved_type,
                                            forward_name, sync)
    fused = saved.activation is not None or saved.residual
    return _op(be, op.__name__, sync, fused)(dy, x, saved, gamma, **({"y": y} if fused else {}))


def batch_norm_backward(dy, x, saved, gamma=None, *, y=None, axis=None, backend=None):
    """Gradients of batch_norm: ``(dx, dgamma, dbeta)`` for the upstream gradient ``dy``,
    and ``(dx, dgamma, dbeta, dz)`` after a forward with a residual z.

    Pass the forward's ``x``, ``saved`` and ``gamma``. ``axis`` defaults to the forward's.
    Eval mode (saved.training False): dx = dy * gamma * invstd. dgamma and dbeta are
    always returned (for gamma=None/beta=None they are the gradients at gamma=1/beta=0).
    After a synchronized forward (``comm=``) the backward is synchronized over the same
    communicator: dx is this rank's part, dgamma and dbeta are sums over every rank's batch.

    After a forward with activation="relu", pass its output ``y`` (required): dy is
    masked to 0 where y <= 0 (relu's derivative at 0 is 0, as in PyTorch; where y is NaN
    dy passes, as in PyTorch, so the NaN is not hidden). Keeping y costs no memory
    beyond what the next layer usually keeps anyway; no mask is stored. dz is the
    masked dy (dy itself, copied, without an activation).
    """
    return _backward(batch_norm_backward, BatchNormSaved, "batch_norm", dy, x, saved, gamma,
                     axis, y, backend)


def batch_renorm_backward(dy, x, saved, gamma, *, y=None, axis=None, backend=None):
    """Gradients of batch_renorm, with r and d held constant: ``(dx, dgamma, dbeta)``, or
    with dz after a forward with a residual. ``y``: as for batch_norm_backward.
    Synchronized as batch_norm_backward is."""
    return _backward(batch_renorm_backward, BatchRenormSaved, "batch_renorm", dy, x, saved,
                     gamma, axis, y, backend)
