"""The public BN/BRN ops: pick the backend, validate, then run the backend's whole op or
the composition of its kernels (always the composition when synchronized over ``comm``:
see _distributed). A call without ``comm`` first goes to the backend's plain op, where it
has one (see _interface), which takes the common case in one step and leaves the rest
to this path."""
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

from . import _composed
from . import _distributed as distributed
from . import _validation as check
from ._interface import array_namespace
from ._registry import backend_for
from ._saved import BatchNormSaved, BatchRenormSaved
from ._typing import Array, ArrayLike, Comm

# what a forward op hands to its backward op
_Saved = BatchNormSaved | BatchRenormSaved
# A backend is any object with the kernels of _interface (the registry checks them); the
# helpers below reach its optional parts through getattr, so they type it as an object.


def _bridge(backend: object, x: Array) -> Any:
    """The backend's bridge for x (see _interface), or None."""
    bridge = getattr(backend, "host_bridge", None)
    return None if bridge is None else bridge(x)


def _plain(backend: object, name: str, *args: Any, **epilogue: Any) -> Any:
    """The result of the backend's plain op ``name`` on a call's arguments, or None (the
    backend has no such op, or the arguments are not plain, or they ask for the fused
    ``epilogue`` of a backend whose ops do not take it)."""
    plain = getattr(backend, name, None)
    if plain is None or (epilogue and not getattr(backend, "epilogue", False)):
        return None
    return plain(*args, **epilogue)


def _op(backend: object, name: str, sync: distributed.Step | None,
        epilogue: dict[str, Any] | bool = False) -> Callable[..., Any]:
    """The backend's own whole op ``name``, else (and always when synchronized, and for
    a fused ``epilogue`` unless the backend's ops take one: see _interface) the one
    composed from its kernels."""
    if sync is not None:
        return partial(getattr(_composed, name), backend, sync=sync)
    own: Callable[..., Any] | None = getattr(backend, name, None)
    if callable(own) and (not epilogue or getattr(backend, "epilogue", False)):
        return own
    return partial(getattr(_composed, name), backend)


def _epilogue(residual: ArrayLike | None, activation: str | None) -> dict[str, Any]:
    """The fused epilogue's keyword arguments for a backend's op: none without one, so
    that ops written before it keep working."""
    if residual is None and activation is None:
        return {}
    return {"residual": residual, "activation": activation}


def batch_norm(x: ArrayLike, gamma: ArrayLike | None = None, beta: ArrayLike | None = None,
               running_mean: ArrayLike | None = None, running_var: ArrayLike | None = None, *,
               training: bool = True, momentum: float = 0.1, eps: float = 1e-5, axis: int = 1,
               convention: Literal["pytorch", "keras"] = "pytorch",
               residual: ArrayLike | None = None, activation: Literal["relu"] | None = None,
               comm: Comm | None = None, backend: str | None = None,
               ) -> tuple[Array, BatchNormSaved]:
    """Batch normalization over every axis but the channel axis ``axis``.

    Training normalizes with the batch mean and biased variance and, when running
    statistics are given, updates them in place. ``training=False`` normalizes with the
    running statistics. NaN/inf in x propagate to the output.

    Parameters
    ----------
    x : Array or nested list of float
        The input, with at least 2 dimensions: float32, float64, float16 or bfloat16.
        Lists are taken as NumPy arrays.
    gamma, beta : Array or list of float, optional
        The scale and shift, shape (C,) for C channels on ``axis``; None means 1 and 0.
    running_mean, running_var : Array, optional
        The running statistics, shape (C,), both or neither. Training updates them in
        place (they must then be writeable arrays of x's library); ``training=False``
        requires them and only reads them (lists are taken then).
    training : bool, default True
        Normalize with the batch statistics (and update the running ones), else with
        the running statistics.
    momentum : float, default 0.1
        The weight of this batch in the running statistics, in [0, 1]:
        ``running = (1 - momentum) * running + momentum * batch``.
    eps : float, default 1e-5
        Added to the variance before its square root, > 0 and finite.
    axis : int, default 1
        The channel axis; negative values count from the end.
    convention : {"pytorch", "keras"}, default "pytorch"
        The variance running_var receives: the unbiased one ("pytorch") or the biased
        one ("keras", whose ``decay``/``momentum`` is ``1 - momentum`` here).
    residual : Array, optional
        The residual z, of x's shape, dtype and library, which the fused epilogue adds:
        y = act(BN(x) + z).
    activation : {None, "relu"}, optional
        The fused epilogue's activation: y = relu(BN(x) + z), or relu(BN(x)) without a
        residual.
    comm : mpi4py.MPI.Comm, optional
        An mpi4py intracommunicator to normalize with the statistics of every rank's
        batch together (see the documentation's "Synchronized BN over MPI" page).
        ``saved`` keeps it, so that batch_norm_backward syncs too.
    backend : str, optional
        The name of the backend to run on; default: the one selected for x's library
        (see :func:`use_backend`).

    Returns
    -------
    y : Array
        The output, of x's shape, dtype and library.
    saved : BatchNormSaved
        What batch_norm_backward needs of this forward.

    Raises
    ------
    TypeError
        If an argument has the wrong type or dtype: x not a float array, a per-channel
        array of another dtype or library than x's, a running statistic to update that
        is not an array, a bool or non-number for ``momentum`` or ``eps``, a flag that is
        not a bool; or if the backend cannot take x's library.
    ValueError
        If a value is out of range or shapes disagree: x with fewer than 2 dimensions,
        no values, or (training) one value per channel; a per-channel array not of shape
        (C,); ``axis`` out of range; ``momentum`` outside [0, 1]; ``eps`` not positive
        and finite; an unknown ``convention``, ``activation`` or backend name; a
        residual not of x's shape; only one running statistic, or none with
        ``training=False``; a negative running_var with ``training=False``; running
        statistics to update that are read-only or share memory with each other or the
        inputs.

    Notes
    -----
    Running statistics: ``running = (1 - momentum) * running + momentum * batch``, where
    running_var receives the unbiased variance (convention="pytorch") or the biased one
    (convention="keras"). Per-channel arrays have x's dtype, or float32 for float16 and
    bfloat16 x (PyTorch's mixed precision); lists get that dtype.

    The fused epilogue of a residual block, y = relu(BN(x) + z), runs in the same pass
    over memory. The sum is BN(x) rounded to x's dtype plus z, rounded once; relu(v) is
    0 where v < 0, else v (-0.0 and NaN stay). The backward then needs ``y`` and, with a
    residual, also returns dz (see :func:`batch_norm_backward`).

    With ``comm``, training normalizes with the mean and variance of the union of every
    rank's batch, and a fault on any rank raises on every rank.
    """
    result: tuple[Array, BatchNormSaved] | None
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
            result = bridge.forward(batch_norm, x, gamma, beta, running_mean, running_var,
                                    names=("running_mean", "running_var"), training=training,
                                    momentum=momentum, eps=eps, axis=axis,
                                    convention=convention, residual=residual,
                                    activation=activation, comm=comm)
            return result
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


