"""The fused epilogue, y = relu(BN(x) + z), against PyTorch: ``torch.relu(F.batch_norm(x,
...) + z)`` with autograd (x, z, weight and bias requiring grad) gives the expected y,
dx, dz, dgamma, dbeta and running statistics. Covered: NC, NCHW, NCDHW and channels-last
(a NHWC NumPy array with axis=-1, seen by torch as a channels_last NCHW tensor on the
same memory; handed as that tensor to normops on the torch paths), float32, float64 and
the halves (float16/bfloat16 x with float32 weights, PyTorch's mixed precision, and with
weights of x's dtype), with and without a residual and relu (neither: the plain op,
which test_torch_crosscheck.py and test_half_torch.py cover), BN and BRN, training and
eval, on every backend that takes NumPy arrays and on torch tensors: "torch" (picked by
the tensors themselves: the cpu backend's C kernels through its CPU bridge) and
"fused-torch-array-api" (TorchBackend(cpu_kernels=False): the array-API path every
other device takes). Also: layers over training steps, and the errors.

Gradients near the kink: relu's derivative is 0 where y <= 0, so a y that rounds to 0
in one implementation and to 1e-8 in the other would flip the mask between them. The
expected gradients are therefore PyTorch's through ``aten.threshold_backward(dy, y, 0)``
(what torch.relu's backward runs) with normops' y as the mask source, fed to autograd
of F.batch_norm(x) + z; test_fed_mask_is_torchs_relu_backward checks that this is
PyTorch's own relu backward when fed PyTorch's y. Where BN(x) + z is exactly 0 by
construction (test_exact_zero_sum_*), PyTorch's own autograd is compared as it is.
Two PyTorch quirks the harness steers clear of: given a bfloat16 x that is channels_last
while the gradient is not, or that is in neither C nor channels_last order, PyTorch's
CPU BN backward returns dgamma and dbeta rounded to bfloat16 (though float32); so the
gradients fed to it share x's memory format, and every input is in C order.

BRN has no PyTorch op: it is compared with rmax=1, dmax=0 (where it is BN: r = 1, d = 0)
against F.batch_norm, and with clips in force against a torch autograd transcription
of the formula with r and d detached (as test_torch_crosscheck.py).

The fused op against the unfused composition: for float32/float64 x on every
non-reference backend, y must be ``np.where(v < 0, 0, v)``, v = y_plain + z in x's
dtype, bit for bit (the documented convention), z = -y_plain must give exact zeros, and
a zero BN(x) plus z = -0.0 keeps its sign (-0.0 stays, as torch.relu keeps it).

Tolerances: normops.testing.assert_close with its dtype-keyed tolerances (TOL: float32
1e-5, float64 1e-10, the halves 4 eps) of each output's dtype, times the size of the
terms the output is made of (as test_half_torch.py measures them; |z| added for y).
"""
import numpy as np
import pytest

import half_inputs
import normops
from normops import testing
from normops._backends.torch import TorchBackend
from optional_torch import import_torch
from torch_arrays import to_numpy, to_torch

torch = import_torch("the fused-epilogue cross-check")
import torch.nn.functional as F  # noqa: E402

ml_dtypes = pytest.importorskip("ml_dtypes")

F16, BF16 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
TORCH_DTYPE = {F16: torch.float16, BF16: torch.bfloat16, F32: torch.float32, F64: torch.float64}
HALF = (F16, BF16)
MOMENTUM, EPS = 0.1, 1e-5

# the backends that take NumPy arrays, and the two paths of torch tensors
NUMPY_PATHS = ["cpu", "reference", "array-api"]
TORCH_ARRAY_API = "fused-torch-array-api"
TORCH_PATHS = ["torch", TORCH_ARRAY_API]
PATHS = NUMPY_PATHS + TORCH_PATHS
NON_REFERENCE = ["cpu", "array-api"] + TORCH_PATHS

# (name, normops shape, channel axis, permutation taking the normops array to torch's NC...)
LAYOUTS = [
    ("NC", (32, 6), 1, (0, 1)),
    ("NCHW", (4, 6, 5, 3), 1, (0, 1, 2, 3)),
    ("NHWC", (4, 5, 3, 6), -1, (0, 3, 1, 2)),  # torch: a channels_last NCHW tensor
    ("NCDHW", (2, 3, 4, 3, 5), 1, (0, 1, 2, 3, 4)),
]
LAYOUT = {layout[0]: layout for layout in LAYOUTS}
# (x dtype, weights dtype): PyTorch's mixed precision for the halves
DTYPES = [(F32, F32), (F64, F64), (F16, F32), (BF16, F32)]
HALF_WEIGHTS = [(F16, F16), (BF16, BF16)]
# (residual, relu)
EPILOGUES = [(True, True), (False, True), (True, False)]   # (False, False): the plain op


def dtype_id(pair):
    x, params = pair
    return x.name if x == params or x not in HALF else f"{x.name}-w{params.name}"


def epilogue_id(epilogue):
    residual, relu = epilogue
    return "+".join(["z"] * residual + ["relu"] * relu) or "plain"


@pytest.fixture(scope="module", autouse=True)
def torch_array_api_backend():
    """The array-API path that CUDA tensors take, here on CPU tensors."""
    normops.register_backend(TORCH_ARRAY_API, TorchBackend(cpu_kernels=False), replace=True)
    yield
    normops.unregister_backend(TORCH_ARRAY_API)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """PyTorch on one thread for these small tensors: its thread pool and the C
    kernels' contend for the cores (a 100-element F.batch_norm took 20-50 ms on two
    busy cores, 10 us on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- arrays ------------------------------------------------------------------------------


def wide(a):
    return np.asarray(a).astype(np.float64)


def draw(shape, axis, dtype, params, seed=0):
    """half_inputs.draw's arrays, and a residual z about as large as BN(x), so that relu
    cuts a good share of BN(x) + z."""
    arrays = half_inputs.draw(shape, axis, dtype, params, seed)
    arrays["z"] = (1.5 * np.random.default_rng(seed + 100).normal(size=shape)).astype(dtype)
    return arrays


class Path:
    """How a test's arrays (NumPy, in the layout's normops shape) reach one backend, and
    how its results come back: torch paths see them as tensors on the same memory in
    torch's NC... order (channels_last for NHWC), with the channel axis 1."""

    def __init__(self, name, layout):
        self.name = name
        _, _, self.layout_axis, self.perm = layout
        self.torch = name in TORCH_PATHS
        self.backend = {"torch": None}.get(name, name)   # tensors pick "torch" themselves
        self.axis = 1 if self.torch else self.layout_axis

    def on(self, a):
        if a is None or not self.torch:
            return a
        t = to_torch(a)
        return t if t.ndim == 1 else t.permute(*self.perm)

    def back(self, t, like=None):
        if not self.torch:
            assert isinstance(t, np.ndarray)
            return t
        assert isinstance(t, torch.Tensor) and not t.requires_grad
        if like is not None:
            assert t.dtype == like.dtype and t.device == like.device
        return to_numpy(t if t.ndim == 1 else t.permute(*np.argsort(self.perm)))


