"""PyTorch tensors through normops: the "torch" backend against
torch.nn.functional.batch_norm with autograd, CPU tensors read and written by the C
kernels in place, and the array-API path that tensors on other devices take."""
import tracemalloc

import numpy as np
import pytest

import normops
from normops import testing
from optional_torch import import_torch

torch = import_torch("the torch backend tests")
F = torch.nn.functional

C = 6
LAYOUTS = {"NC": (64, C), "NCHW": (8, C, 5, 7), "channels_last": (8, C, 5, 7)}


def tensors(layout, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = LAYOUTS[layout]
    x = torch.randn(shape, generator=g, dtype=dtype) * 2 + 3
    dy = torch.randn(shape, generator=g, dtype=dtype)
    if layout == "channels_last":
        x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
    w = torch.rand(C, generator=g, dtype=dtype) + 0.5
    b = torch.randn(C, generator=g, dtype=dtype)
    rm = torch.randn(C, generator=g, dtype=dtype)
    rv = torch.rand(C, generator=g, dtype=dtype) + 0.5
    return x, dy, w, b, rm, rv


def torch_autograd(x, dy, w, b, rm, rv, training):
    """y, running statistics and the gradients as PyTorch's autograd computes them."""
    xt, wt, bt = (t.clone().requires_grad_() for t in (x, w, b))
    y = F.batch_norm(xt, rm, rv, wt, bt, training=training, momentum=0.1, eps=1e-5)
    y.backward(dy)
    return y.detach(), xt.grad, wt.grad, bt.grad


def tolerances(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def assert_tensor_like(t, like):
    assert isinstance(t, torch.Tensor) and t.dtype == like.dtype and t.device == like.device
    assert not t.requires_grad


@pytest.mark.parametrize("path", ["torch", "array-api"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_matches_torch_autograd(layout, dtype, training, path):
    x, dy, w, b, rm, rv = tensors(layout, dtype)
    rm_t, rv_t = rm.clone(), rv.clone()
    expected = torch_autograd(x, dy, w, b, rm_t, rv_t, training)
    pick = {} if path == "torch" else {"backend": path}   # tensors pick "torch" themselves
    y, saved = normops.batch_norm(x, w, b, rm, rv, training=training, **pick)
    dx, dgamma, dbeta = normops.batch_norm_backward(dy, x, saved, w, **pick)
    for got, want in zip((y, dx, dgamma, dbeta), expected):
        assert_tensor_like(got, x)
        torch.testing.assert_close(got, want, **tolerances(dtype))
    torch.testing.assert_close(rm, rm_t, **tolerances(dtype))
    torch.testing.assert_close(rv, rv_t, **tolerances(dtype))
    assert isinstance(saved.mean, torch.Tensor) and isinstance(saved.invstd, torch.Tensor)


def test_tensors_pick_the_torch_backend_and_keep_their_layout():
    x, dy, w, b, rm, rv = tensors("channels_last", torch.float32)
    assert normops.get_backend("torch") is normops._registry.backend_for(x)
    y, saved = normops.batch_norm(x, w, b, rm, rv)
    assert y.is_contiguous(memory_format=torch.channels_last)
    dx = normops.batch_norm_backward(dy, x, saved, w)[0]
    assert dx.is_contiguous(memory_format=torch.channels_last)


def test_brn_matches_the_numpy_ops():
    x, dy, w, b, rm, rs = tensors("NCHW", torch.float64)
    rm_n, rs_n = rm.numpy().copy(), rs.numpy().copy()
    y, saved = normops.batch_renorm(x, w, b, rm, rs, rmax=1.5, dmax=0.5)
    dx, dgamma, dbeta = normops.batch_renorm_backward(dy, x, saved, w)
    y_n, saved_n = normops.batch_renorm(x.numpy(), w.numpy(), b.numpy(), rm_n, rs_n, rmax=1.5, dmax=0.5)
    grads_n = normops.batch_renorm_backward(dy.numpy(), x.numpy(), saved_n, w.numpy())
    for got, want in zip((y, dx, dgamma, dbeta, rm, rs, saved.r, saved.d),
                         (y_n, *grads_n, rm_n, rs_n, saved_n.r, saved_n.d)):
        assert isinstance(got, torch.Tensor)
        np.testing.assert_array_equal(got.numpy(), want)


def test_a_tensor_that_requires_grad_is_accepted():
    x, dy, w, b, rm, rv = tensors("NCHW", torch.float32)
    x.requires_grad_()
    w = torch.nn.Parameter(w)
    y, saved = normops.batch_norm(x, w, b, rm, rv)
    dx, dgamma, _ = normops.batch_norm_backward(dy, x, saved, w)
    assert not (y.requires_grad or dx.requires_grad or dgamma.requires_grad)
    expected = torch_autograd(x.detach(), dy, w.detach(), b, torch.zeros(C), torch.ones(C), True)
    torch.testing.assert_close(dx, expected[1], rtol=1e-5, atol=1e-5)


def traced_peak(fn):
    """Bytes NumPy allocated at the peak of fn() (NumPy reports its buffers to
    tracemalloc; the cpu backend's pooled outputs are not NumPy's and do not count)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("memory", ["contiguous", "channels_last"])
def test_cpu_tensors_reach_the_kernels_without_a_copy(memory):
    """x and dy of 8 MB: a copy of either would add 8 MB to the peak. A strided tensor,
    which the kernels cannot read in place, shows that the measure sees copies."""
    shape = (64, 32, 32, 32)
    x, dy = torch.randn(shape), torch.randn(shape)
    if memory == "channels_last":
        x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
    strided_x = torch.randn(64, 32, 32, 64)[..., ::2]
    nbytes = x.numel() * x.element_size()
    params = [torch.ones(32), torch.zeros(32), torch.zeros(32), torch.ones(32)]

    def step(t):
        y, saved = normops.batch_norm(t, *params)
        normops.batch_norm_backward(dy, t, saved, params[0])

    step(x), step(strided_x)   # warm-up: the output pool holds blocks of this size now
    assert traced_peak(lambda: step(x)) < 0.25 * nbytes
    assert traced_peak(lambda: step(strided_x)) > 0.9 * nbytes


def test_outputs_share_the_memory_the_kernels_wrote():
    x, dy, w, b, rm, rv = tensors("NCHW", torch.float32)
    y, saved = normops.batch_norm(x, w, b, rm, rv)
    # a tensor made by torch.from_numpy on the kernels' output: writing it writes that array
    host = y.numpy()
    y[0, 0, 0, 0] = 123.0
    assert host[0, 0, 0, 0] == 123.0
    # the running statistics were written in the caller's tensors' memory
    before = rm.data_ptr()
    normops.batch_norm(x, w, b, rm, rv)
    assert rm.data_ptr() == before


def test_the_array_api_path_that_other_devices_take_passes_the_kit():
    """A torch backend whose CPU tensors take the array-API path: the lines a CUDA tensor
    runs (its kernels, the composition, the checks), here on CPU tensors."""
    from normops._backends.torch import TorchBackend
    normops.register_backend("torch-array-api", TorchBackend(cpu_kernels=False))
    try:
        impl = testing.backend_implementation("torch-array-api", "torch")
        report = testing.run(impl)
    finally:
        normops.unregister_backend("torch-array-api")
    assert report.passed, str(report)


def test_errors_name_the_library_and_device():
    x, dy, w, b, rm, rv = tensors("NCHW", torch.float32)
    with pytest.raises(TypeError, match=r"gamma is a numpy.ndarray but x is a torch array"):
        normops.batch_norm(x, w.numpy(), b, rm, rv)
    with pytest.raises(TypeError, match=r"running_var has dtype float64 but x has dtype float32"):
        normops.batch_norm(x, w, b, rm, rv.double())
    with pytest.raises(TypeError, match="running_mean must be a torch array .* got list"):
        normops.batch_norm(x, w, b, rm.tolist(), rv)
    with pytest.raises(ValueError, match="running_var steps 0 bytes between its 4-byte values"):
        normops.batch_norm(x, w, b, rm, torch.ones(1).expand(C))
    with pytest.raises(ValueError, match="running_var shares memory with x"):
        normops.batch_norm(x, w, b, rm, x[0, :, 0, 0])
    with pytest.raises(TypeError, match="x must have dtype float32, float64, float16 or bfloat16, got int16"):
        normops.batch_norm(x.to(torch.int16))
    with pytest.raises(TypeError, match="backend 'cpu' works on numpy arrays, got a torch.Tensor"):
        normops.batch_norm(x, backend="cpu")
    # forms of tensor that hold no plain values
    with pytest.raises(TypeError, match="gamma is a tensor on the meta device, which holds no values"):
        normops.batch_norm(x, w.to("meta"), b, rm, rv)
    with pytest.raises(TypeError, match="x is a tensor on the meta device"):
        normops.batch_norm(x.to("meta"), None, None, rm.to("meta"), rv.to("meta"), training=False)
    with pytest.raises(TypeError, match="x is a tensor of layout torch.sparse_coo; normops takes dense arrays"):
        normops.batch_norm(x.to_sparse())
    with pytest.raises(TypeError, match="saved.mean must be a torch array as the forward op returned it"):
        normops.batch_norm_backward(dy, x, normops.batch_norm(x.numpy())[1])


def test_lazily_negated_views_are_read_and_written_as_their_values():
    """Views with the neg bit set (x.conj().imag of a complex tensor) hold their values
    negated lazily; the kernels see the values, and running statistics are written back."""
    x, dy, w, b, rm, rv = tensors("NCHW", torch.float64)
    negated = lambda t: torch.complex(torch.zeros_like(t), -t).conj().imag   # noqa: E731
    nx, nrm = negated(x), negated(rm)
    assert nx.is_neg() and nrm.is_neg()
    rm_plain = rm.clone()
    y, saved = normops.batch_norm(nx, w, b, nrm, rv.clone())
    y_plain, _ = normops.batch_norm(x, w, b, rm_plain, rv.clone())
    torch.testing.assert_close(y, y_plain, rtol=0, atol=0)
    torch.testing.assert_close(nrm, rm_plain, rtol=0, atol=0)


def negated_view(values):
    """A tensor holding ``values`` as a lazily negated view (its neg bit set)."""
    base = torch.zeros(len(values), dtype=torch.complex128)
    base.imag[:] = -torch.tensor(values, dtype=torch.float64)
    view = base.conj().imag
    assert view.is_neg()
    return view


def test_running_statistics_in_copies_go_back_for_any_training_flag():
    x = tensors("NCHW", torch.float64)[0]
    for flag in (True, np.bool_(True)):
        rm, rv = negated_view([0.0] * C), negated_view([1.0] * C)
        normops.batch_norm(x, None, None, rm, rv, training=flag)
        assert not torch.equal(rm, torch.zeros(C)) and not torch.equal(rv, torch.ones(C))


def test_lazily_negated_views_are_checked_for_shared_memory():
    base = torch.randn(4, C, 5, dtype=torch.complex128)
    x = base.imag
    with pytest.raises(ValueError, match="running_mean shares memory with x"):
        normops.batch_norm(x, None, None, base.conj().imag[0, :, 0], torch.ones(C, dtype=torch.float64))
    both = negated_view([1.0] * C)
    with pytest.raises(ValueError, match="running_mean shares memory with running_var"):
        normops.batch_norm(x, None, None, both, both)
    assert torch.equal(base.imag, x)


def test_autograd_sees_the_running_statistics_written():
    """They are written through NumPy views; torch's version counter still moves, so a
    graph that saved them refuses to backpropagate through stale values."""
    x = tensors("NCHW", torch.float32)[0]
    w0 = torch.ones(C, requires_grad=True)
    running_var = w0.clone()
    loss = (running_var * running_var).sum()
    normops.batch_norm(x, None, None, torch.zeros(C), running_var)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("path", ["torch", "array-api"])
def test_inference_tensors_are_not_updated_outside_inference_mode(path):
    x = tensors("NCHW", torch.float32)[0]
    with torch.inference_mode():
        rm, rv = torch.zeros(C), torch.ones(C)
    with pytest.raises(ValueError, match=r"running_mean cannot be written in place \(an inference tensor"):
        normops.batch_norm(x, None, None, rm, rv, backend=path)
    y, _ = normops.batch_norm(x, None, None, rm, rv, training=False, backend=path)   # only read
    with torch.inference_mode():
        normops.batch_norm(x, None, None, rm, rv, backend=path)   # inside it: updated
    assert not torch.equal(rm, torch.zeros(C))


def test_the_array_api_path_records_no_graph():
    x, dy, w, b, rm, rv = tensors("NCHW", torch.float32)
    x.requires_grad_()
    w, rm = torch.nn.Parameter(w), torch.nn.Parameter(rm)
    y, saved = normops.batch_norm(x, w, b, rm, rv, backend="array-api")
    dx, dgamma, _ = normops.batch_norm_backward(dy, x, saved, w, backend="array-api")
    assert not (y.requires_grad or dx.requires_grad or dgamma.requires_grad or saved.mean.requires_grad)


@pytest.mark.parametrize("path", ["torch", "array-api"])
def test_eval_gradients_stay_finite_where_x_is_not(path):
    x = tensors("NCHW", torch.float32)[0]
    _, saved = normops.batch_norm(x, None, None, torch.zeros(C), torch.ones(C), training=False)
    x_inf = x.clone()
    x_inf[0, 0, 0, 0], x_inf[1, 1, 0, 0] = float("inf"), float("nan")
    dx = normops.batch_norm_backward(torch.ones_like(x), x_inf, saved, backend=path)[0]
    assert torch.isfinite(dx).all()
    torch.testing.assert_close(dx, torch.full_like(x, 1 / np.sqrt(1 + 1e-5)))


def test_arrays_of_another_library_are_refused_both_ways():
    x, dy, w, b, rm, rv = tensors("NCHW", torch.float32)
    with pytest.raises(TypeError, match="gamma is a torch.Tensor but x is a numpy.ndarray"):
        normops.batch_norm(x.numpy(), w, None)
    with pytest.raises(TypeError, match="dy is a torch.Tensor but x is a numpy.ndarray"):
        normops.batch_norm_backward(dy, x.numpy(), normops.batch_norm(x.numpy())[1])
    with pytest.raises(TypeError, match="dy is a numpy.ndarray but x is a torch array"):
        normops.batch_norm_backward(dy.numpy(), x, normops.batch_norm(x)[1], backend="array-api")


def test_saved_fields_of_a_dtype_numpy_lacks_are_taken_as_floats():
    x, dy, w, b, rm, rs = tensors("NCHW", torch.float32)
    _, saved = normops.batch_renorm(x, w, b, rm, rs)
    narrow = normops.BatchRenormSaved(**{**saved.__dict__, "r": saved.r.bfloat16()})
    for path in ("torch", "array-api"):
        dx = normops.batch_renorm_backward(dy, x, narrow, w, backend=path)[0]
        expected = normops.batch_renorm_backward(
            dy, x, normops.BatchRenormSaved(**{**saved.__dict__, "r": saved.r.bfloat16().double()}),
            w, backend=path)[0]
        torch.testing.assert_close(dx, expected)