def batch_renorm(x: ArrayLike, gamma: ArrayLike | None, beta: ArrayLike | None,
                 running_mean: ArrayLike, running_std: ArrayLike, *, training: bool = True,
                 rmax: float = 3.0, dmax: float = 5.0, momentum: float = 0.01,
                 eps: float = 1e-5, axis: int = 1, residual: ArrayLike | None = None,
                 activation: Literal["relu"] | None = None, comm: Comm | None = None,
                 backend: str | None = None) -> tuple[Array, BatchRenormSaved]:
    """Batch renormalization (Ioffe, 2017) with running mean and standard deviation.

    The running mean ``mu`` and running standard deviation ``sigma`` are both
    required. Training normalizes with the batch statistics, corrected by r and d
    towards the running ones, and updates the running statistics in place; eval mode
    normalizes with the running statistics.

    Parameters
    ----------
    x : Array or nested list of float
        The input, with at least 2 dimensions: float32, float64, float16 or bfloat16.
        Lists are taken as NumPy arrays.
    gamma, beta : Array or list of float or None
        The scale and shift, shape (C,) for C channels on ``axis``; None means 1 and 0.
    running_mean, running_std : Array
        The running mean mu and standard deviation sigma, shape (C,); sigma must be
        positive. Training updates them in place (they must then be writeable arrays of
        x's library); in eval mode they are only read (lists are taken then).
    training : bool, default True
        Normalize with the batch statistics corrected by r and d (and update the
        running ones), else with the running statistics.
    rmax : float, default 3.0
        The clip of r, >= 1.
    dmax : float, default 5.0
        The clip of d, >= 0.
    momentum : float, default 0.01
        The weight of this batch in the running statistics, in [0, 1].
    eps : float, default 1e-5
        Added to the batch variance before its square root, > 0 and finite.
    axis : int, default 1
        The channel axis; negative values count from the end.
    residual : Array, optional
        The residual z, of x's shape, dtype and library: the fused epilogue, as for
        :func:`batch_norm`.
    activation : {None, "relu"}, optional
        The fused epilogue's activation, as for :func:`batch_norm`.
    comm : mpi4py.MPI.Comm, optional
        An mpi4py intracommunicator, as for :func:`batch_norm`; r and d then come from
        the global statistics.
    backend : str, optional
        The name of the backend to run on; default: the one selected for x's library.

    Returns
    -------
    y : Array
        The output, of x's shape, dtype and library.
    saved : BatchRenormSaved
        What batch_renorm_backward needs of this forward.

    Raises
    ------
    TypeError
        If an argument has the wrong type or dtype, as for :func:`batch_norm`, or
        ``rmax`` or ``dmax`` is not a real number.
    ValueError
        If a value is out of range or shapes disagree, as for :func:`batch_norm`; if
        the running statistics are missing; if running_std is not positive; if
        ``rmax < 1`` or ``dmax < 0``.

    Notes
    -----
    Training: sigma_B = sqrt(var_B + eps), r = clip(sigma_B / sigma, 1/rmax, rmax),
    d = clip((mu_B - mu) / sigma, -dmax, dmax) from the running statistics before this
    step, y = gamma * ((x - mu_B) / sigma_B * r + d) + beta; then, in place,
    mu += momentum * (mu_B - mu) and sigma += momentum * (sigma_B - sigma).
    Eval: y = gamma * (x - mu) / sigma + beta. rmax=1, dmax=0 is batch_norm.
    """
    result: tuple[Array, BatchRenormSaved] | None
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
            result = bridge.forward(batch_renorm, x, gamma, beta, running_mean, running_std,
                                    names=("running_mean", "running_std"), training=training,
                                    rmax=rmax, dmax=dmax, momentum=momentum, eps=eps,
                                    axis=axis, residual=residual, activation=activation,
                                    comm=comm)
            return result
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