def normops_step(path, a, op, training, residual, relu, running, **clips):
    """One forward and backward of normops' fused op on ``path``; ``running`` (NumPy
    arrays: the torch paths update them through tensors on their memory) is updated in
    training. Returns every output as NumPy arrays in the normops layout."""
    on = path.on
    x, dy = on(a["x"]), on(a["dy"])
    z = on(a["z"]) if residual else None
    gamma, beta = on(a["gamma"]), on(a["beta"])
    stats = [on(running[k]) for k in running]
    activation = "relu" if relu else None
    forward, backward = ((normops.batch_norm, normops.batch_norm_backward) if op == "bn" else
                         (normops.batch_renorm, normops.batch_renorm_backward))
    options = dict(training=training, momentum=MOMENTUM, eps=clips.pop("eps", EPS),
                   axis=path.axis, residual=z, activation=activation, backend=path.backend,
                   **clips)
    y, saved = forward(x, gamma, beta, *stats, **options)
    assert saved.activation == activation and saved.residual is residual
    grads = backward(dy, x, saved, gamma, y=y if relu else None, backend=path.backend)
    assert len(grads) == (4 if residual else 3)
    out = dict(y=path.back(y, x), dx=path.back(grads[0], x), dgamma=path.back(grads[1]),
               dbeta=path.back(grads[2]))
    if residual:
        out["dz"] = path.back(grads[3], x)
    return out


# -- PyTorch ---------------------------------------------------------------------------

def torch_transcribed_brn(x, weight, bias, mu, sigma, training, rmax, dmax, eps, compute):
    """BRN from the paper in torch ops, r and d detached, in the ``compute`` dtype (x's,
    float32 for half x), rounded to x's dtype at the end (normops' rounding of BN(x)
    before the residual); the running statistics as the update leaves them."""
    xc, w, b = x.to(compute), weight.to(compute), bias.to(compute)
    mu_c, sigma_c = mu.to(compute), sigma.to(compute)
    dims = [i for i in range(x.dim()) if i != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    if training:
        mu_b = xc.mean(dim=dims)
        sigma_b = torch.sqrt(xc.var(dim=dims, unbiased=False) + eps)
        r = (sigma_b / sigma_c).clamp(1 / rmax, rmax).detach()
        d = ((mu_b - mu_c) / sigma_c).clamp(-dmax, dmax).detach()
        y = (w.reshape(shape) * ((xc - mu_b.reshape(shape)) / sigma_b.reshape(shape)
                                 * r.reshape(shape) + d.reshape(shape)) + b.reshape(shape))
        with torch.no_grad():
            mu.copy_(mu_c + MOMENTUM * (mu_b - mu_c))
            sigma.copy_(sigma_c + MOMENTUM * (sigma_b - sigma_c))
    else:
        y = (w.reshape(shape) * (xc - mu_c.reshape(shape)) / sigma_c.reshape(shape)
             + b.reshape(shape))
    return y.to(x.dtype)


def torch_step(a, perm, training, residual, relu, running, feed=None, brn=None, eps=EPS):
    """PyTorch's y = relu(F.batch_norm(x) + z) (or the BRN transcription, ``brn`` its
    (rmax, dmax)) with autograd, updating ``running`` (NumPy arrays, through tensors on
    their memory). ``feed``: the y (NumPy, normops layout) whose y <= 0 masks dy,
    through aten.threshold_backward; None: PyTorch's own y (torch.relu's backward)."""
    inverse = tuple(np.argsort(perm))
    x = to_torch(a["x"]).permute(*perm).requires_grad_(True)
    z = to_torch(a["z"]).permute(*perm).requires_grad_(True)
    weight = to_torch(a["gamma"]).clone().requires_grad_(True)
    bias = to_torch(a["beta"]).clone().requires_grad_(True)
    first, second = [to_torch(v) for v in running.values()] if running else (None, None)
    if brn is None:
        v = F.batch_norm(x, first, second, weight, bias, training=training, momentum=MOMENTUM,
                         eps=eps)
    else:
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        v = torch_transcribed_brn(x, weight, bias, first, second, training, *brn, eps, compute)
    if residual:
        v = v + z
    y = torch.relu(v) if relu else v
    dy = to_torch(a["dy"]).permute(*perm)
    if feed is None:
        y.backward(dy)
    else:
        # in x's memory format, as dy: given a channels_last x and a gradient that is not,
        # PyTorch's bfloat16 BN backward rounds dbeta and dgamma to bfloat16
        mask_source = to_torch(np.ascontiguousarray(feed)).permute(*perm)
        v.backward(torch.ops.aten.threshold_backward(dy, mask_source, 0) if relu else dy)
    out = dict(y=to_numpy(y.permute(*inverse)), dx=to_numpy(x.grad.permute(*inverse)),
               dgamma=to_numpy(weight.grad), dbeta=to_numpy(bias.grad))
    if residual:
        out["dz"] = to_numpy(z.grad.permute(*inverse))
    return out


# -- tolerances ------------------------------------------------------------------------

def statistics(a, axis, training, op, running, brn=None, eps=EPS):
    """Per channel (float64): the mean and invstd x was normalized with, BRN's r and d."""
    x = wide(a["x"])
    ax = axis % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != ax)
    if not training:
        first, second = (wide(v) for v in running.values())
        return first, (1 / np.sqrt(second + eps) if op == "bn" else 1 / second), 1.0, 0.0
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    sigma = np.sqrt(var + eps)
    if op == "bn" or brn is None:
        return mean, 1 / sigma, 1.0, 0.0
    first, second = (wide(v) for v in running.values())
    rmax, dmax = brn
    return (mean, 1 / sigma, np.clip(sigma / second, 1 / rmax, rmax),
            np.clip((mean - first) / second, -dmax, dmax))


