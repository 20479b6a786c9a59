"""BN forward, backward and running statistics against torch.nn.functional.batch_norm and
autograd. Skipped when PyTorch is missing, unless NORMOPS_REQUIRE_TORCH is set (CI sets
it, so there the cross-check always runs)."""
import numpy as np
import pytest

import normops
from optional_torch import import_torch

torch = import_torch("this cross-check")
import torch.nn.functional as F  # noqa: E402

# rtol = atol, as the cross-check's acceptance asks
TOL = {np.float32: 1e-5, np.float64: 1e-10}

# (name, normops shape, channel axis, permutation taking the normops array to torch's NC...)
LAYOUTS = [
    ("NC", (64, 16), 1, (0, 1)),
    ("NCHW", (8, 6, 5, 7), 1, (0, 1, 2, 3)),
    ("NHWC", (8, 5, 7, 6), -1, (0, 3, 1, 2)),  # torch sees a channels_last NCHW tensor
    ("NCDHW", (4, 3, 2, 5, 6), 1, (0, 1, 2, 3, 4)),
]


def inputs(shape, axis, dtype, seed=0):
    rng = np.random.default_rng(seed)
    channels = shape[axis]
    bshape = [1] * len(shape)
    bshape[axis] = channels
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, bshape) + rng.normal(0, 3, bshape)
    arrays = dict(x=x, dy=rng.normal(size=shape), gamma=rng.uniform(0.5, 2.0, channels),
                  beta=rng.normal(size=channels), running_mean=rng.normal(size=channels),
                  running_var=rng.uniform(0.5, 2.0, channels))
    return {k: v.astype(dtype) for k, v in arrays.items()}


def torch_step(a, perm, training, momentum, eps, affine):
    inverse = np.argsort(perm)
    x = torch.from_numpy(a["x"]).permute(*perm).requires_grad_(True)
    weight = torch.from_numpy(a["gamma"]).requires_grad_(True) if affine else None
    bias = torch.from_numpy(a["beta"]).requires_grad_(True) if affine else None
    rm, rv = torch.from_numpy(a["running_mean"].copy()), torch.from_numpy(a["running_var"].copy())
    y = F.batch_norm(x, rm, rv, weight, bias, training=training, momentum=momentum, eps=eps)
    y.backward(torch.from_numpy(a["dy"]).permute(*perm))
    out = dict(y=y.detach().permute(*inverse).numpy(), dx=x.grad.permute(*inverse).numpy(),
               running_mean=rm.numpy(), running_var=rv.numpy())
    if affine:
        out.update(dgamma=weight.grad.numpy(), dbeta=bias.grad.numpy())
    return out


def normops_step(a, axis, training, momentum, eps, affine, backend):
    gamma, beta = (a["gamma"], a["beta"]) if affine else (None, None)
    rm, rv = a["running_mean"].copy(), a["running_var"].copy()
    y, saved = normops.batch_norm(a["x"], gamma, beta, rm, rv, training=training,
                                  momentum=momentum, eps=eps, axis=axis, backend=backend)
    dx, dgamma, dbeta = normops.batch_norm_backward(a["dy"], a["x"], saved, gamma,
                                                    backend=backend)
    return dict(y=y, dx=dx, running_mean=rm, running_var=rv, dgamma=dgamma, dbeta=dbeta)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_matches_torch_batch_norm(backend, dtype, layout, training, affine):
    _, shape, axis, perm = layout
    a = inputs(shape, axis, dtype)
    expected = torch_step(a, perm, training, momentum=0.1, eps=1e-5, affine=affine)
    actual = normops_step(a, axis, training, momentum=0.1, eps=1e-5, affine=affine,
                          backend=backend)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        np.testing.assert_allclose(actual[key], value, rtol=TOL[dtype], atol=TOL[dtype],
                                   err_msg=f"{key} differs from torch")


def test_running_statistics_follow_torch_over_many_steps(backend):
    # momentum=0.3 over 20 steps: any slip in the update formula compounds
    rm_t, rv_t = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    rm, rv = np.zeros(4), np.ones(4)
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.normal(2.0, 3.0, (16, 4, 3, 3))
        F.batch_norm(torch.from_numpy(x), rm_t, rv_t, training=True, momentum=0.3)
        normops.batch_norm(x, None, None, rm, rv, momentum=0.3, backend=backend)
    np.testing.assert_allclose(rm, rm_t.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rv, rv_t.numpy(), rtol=1e-10, atol=1e-10)


def torch_batch_renorm(a, perm, training, rmax, dmax, momentum, eps):
    """BRN written in torch from the paper, r and d detached; autograd gives the gradients."""
    inverse = np.argsort(perm)
    x = torch.from_numpy(a["x"]).permute(*perm).requires_grad_(True)
    weight = torch.from_numpy(a["gamma"]).requires_grad_(True)
    bias = torch.from_numpy(a["beta"]).requires_grad_(True)
    mu, sigma = torch.from_numpy(a["running_mean"]), torch.from_numpy(a["running_std"])
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)

    def bc(v):
        return v.reshape(shape)

    if training:
        mu_b = x.mean(dim=dims)
        sigma_b = torch.sqrt(x.var(dim=dims, unbiased=False) + eps)
        r = (sigma_b / sigma).clamp(1 / rmax, rmax).detach()
        d = ((mu_b - mu) / sigma).clamp(-dmax, dmax).detach()
        y = bc(weight) * ((x - bc(mu_b)) / bc(sigma_b) * bc(r) + bc(d)) + bc(bias)
        new_mu = mu + momentum * (mu_b.detach() - mu)
        new_sigma = sigma + momentum * (sigma_b.detach() - sigma)
    else:
        y = bc(weight) * (x - bc(mu)) / bc(sigma) + bc(bias)
        new_mu, new_sigma = mu, sigma
    y.backward(torch.from_numpy(a["dy"]).permute(*perm))
    return dict(y=y.detach().permute(*inverse).numpy(), dx=x.grad.permute(*inverse).numpy(),
                dgamma=weight.grad.numpy(), dbeta=bias.grad.numpy(),
                running_mean=new_mu.numpy(), running_std=new_sigma.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("clip", [(3.0, 5.0), (1.1, 0.2)], ids=["wide", "tight"])
def test_batch_renorm_matches_a_torch_transcription(backend, dtype, layout, training, clip):
    _, shape, axis, perm = layout
    rmax, dmax = clip
    a = inputs(shape, axis, dtype)
    a["running_std"] = np.sqrt(a.pop("running_var"))
    expected = torch_batch_renorm(a, perm, training, rmax, dmax, momentum=0.1, eps=1e-5)
    rm, rs = a["running_mean"].copy(), a["running_std"].copy()
    y, saved = normops.batch_renorm(a["x"], a["gamma"], a["beta"], rm, rs, training=training,
                                    rmax=rmax, dmax=dmax, momentum=0.1, eps=1e-5, axis=axis,
                                    backend=backend)
    dx, dgamma, dbeta = normops.batch_renorm_backward(a["dy"], a["x"], saved, a["gamma"],
                                                      backend=backend)
    actual = dict(y=y, dx=dx, dgamma=dgamma, dbeta=dbeta, running_mean=rm, running_std=rs)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        np.testing.assert_allclose(actual[key], value, rtol=TOL[dtype], atol=TOL[dtype],
                                   err_msg=f"{key} differs from torch")