def _backward_args(be: object, dy: ArrayLike, x: ArrayLike, saved: object,
                   gamma: ArrayLike | None, axis: int | None, y: ArrayLike | None,
                   saved_type: type[_Saved], forward_name: str, sync: distributed.Step | None,
                   ) -> tuple[Array, Array, _Saved, Array | None, Array | None]:
    """The checked (dy, x, saved, gamma, y) of a backward call (saved: as the backend
    takes it, see _validation.saved_state)."""
    xp = array_namespace(be, x)
    x = check.as_input(xp, x, shared_batch=sync is not None)
    dy = check.gradient(xp, dy, x)
    checked: _Saved
    checked, axis = check.saved_state(xp, saved, saved_type, forward_name, x, axis)
    y = check.forward_output(xp, y, x, checked)
    if sync is not None:
        check.global_count(checked)
    gamma = check.per_channel(xp, gamma, "gamma", x.shape[axis], x.dtype, x)
    return dy, x, checked, gamma, y


def _backward(op: Callable[..., tuple[Array, ...]], saved_type: type[_Saved], forward_name: str,
              dy: ArrayLike, x: ArrayLike, saved: object, gamma: ArrayLike | None,
              axis: int | None, y: ArrayLike | None, backend: str | None) -> tuple[Array, ...]:
    """The backward op ``op``, over the forward's communicator when it had one."""
    comm = saved.comm if isinstance(saved, (BatchNormSaved, BatchRenormSaved)) else None
    if comm is None:   # (no with-block: a backward runs in every training step)
        return _backward_on(None, op, saved_type, forward_name, dy, x, saved, gamma, axis, y,
                            backend)
    with distributed.Step(comm, op.__name__) as sync:
        return _backward_on(sync, op, saved_type, forward_name, dy, x, saved, gamma, axis, y,
                            backend)


def _fused(saved: object, y: ArrayLike | None) -> dict[str, Any]:
    """The plain backward's epilogue argument: none for a call that gives no y after a
    forward (``saved``, not checked yet) without a fused epilogue."""
    if y is None and getattr(saved, "activation", None) is None \
            and getattr(saved, "residual", False) is False:
        return {}
    return {"y": y}


def _backward_on(sync: distributed.Step | None, op: Callable[..., tuple[Array, ...]],
                 saved_type: type[_Saved], forward_name: str, dy: ArrayLike, x: ArrayLike,
                 saved: object, gamma: ArrayLike | None, axis: int | None, y: ArrayLike | None,
                 backend: str | None) -> tuple[Array, ...]:
    """The backward op ``op`` on backend ``backend`` (synchronized over ``sync``'s
    communicator when it is not None)."""
    result: tuple[Array, ...] | None
    be = backend_for(x, backend)
    if sync is None:
        result = _plain(be, f"plain_{op.__name__}", dy, x, saved, gamma, axis, **_fused(saved, y))
        if result is not None:
            return result
    bridge = _bridge(be, x)
    if bridge is not None:
        result = bridge.backward(op, dy, x, saved, gamma, axis=axis, y=y)
        return result
    dy, x, saved, gamma, y = _backward_args(be, dy, x, saved, gamma, axis, y, saved_type,
                                            forward_name, sync)
    fused = saved.activation is not None or saved.residual
    result = _op(be, op.__name__, sync, fused)(dy, x, saved, gamma, **({"y": y} if fused else {}))
    return result