def term_sizes(a, axis, training, residual, stats, dy):
    """The size of the terms each output is made of, per element or channel (float64):
    y = g r invstd (x - mean) + g d + beta (+ z); dx = g r invstd (dy - mean(dy)
    - xhat mean(dy xhat)); dgamma = sum dy (r xhat + d); dbeta = sum dy, where x - mean
    is as exact as |x| + |mean|. ``dy``: the gradient through the activation."""
    x, dy = wide(a["x"]), wide(dy)
    ax = axis % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != ax)
    bshape = [1] * x.ndim
    bshape[ax] = -1
    mean, invstd, r, d = (np.broadcast_to(v, x.shape[ax]) for v in stats)
    g, b = np.abs(wide(a["gamma"])), np.abs(wide(a["beta"]))
    k = (g * r * invstd).reshape(bshape)
    spread = np.abs(x) + np.abs(mean).reshape(bshape)
    xhat = (x - mean.reshape(bshape)) * invstd.reshape(bshape)
    y = k * spread + (g * np.abs(d) + b).reshape(bshape)
    if residual:
        y = y + np.abs(wide(a["z"]))
    sizes = dict(y=y, dz=np.abs(dy), dbeta=np.abs(dy).sum(axis=axes),
                 dgamma=(np.abs(dy) * (r.reshape(bshape) * spread * invstd.reshape(bshape)
                                       + np.abs(d).reshape(bshape))).sum(axis=axes))
    if training:
        mdy = np.abs(dy.mean(axis=axes)).reshape(bshape)
        mdyx = np.abs((dy * xhat).mean(axis=axes)).reshape(bshape)
        sizes["dx"] = k * (np.abs(dy) + mdy + mdyx * spread * invstd.reshape(bshape))
    else:
        sizes["dx"] = k * np.abs(dy)
    return sizes


def running_sizes(a, axis, running_before, op, eps=EPS):
    """The size of the terms of each running statistic's update."""
    x = wide(a["x"])
    ax = axis % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != ax)
    m = x.size // x.shape[ax]
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    first, second = (np.abs(wide(v)) for v in running_before.values())
    spread = var * m / (m - 1) if op == "bn" else np.sqrt(var + eps)
    return [first + np.abs(mean), second + spread]


def assert_outputs_close(actual, expected, sizes, what=""):
    assert set(actual) == set(expected), what
    for key, want in expected.items():
        got = actual[key]
        assert got.dtype == want.dtype, f"{what}{key}: dtype {got.dtype}, torch's {want.dtype}"
        testing.assert_close(got, want, got.dtype, scale=sizes[key], what=f"{what}{key}")


def assert_running_close(actual, expected, sizes, what=""):
    for (key, got), want, size in zip(actual.items(), expected.values(), sizes):
        assert got.dtype == want.dtype, key
        testing.assert_close(got, want, got.dtype, scale=size, what=f"{what}{key}")


def copies(running):
    return {k: v.copy() for k, v in running.items()}


def running_of(a, op):
    """Copies of the running statistics of ``op`` ("bn": mean, var; "brn": mean, std)."""
    if op == "bn":
        return dict(running_mean=a["running_mean"].copy(), running_var=a["running_var"].copy())
    spread = np.sqrt(wide(a["running_var"])).astype(a["running_var"].dtype)
    return dict(running_mean=a["running_mean"].copy(), running_std=spread)


# -- BN against F.batch_norm + z, relu -------------------------------------------------