def batch_norm_backward(dy: ArrayLike, x: ArrayLike, saved: BatchNormSaved,
                        gamma: ArrayLike | None = None, *, y: ArrayLike | None = None,
                        axis: int | None = None, backend: str | None = None,
                        ) -> tuple[Array, ...]:
    """Gradients of batch_norm.

    ``(dx, dgamma, dbeta)`` for the upstream gradient ``dy``, and
    ``(dx, dgamma, dbeta, dz)`` after a forward with a residual z.

    Parameters
    ----------
    dy : Array or nested list of float
        The gradient of the loss with respect to y, of x's shape, dtype and library.
    x : Array or nested list of float
        The forward's input.
    saved : BatchNormSaved
        What the forward returned with y.
    gamma : Array or list of float, optional
        The forward's gamma; None (the default) for a forward without one.
    y : Array, optional
        The forward's output: required after a forward with activation="relu", whose
        gradient masks dy where y <= 0.
    axis : int, optional
        The channel axis; defaults to the forward's, and must equal it when given.
    backend : str, optional
        The name of the backend to run on; default: the one selected for x's library.

    Returns
    -------
    dx : Array
        The gradient with respect to x, of x's shape, dtype and library.
    dgamma : Array
        The gradient with respect to gamma, shape (C,).
    dbeta : Array
        The gradient with respect to beta, shape (C,).
    dz : Array
        Only after a forward with a residual: the gradient with respect to z, of x's
        shape: the masked dy (dy itself, copied, without an activation).

    Raises
    ------
    TypeError
        If ``saved`` is not the BatchNormSaved of a batch_norm forward, or an array has
        the wrong type, dtype or library (dy or y not of x's dtype, ...).
    ValueError
        If shapes disagree with the forward's (x, dy or y not of the forward's shape,
        gamma not of shape (C,)), ``axis`` differs from the forward's, or ``y`` is
        missing after a forward with activation="relu".

    Notes
    -----
    Eval mode (saved.training False): dx = dy * gamma * invstd. dgamma and dbeta are
    always returned (for gamma=None/beta=None they are the gradients at gamma=1/beta=0).

    After a synchronized forward (``comm=``) the backward is synchronized over the same
    communicator: dx is this rank's part, dgamma and dbeta are sums over every rank's
    batch.

    After a forward with activation="relu", dy is masked to 0 where y <= 0 (relu's
    derivative at 0 is 0, as in PyTorch; where y is NaN dy passes, as in PyTorch, so
    the NaN is not hidden). Keeping y costs no memory beyond what the next layer
    usually keeps anyway; no mask is stored.
    """
    return _backward(batch_norm_backward, BatchNormSaved, "batch_norm", dy, x, saved, gamma,
                     axis, y, backend)


def batch_renorm_backward(dy: ArrayLike, x: ArrayLike, saved: BatchRenormSaved,
                          gamma: ArrayLike | None, *, y: ArrayLike | None = None,
                          axis: int | None = None, backend: str | None = None,
                          ) -> tuple[Array, ...]:
    """Gradients of batch_renorm, with r and d held constant.

    ``(dx, dgamma, dbeta)`` for the upstream gradient ``dy``, and
    ``(dx, dgamma, dbeta, dz)`` after a forward with a residual z. Synchronized as
    :func:`batch_norm_backward` is.

    Parameters
    ----------
    dy : Array or nested list of float
        The gradient of the loss with respect to y, of x's shape, dtype and library.
    x : Array or nested list of float
        The forward's input.
    saved : BatchRenormSaved
        What the forward returned with y.
    gamma : Array or list of float or None
        The forward's gamma (None for a forward without one).
    y : Array, optional
        The forward's output, as for :func:`batch_norm_backward`.
    axis : int, optional
        The channel axis; defaults to the forward's, and must equal it when given.
    backend : str, optional
        The name of the backend to run on; default: the one selected for x's library.

    Returns
    -------
    dx : Array
        The gradient with respect to x, of x's shape, dtype and library.
    dgamma : Array
        The gradient with respect to gamma, shape (C,).
    dbeta : Array
        The gradient with respect to beta, shape (C,).
    dz : Array
        Only after a forward with a residual: the gradient with respect to z, as for
        :func:`batch_norm_backward`.

    Raises
    ------
    TypeError
        If ``saved`` is not the BatchRenormSaved of a batch_renorm forward, or an array
        has the wrong type, dtype or library.
    ValueError
        If shapes disagree with the forward's, ``axis`` differs from the forward's, or
        ``y`` is missing after a forward with activation="relu".
    """
    return _backward(batch_renorm_backward, BatchRenormSaved, "batch_renorm", dy, x, saved,
                     gamma, axis, y, backend)