def check_against_torch(path_name, layout, a, op, training, residual, relu, running, brn=None,
                        **options):
    """One step of normops' op against PyTorch's (``brn``: BRN's (rmax, dmax), against
    the transcription); a training step updates ``running``, PyTorch's, and normops'
    starting from the same values."""
    _, _, axis, perm = layout
    path = Path(path_name, layout)
    before = copies(running)
    ours = copies(running)
    actual = normops_step(path, a, op, training, residual, relu, ours, **options)
    expected = torch_step(a, perm, training, residual, relu, running, feed=actual["y"], brn=brn)
    stats = statistics(a, axis, training, op, before, brn)
    through = np.where(wide(actual["y"]) <= 0, 0.0, wide(a["dy"])) if relu else a["dy"]
    sizes = term_sizes(a, axis, training, residual, stats, through)
    mode = "train" if training else "eval"
    assert_outputs_close(actual, expected, sizes, f"{mode} ")
    if training:
        assert_running_close(ours, running, running_sizes(a, axis, before, op), f"{mode} ")
    if relu:
        assert not (wide(actual["y"]) < 0).any()
    return ours


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("epilogue", EPILOGUES, ids=epilogue_id)
@pytest.mark.parametrize("dtypes", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
def test_batch_norm_matches_torch(layout, dtypes, epilogue, path):
    """A training step (running statistics updated as PyTorch's), then an eval step
    with the updated statistics."""
    _, shape, axis, _ = layout
    a = draw(shape, axis, *dtypes)
    running = running_of(a, "bn")
    check_against_torch(path, layout, a, "bn", True, *epilogue, running)
    a = draw(shape, axis, *dtypes, seed=1)
    check_against_torch(path, layout, a, "bn", False, *epilogue, running)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtypes", HALF_WEIGHTS, ids=dtype_id)
@pytest.mark.parametrize("layout", [LAYOUT["NCHW"], LAYOUT["NHWC"]], ids=["NCHW", "NHWC"])
def test_batch_norm_with_half_weights_matches_torch(layout, dtypes, path):
    _, shape, axis, _ = layout
    a = draw(shape, axis, *dtypes)
    running = running_of(a, "bn")
    check_against_torch(path, layout, a, "bn", True, True, True, running)
    check_against_torch(path, layout, draw(shape, axis, *dtypes, seed=1), "bn", False, True,
                        True, running)


def test_fed_mask_is_torchs_relu_backward():
    """The harness: feeding PyTorch's own y to threshold_backward gives torch.relu's
    autograd gradients bit for bit (so only the source of the mask differs)."""
    _, shape, axis, perm = LAYOUT["NCHW"]
    a = draw(shape, axis, F64, F64)
    own = torch_step(a, perm, True, True, True, running_of(a, "bn"))
    fed = torch_step(a, perm, True, True, True, running_of(a, "bn"), feed=own["y"])
    for key in own:
        np.testing.assert_array_equal(fed[key], own[key], err_msg=key)


# -- BRN -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("epilogue", EPILOGUES[:2], ids=epilogue_id)
@pytest.mark.parametrize("dtypes", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout", [LAYOUT["NC"], LAYOUT["NHWC"]], ids=["NC", "NHWC"])
def test_batch_renorm_without_clips_is_torchs_batch_norm(layout, dtypes, epilogue, path):
    """rmax=1, dmax=0: r = 1, d = 0, so training BRN is BN (its running mean follows the
    same update); in eval it normalizes with running_std, set here to PyTorch's
    sqrt(running_var + eps)."""
    _, shape, axis, perm = layout
    path_ = Path(path, layout)
    a = draw(shape, axis, *dtypes)
    torch_running = running_of(a, "bn")
    ours = running_of(a, "brn")
    actual = normops_step(path_, a, "brn", True, *epilogue, ours, rmax=1.0, dmax=0.0)
    expected = torch_step(a, perm, True, *epilogue, torch_running, feed=actual["y"])
    stats = statistics(a, axis, True, "bn", torch_running)
    through = np.where(wide(actual["y"]) <= 0, 0.0, wide(a["dy"])) if epilogue[1] else a["dy"]
    assert_outputs_close(actual, expected, term_sizes(a, axis, True, epilogue[0], stats, through),
                         "train ")
    before = running_of(a, "bn")["running_mean"]
    testing.assert_close(ours["running_mean"], torch_running["running_mean"],
                         scale=running_sizes(a, axis, dict(m=before, v=before), "bn")[0],
                         what="running_mean")
    # eval, with the running statistics PyTorch's eval normalizes with
    a = draw(shape, axis, *dtypes, seed=1)
    params = a["running_var"].dtype
    ours = dict(running_mean=torch_running["running_mean"].copy(),
                running_std=np.sqrt(wide(torch_running["running_var"]) + EPS).astype(params))
    actual = normops_step(path_, a, "brn", False, *epilogue, ours, rmax=1.0, dmax=0.0)
    expected = torch_step(a, perm, False, *epilogue, copies(torch_running), feed=actual["y"])
    stats = statistics(a, axis, False, "bn", torch_running)
    through = np.where(wide(actual["y"]) <= 0, 0.0, wide(a["dy"])) if epilogue[1] else a["dy"]
    assert_outputs_close(actual, expected, term_sizes(a, axis, False, epilogue[0], stats, through),
                         "eval ")


WIDE, TIGHT = (3.0, 5.0), (1.1, 0.2)   # r and d within the clips, or clipped
CLIPPED_LAYOUTS = [(LAYOUT["NC"], TIGHT), (LAYOUT["NCHW"], WIDE), (LAYOUT["NHWC"], TIGHT),
                   (LAYOUT["NCDHW"], WIDE)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtypes", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout,clip", CLIPPED_LAYOUTS,
                         ids=[f"{layout[0]}-{'tight' if clip == TIGHT else 'wide'}"
                              for layout, clip in CLIPPED_LAYOUTS])
def test_batch_renorm_matches_a_torch_transcription(layout, clip, dtypes, path):
    """relu(BRN(x) + z) against the formula in torch ops with r and d detached: a
    training step (with the tight clips r and d are clipped), then eval."""
    _, shape, axis, _ = layout
    a = draw(shape, axis, *dtypes)
    running = running_of(a, "brn")
    rmax, dmax = clip
    check_against_torch(path, layout, a, "brn", True, True, True, running, brn=clip, rmax=rmax,
                        dmax=dmax)
    check_against_torch(path, layout, draw(shape, axis, *dtypes, seed=1), "brn", False, True, True,
                        running, brn=clip, rmax=rmax, dmax=dmax)


# -- the kink: BN(x) + z exactly 0 -----------------------------------------------------

def exact_inputs(shape, axis, dtype, params, training, seed=0):
    """Inputs whose BN(x) is exact in every dtype (bfloat16's 8 bits included), with
    z = -BN(x) on about half the elements (``zero``; z = -0.0 where BN(x) is 0) and
    small dyadic z elsewhere, so that every sum is exact too. Eval: x, running_mean and
    beta multiples of 1/4, gamma in {+-1/2, +-1, +-2}, running_var + eps = 1.
    Training: each channel holds its mean +- 1/2 in equal counts (variance 1/4), and
    eps = 3/4, so that invstd is 1."""
    rng = np.random.default_rng(seed)
    channels = shape[axis]
    bshape = [1] * len(shape)
    bshape[axis] = channels
    gamma = rng.choice([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], channels)
    beta = rng.integers(-4, 5, channels) / 4
    centre = rng.integers(-8, 9, channels) / 4
    if training:
        eps = 0.75
        signs = np.moveaxis(np.ones(shape), axis, 0).reshape(channels, -1)
        signs[:, ::2] = -1
        signs = rng.permuted(signs, axis=1)
        moved = [shape[axis]] + [n for i, n in enumerate(shape) if i != axis % len(shape)]
        # C order, as every other input here (given a bfloat16 x of another memory order,
        # PyTorch's BN backward rounds dbeta and dgamma to bfloat16)
        x = np.ascontiguousarray(centre.reshape(bshape)
                                 + 0.5 * np.moveaxis(signs.reshape(moved), 0, axis))
        mean, invstd = centre, 1.0
    else:
        eps = 0.25
        x = rng.integers(-16, 17, shape) / 4
        x = np.where(rng.random(shape) < 0.1, centre.reshape(bshape), x)   # BN(x) = beta there
        mean, invstd = centre, 1 / np.sqrt(0.75 + eps)
    y0 = gamma.reshape(bshape) * (x - mean.reshape(bshape)) * invstd + beta.reshape(bshape)
    zero = rng.random(shape) < 0.5
    z = np.where(zero, -y0, rng.integers(-32, 33, shape) / 8)
    a = dict(x=x.astype(dtype), dy=rng.normal(size=shape).astype(dtype), z=z.astype(dtype),
             gamma=gamma.astype(params), beta=beta.astype(params),
             running_mean=centre.astype(params), running_var=np.full(channels, 0.75, params))
    assert (wide(a["z"]) == z).all() and (wide(a["x"]) == x).all()   # exact in the dtype
    return a, zero, eps


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtypes", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout_name", ["NHWC", "NCDHW"])
def test_exact_zero_sum_gives_zero_and_torchs_gradients(layout_name, dtypes, training, path):
    """Where BN(x) + z is exactly 0, y is 0 on every backend (the reference too: its
    float64 BN(x) is exact here), and the gradients are PyTorch's own autograd ones
    (relu' = 0 at 0): dz, and dy's part in dx, dgamma, dbeta, vanish there. In eval y
    is exact, and PyTorch's bit for bit."""
    layout = LAYOUT[layout_name]
    _, shape, axis, perm = layout
    shape = {"NHWC": (4, 3, 2, 6), "NCDHW": (2, 3, 2, 3, 2)}[layout_name]
    layout = (layout_name, shape, axis, perm)
    a, zero, eps = exact_inputs(shape, axis, *dtypes, training)
    path_ = Path(path, layout)
    if training:
        # z = -BN(x) as this backend rounds it (its output with z = 0 and no relu): the
        # cpu kernels' batch mean of these values may be an ulp off the exact one
        lin = normops_step(path_, dict(a, z=np.zeros_like(a["z"])), "bn", True, True, False,
                           running_of(a, "bn"), eps=eps)["y"]
        a["z"] = np.where(zero, -wide(lin), wide(a["z"])).astype(a["z"].dtype)
    ours, theirs = running_of(a, "bn"), running_of(a, "bn")
    actual = normops_step(path_, a, "bn", training, True, True, ours, eps=eps)
    y = wide(actual["y"])
    assert (y[zero] == 0).all(), \
        f"{np.count_nonzero(y[zero] != 0)} of {zero.sum()} exact zero sums give y != 0"
    assert (actual["dz"][zero] == 0).all()
    own = torch_step(a, perm, training, True, True, theirs, eps=eps)
    # PyTorch's y is exact here as well (its batch variance may round: then compare with
    # y fed to its mask, as elsewhere)
    torch_exact = (own["y"].astype(np.float64)[zero] == 0).all()
    expected = own if torch_exact else torch_step(a, perm, training, True, True,
                                                  running_of(a, "bn"), feed=actual["y"], eps=eps)
    stats = statistics(a, axis, training, "bn", running_of(a, "bn"), eps=eps)
    sizes = term_sizes(a, axis, training, True, stats, np.where(y <= 0, 0.0, wide(a["dy"])))
    assert_outputs_close(actual, expected, sizes)
    # dz is dy masked where y <= 0: exact
    np.testing.assert_array_equal(wide(actual["dz"]), np.where(y <= 0, 0.0, wide(a["dy"])))
    if not training:
        np.testing.assert_array_equal(wide(actual["y"]), wide(own["y"]))   # all exact


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtypes", DTYPES, ids=dtype_id)
def test_residual_minus_plain_output_gives_zero(dtypes, path):
    """z = -y0, y0 the plain (unfused) normops output of the same call on the same
    backend, on about half the elements: the documented sum (BN(x) rounded to x's
    dtype, plus z, rounded once) is exactly 0 there on every backend but the reference,
    which adds z to its float64 BN(x) and leaves at most BN(x)'s rounding, up to half
    an ulp of y0. Gradients: PyTorch's, through the same mask."""
    layout = LAYOUT["NCHW"]
    _, shape, axis, perm = layout
    path_ = Path(path, layout)
    a = draw(shape, axis, *dtypes)
    rng = np.random.default_rng(5)
    plain = dict(x=path_.on(a["x"]), gamma=path_.on(a["gamma"]), beta=path_.on(a["beta"]))
    y0, _ = normops.batch_norm(plain["x"], plain["gamma"], plain["beta"], axis=path_.axis,
                               backend=path_.backend)
    y0 = path_.back(y0)
    zero = rng.random(shape) < 0.5
    a["z"] = np.where(zero, -y0, a["z"]).astype(a["x"].dtype)
    ours = {}
    actual = normops_step(path_, a, "bn", True, True, True, ours)
    y = wide(actual["y"])
    if path == "reference":
        eps = float(ml_dtypes.finfo(a["x"].dtype).eps)
        assert (y[zero] >= 0).all() and (y[zero] <= eps / 2 * np.abs(wide(y0[zero]))).all()
    else:
        bad = np.count_nonzero(y[zero] != 0)
        assert bad == 0, (f"{bad} of {zero.sum()} sums y0 + (-y0) are not 0 (largest "
                          f"{np.max(np.abs(y[zero])):.3g}): the fused BN(x) is not the plain op's")
    expected = torch_step(a, perm, True, True, True, {}, feed=actual["y"])
    stats = statistics(a, axis, True, "bn", {})
    sizes = term_sizes(a, axis, True, True, stats, np.where(y <= 0, 0.0, wide(a["dy"])))
    assert_outputs_close(actual, expected, sizes)
    np.testing.assert_array_equal(wide(actual["dz"]), np.where(y <= 0, 0.0, wide(a["dy"])))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtypes", DTYPES, ids=dtype_id)
def test_nan_in_the_residual(dtypes, training, path):
    """A NaN in z: y is NaN exactly there, and dy passes there (threshold_backward lets
    NaN y through, as torch.relu's backward), into dz and dx; the statistics, of x
    alone, stay finite."""
    layout = LAYOUT["NHWC"]
    _, shape, axis, perm = layout
    a = draw(shape, axis, *dtypes)
    nan = np.random.default_rng(3).random(shape) < 0.1
    a["z"] = np.where(nan, np.nan, wide(a["z"])).astype(a["x"].dtype)
    path_ = Path(path, layout)
    ours, theirs = running_of(a, "bn"), running_of(a, "bn")
    actual = normops_step(path_, a, "bn", training, True, True, ours)
    np.testing.assert_array_equal(np.isnan(wide(actual["y"])), nan)
    np.testing.assert_array_equal(wide(actual["dz"])[nan], wide(a["dy"])[nan])
    for key in ("dx", "dgamma", "dbeta"):
        assert np.isfinite(wide(actual[key])).all(), key
    expected = torch_step(a, perm, training, True, True, theirs, feed=actual["y"])
    stats = statistics(a, axis, training, "bn", running_of(a, "bn"))
    through = np.where(wide(actual["y"]) <= 0, 0.0, wide(a["dy"]))
    assert_outputs_close(actual, expected, term_sizes(a, axis, training, True, stats, through))
    if training:
        assert_running_close(ours, theirs, running_sizes(a, axis, running_of(a, "bn"), "bn"))
    # PyTorch's own relu backward agrees where it sees the same NaNs
    own = torch_step(a, perm, training, True, True, running_of(a, "bn"))
    np.testing.assert_array_equal(np.isnan(wide(own["y"])), nan)
    np.testing.assert_array_equal(wide(own["dz"])[nan], wide(actual["dz"])[nan])


# -- the fused op against the unfused composition --------------------------------------

def plain_and_fused(path, a, op, training):
    """(y, running statistics, saved) of the plain op, then of the fused one (z, relu)."""
    forward = normops.batch_norm if op == "bn" else normops.batch_renorm
    clips = {} if op == "bn" else dict(rmax=1.5, dmax=0.5)
    results = []
    for fused in (False, True):
        running = running_of(a, op)
        epilogue = dict(residual=path.on(a["z"]), activation="relu") if fused else {}
        y, saved = forward(path.on(a["x"]), path.on(a["gamma"]), path.on(a["beta"]),
                           *(path.on(v) for v in running.values()), training=training,
                           axis=path.axis, backend=path.backend, **clips, **epilogue)
        results.append((path.back(y), running, saved))
    return results


def assert_same_bits(y, expected, what):
    bits = {F32: np.uint32, F64: np.uint64}[y.dtype]
    differ = y.view(bits) != expected.view(bits)
    assert not differ.any(), (
        f"{np.count_nonzero(differ)} of {differ.size} elements differ from {what}; largest "
        f"difference {np.max(np.abs(wide(y) - wide(expected))):.3g}, signs of zeros differ "
        f"at {np.count_nonzero(differ & (wide(y) == 0) & (wide(expected) == 0))}")


@pytest.mark.parametrize("path", NON_REFERENCE)
@pytest.mark.parametrize("op", ["bn", "brn"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
def test_fused_is_the_unfused_composition_bit_for_bit(layout, dtype, training, op, path):
    """y = np.where(v < 0, 0, v) with v = y_plain + z in x's dtype: the same bits (the
    sign of a zero included). The running and saved statistics agree (to the dtype's
    tolerance: the documented convention is y's)."""
    _, shape, axis, _ = layout
    path_ = Path(path, layout)
    a = draw(shape, axis, dtype, dtype)
    (y0, running0, saved0), (y, running, saved) = plain_and_fused(path_, a, op, training)
    for key in running:
        testing.assert_close(running[key], running0[key], what=key)
    for field in ("mean", "invstd"):
        testing.assert_close(wide(path_.back(getattr(saved, field))),
                             wide(path_.back(getattr(saved0, field))), dtype, what=field)
    v = y0 + a["z"]
    assert_same_bits(y, np.where(v < 0, np.zeros_like(v), v), "the unfused composition")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_signed_zeros_stay(dtype, training, path):
    """gamma = beta = -0.0 on half the channels makes BN(x) a zero there, of the sign the
    backend's arithmetic gives it (-0.0 for most elements on cpu and reference); with
    z = -0.0 there, v = BN(x) + z is that zero and relu keeps it, sign included, as
    torch.relu keeps -0.0: the fused y has the plain y's bits there, on every backend
    (the reference's float64 sum too)."""
    assert torch.signbit(torch.relu(torch.tensor([-0.0], dtype=TORCH_DTYPE[dtype]))).all()
    layout = LAYOUT["NHWC"]
    _, shape, axis, _ = layout
    path_ = Path(path, layout)
    a = draw(shape, axis, dtype, dtype)
    zeroed = np.arange(shape[axis]) % 2 == 0
    a["gamma"][zeroed] = a["beta"][zeroed] = -0.0
    a["z"][..., zeroed] = -0.0   # NHWC: the channels are the last axis
    (y0, _, _), (y, _, _) = plain_and_fused(path_, a, "bn", training)
    assert (y0[..., zeroed] == 0).all()
    assert_same_bits(y[..., zeroed], y0[..., zeroed], "the plain op's zeros")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtypes", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("op", ["bn", "brn"])
def test_fused_backward_is_the_plain_backward_of_the_masked_gradient(op, dtypes, path):
    """dz is dy where y > 0 (or NaN), else 0, a new array (not dy itself); dx, dgamma,
    dbeta are the plain backward's of that dz; without relu dz is a copy of dy."""
    layout = LAYOUT["NCDHW"]
    _, shape, axis, _ = layout
    path_ = Path(path, layout)
    a = draw(shape, axis, *dtypes)
    on = path_.on
    forward, backward = ((normops.batch_norm, normops.batch_norm_backward) if op == "bn" else
                         (normops.batch_renorm, normops.batch_renorm_backward))
    clips = {} if op == "bn" else dict(rmax=1.5, dmax=0.5)
    x, dy, gamma = on(a["x"]), on(a["dy"]), on(a["gamma"])
    running = [on(v) for v in running_of(a, op).values()]
    for relu in (True, False):
        y, saved = forward(x, gamma, on(a["beta"]), *running, axis=path_.axis,
                           backend=path_.backend, residual=on(a["z"]),
                           activation="relu" if relu else None, **clips)
        dx, dgamma, dbeta, dz = backward(dy, x, saved, gamma, y=y if relu else None,
                                         backend=path_.backend)
        y_np, dz_np = path_.back(y), path_.back(dz)
        masked = np.where(wide(y_np) <= 0, 0.0, wide(a["dy"])) if relu else wide(a["dy"])
        np.testing.assert_array_equal(wide(dz_np), masked)
        assert not np.shares_memory(dz_np, a["dy"])
        # the plain backward of the masked gradient (the saved state without the epilogue)
        plain_saved = type(saved)(**{**saved.__dict__, "activation": None, "residual": False})
        expected = backward(on(masked.astype(a["dy"].dtype)), x, plain_saved, gamma,
                            backend=path_.backend)
        stats = (wide(path_.back(saved.mean)), wide(path_.back(saved.invstd)),
                 1.0 if op == "bn" else wide(path_.back(saved.r)),
                 0.0 if op == "bn" else wide(path_.back(saved.d)))
        sizes = term_sizes(a, axis, True, True, stats, masked)
        for key, got, want in zip(("dx", "dgamma", "dbeta"), (dx, dgamma, dbeta), expected):
            got, want = path_.back(got), path_.back(want)
            assert got.dtype == want.dtype
            testing.assert_close(got, want, got.dtype, scale=sizes[key], what=key)


# -- layers ----------------------------------------------------------------------------

LAYER_LIBS = ["numpy-NCHW", "numpy-NHWC", "torch-NCHW", "torch-channels_last"]


@pytest.mark.parametrize("lib", LAYER_LIBS)
@pytest.mark.parametrize("kind", ["BatchNorm", "BatchRenorm"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_layer_matches_torch_module_over_steps(dtype, kind, lib):
    """A layer with activation="relu", forward(x, residual=z) and backward(dy) -> (dx, dz),
    against torch.nn.BatchNorm2d + z, relu over three SGD training steps and one eval
    step: y, dx, dz, the weights' gradients, the running statistics. BatchRenorm with
    rmax=1, dmax=0 (BN in training; in eval its running_std is set to PyTorch's
    sqrt(running_var + eps))."""
    C, shape, lr = 6, (4, 6, 5, 3), 0.1
    tdtype = TORCH_DTYPE[dtype]
    module = torch.nn.BatchNorm2d(C, eps=EPS, momentum=MOMENTUM, dtype=tdtype)
    rng = np.random.default_rng(7)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, C) * rng.choice([-1, 1], C)))
        module.bias.copy_(torch.from_numpy(rng.normal(size=C)))
    on_torch = lib.startswith("torch")
    nhwc = lib == "numpy-NHWC"
    options = dict(dtype=dtype, like=torch.empty(0) if on_torch else None, axis=-1 if nhwc else 1,
                   activation="relu", momentum=MOMENTUM, eps=EPS)
    layer = (normops.BatchNorm(C, **options) if kind == "BatchNorm" else
             normops.BatchRenorm(C, rmax=1.0, dmax=0.0, **options))
    assert "activation='relu'" in repr(layer)

    def ours(a):   # a NumPy NCHW array as the layer takes it
        if on_torch:
            t = torch.from_numpy(a)
            return t.contiguous(memory_format=torch.channels_last) if lib.endswith("last") else t
        return np.ascontiguousarray(np.moveaxis(a, 1, -1)) if nhwc else a

    def host(v):
        return v.numpy() if on_torch else v

    def back(v):   # the layer's output as a NumPy NCHW array
        return np.moveaxis(host(v), -1, 1) if nhwc else host(v)

    layer_params = {"gamma": module.weight.detach().numpy().copy(),
                    "beta": module.bias.detach().numpy().copy()}
    for name, value in layer_params.items():
        getattr(layer, name)[...] = torch.from_numpy(value) if on_torch else value
    for step in range(4):
        training = step < 3
        module.train(training)
        layer.train(training)
        if not training and kind == "BatchRenorm":
            std = torch.sqrt(module.running_var + EPS)
            layer.running_std[...] = std if on_torch else std.numpy()
        x = (rng.normal(size=shape) * rng.uniform(0.5, 3, (1, C, 1, 1))
             + rng.normal(0, 3, (1, C, 1, 1))).astype(dtype)
        z, dy = (rng.normal(size=shape).astype(dtype) for _ in range(2))
        before = dict(m=module.running_mean.numpy().copy(), v=module.running_var.numpy().copy())
        y = layer(ours(x), residual=ours(z))
        dx, dz = layer.backward(ours(dy))
        if on_torch:
            for t in (y, dx, dz):
                assert isinstance(t, torch.Tensor) and t.dtype == tdtype
        y_np = back(y)
        xt = torch.from_numpy(x).requires_grad_(True)
        zt = torch.from_numpy(z).requires_grad_(True)
        module.zero_grad()
        v = module(xt) + zt
        yt = torch.relu(v)
        mask_source = torch.from_numpy(np.ascontiguousarray(y_np))   # the layer's y
        v.backward(torch.ops.aten.threshold_backward(torch.from_numpy(dy), mask_source, 0))
        a = dict(x=x, z=z, gamma=module.weight.detach().numpy(), beta=module.bias.detach().numpy())
        through = np.where(wide(y_np) <= 0, 0.0, wide(dy))
        stats = statistics(a, 1, training, "bn", dict(m=before["m"], v=before["v"]))
        sizes = term_sizes(a, 1, training, True, stats, through)
        grads = {k: host(g) for k, g in layer.grads().items()}
        actual = dict(y=y_np, dx=back(dx), dz=back(dz), dgamma=grads["gamma"], dbeta=grads["beta"])
        expected = dict(y=yt.detach().numpy(), dx=xt.grad.numpy(), dz=zt.grad.numpy(),
                        dgamma=module.weight.grad.numpy(), dbeta=module.bias.grad.numpy())
        assert_outputs_close(actual, expected, sizes, f"step {step} ")
        if training:
            sizes = running_sizes(dict(x=x), 1, before, "bn")
            testing.assert_close(host(layer.running_mean), module.running_mean.numpy(),
                                 scale=sizes[0], what=f"step {step} running_mean")
            if kind == "BatchNorm":
                testing.assert_close(host(layer.running_var), module.running_var.numpy(),
                                     scale=sizes[1], what=f"step {step} running_var")
            assert layer.num_batches_tracked == int(module.num_batches_tracked)
            with torch.no_grad():   # the same SGD step on both, each with its own gradients
                module.weight -= lr * module.weight.grad
                module.bias -= lr * module.bias.grad
            for name in ("gamma", "beta"):
                getattr(layer, name)[...] -= lr * layer.grads()[name]


def test_layer_backward_returns_dx_or_dx_and_dz():
    """dx alone after a forward without a residual, (dx, dz) after one with it; with
    z = -(the last y), BN(x) + z is 0 or BN(x) < 0 everywhere: y, dx and dz vanish."""
    layer = normops.BatchNorm(3, activation="relu", dtype=np.float64)
    x = np.random.default_rng(0).normal(size=(8, 3))
    y = layer(x)
    dx = layer.backward(np.ones_like(x))
    assert isinstance(dx, np.ndarray) and dx.shape == x.shape
    y2 = layer(x, residual=-y)
    assert (y2 == 0).all()
    dx, dz = layer.backward(np.ones_like(x))
    assert (dz == 0).all() and (dx == 0).all()


# -- errors ----------------------------------------------------------------------------

ERROR_LIBS = ["numpy", "torch", TORCH_ARRAY_API]


def error_arrays(lib):
    """x (float32, (4, 3, 2)), a converter to x's library, x's library's and another
    library's version of arrays, and the backend to pass."""
    x = np.random.default_rng(0).normal(size=(4, 3, 2)).astype(np.float32)
    if lib == "numpy":
        return x, (lambda a: a), torch.from_numpy, None
    backend = None if lib == "torch" else lib
    return torch.from_numpy(x), torch.from_numpy, (lambda a: a), backend


@pytest.mark.parametrize("lib", ERROR_LIBS)
@pytest.mark.parametrize("op", ["bn", "brn"])
def test_backward_after_relu_requires_y(op, lib):
    x, same, _, backend = error_arrays(lib)
    stats = [same(np.zeros(3, np.float32)), same(np.ones(3, np.float32))]
    forward, backward = ((normops.batch_norm, normops.batch_norm_backward) if op == "bn" else
                         (normops.batch_renorm, normops.batch_renorm_backward))
    _, saved = forward(x, None, None, *stats, residual=x, activation="relu", backend=backend)
    with pytest.raises(ValueError, match=r"y is required: the forward had activation='relu'"):
        backward(x, x, saved, None, backend=backend)


@pytest.mark.parametrize("lib", ERROR_LIBS)
def test_wrong_y_is_refused(lib):
    x, same, other, backend = error_arrays(lib)
    y, saved = normops.batch_norm(x, activation="relu", backend=backend)
    other_kind = "torch.Tensor but x is a numpy.ndarray" if lib == "numpy" else \
        "numpy.ndarray but x is a torch array"
    cases = [
        (ValueError, r"y must have the shape of x \(4, 3, 2\), got \(2, 3, 2\) \(pass the y the "
                     r"forward returned\)", y[:2]),
        (TypeError, "y has dtype float64 but x has dtype float32",
         same(np.zeros((4, 3, 2), np.float64))),
        (TypeError, f"y is a {other_kind}; pass y as one", other(np.zeros((4, 3, 2), np.float32))),
    ]
    for error, message, bad in cases:
        with pytest.raises(error, match=message):
            normops.batch_norm_backward(x, x, saved, y=bad, backend=backend)


@pytest.mark.parametrize("lib", ERROR_LIBS)
@pytest.mark.parametrize("op", ["bn", "brn"])
def test_wrong_residual_is_refused(op, lib):
    x, same, other, backend = error_arrays(lib)
    stats = [same(np.zeros(3, np.float32)), same(np.ones(3, np.float32))]
    forward = normops.batch_norm if op == "bn" else normops.batch_renorm
    other_kind = "torch.Tensor but x is a numpy.ndarray" if lib == "numpy" else \
        "numpy.ndarray but x is a torch array"
    cases = [
        (ValueError, r"residual must have the shape of x \(4, 3, 2\), got \(4, 3, 1\)",
         x[..., :1]),
        (TypeError, "residual has dtype float64 but x has dtype float32",
         same(np.zeros((4, 3, 2), np.float64))),
        (TypeError, f"residual is a {other_kind}; pass residual as one",
         other(np.zeros((4, 3, 2), np.float32))),
    ]
    for error, message, bad in cases:
        before = [np.asarray(s).copy() for s in stats]
        with pytest.raises(error, match=message):
            forward(x, None, None, *stats, residual=bad, activation="relu", backend=backend)
        for s, b in zip(stats, before):   # a refused call updates nothing
            np.testing.assert_array_equal(np.asarray(s), b)


@pytest.mark.parametrize("lib", ERROR_LIBS)
@pytest.mark.parametrize("activation", ["gelu", "ReLU", True, 0])
def test_unknown_activation_is_refused(activation, lib):
    x, same, _, backend = error_arrays(lib)
    message = f"activation must be None or 'relu', got {activation!r}"
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        normops.batch_norm(x, activation=activation, backend=backend)
    stats = [same(np.zeros(3, np.float32)), same(np.ones(3, np.float32))]
    with pytest.raises(ValueError, match=message):
        normops.batch_renorm(x, None, None, *stats, residual=x, activation=activation,
                             backend=backend)


@pytest.mark.parametrize("kind", ["BatchNorm", "BatchRenorm"])
def test_layers_refuse_an_unknown_activation_and_a_foreign_residual(kind):
    cls = getattr(normops, kind)
    with pytest.raises(ValueError, match="activation must be None or 'relu', got 'sigmoid'"):
        cls(3, activation="sigmoid")
    layer = cls(3, activation="relu")
    with pytest.raises(TypeError, match="holds NumPy arrays but residual is a torch.Tensor"):
        layer(np.zeros((4, 3), np.float32), residual=torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"residual must have the shape of x \(4, 3\)"):
        layer(np.zeros((4, 3), np.float32), residual=np.zeros((4, 2), np.float32))
    layer = cls(3, activation="relu", like=torch.empty(0))
    with pytest.raises(TypeError, match="holds torch arrays on device cpu but residual is a "
                                        "numpy.ndarray"):
        layer(torch.zeros(4, 3), residual=np.zeros((4, 3), np.float32))
