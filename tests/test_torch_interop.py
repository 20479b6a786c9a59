"""State dicts shared with torch.nn.BatchNorm*d: a trained torch layer loads into normops
and gives the same eval outputs, and the other way round; training steps, running
statistics (momentum=None included) and num_batches_tracked agree step by step."""
import numpy as np
import pytest

import normops
from optional_torch import import_torch

torch = import_torch("the PyTorch interop tests")

# (torch class, input shape): 1d on (N, C) and (N, C, L), 2d, 3d
KINDS = [
    (torch.nn.BatchNorm1d, (16, 5)),
    (torch.nn.BatchNorm1d, (8, 5, 7)),
    (torch.nn.BatchNorm2d, (4, 5, 6, 3)),
    (torch.nn.BatchNorm3d, (2, 5, 3, 4, 2)),
]
IDS = ["1d-NC", "1d-NCL", "2d", "3d"]


def data(shape, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.normal(2.0, 3.0, shape) * rng.uniform(0.5, 2, (1, shape[1]) + (1,) * (len(shape) - 2))
            ).astype(dtype)


def train_torch(kind, shape, steps, **options):
    layer = kind(shape[1], **options)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.normal_()
    for step in range(steps):
        layer(torch.from_numpy(data(shape, step)))
    return layer.eval()


@pytest.mark.parametrize("kind, shape", KINDS, ids=IDS)
def test_torch_state_loads_and_eval_outputs_match(kind, shape):
    torch.manual_seed(0)
    trained = train_torch(kind, shape, steps=6, momentum=0.2, eps=1e-3)
    layer = normops.BatchNorm(shape[1], momentum=0.2, eps=1e-3)
    assert layer.load_state_dict(trained.state_dict()) == ([], [])
    assert layer.num_batches_tracked == 6
    x = data(shape, 100)
    with torch.no_grad():
        expected = trained(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(layer.eval()(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
@pytest.mark.parametrize("kind, shape", KINDS, ids=IDS)
def test_training_steps_agree(kind, shape, momentum):
    ours = normops.BatchNorm(shape[1], momentum=momentum, dtype=np.float64)
    theirs = kind(shape[1], momentum=momentum, dtype=torch.float64)
    rng = np.random.default_rng(5)
    for step in range(5):
        x = data(shape, step, np.float64)
        dy = rng.normal(size=shape)
        xt = torch.from_numpy(x).requires_grad_()
        yt = theirs(xt)
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(ours(x), yt.detach().numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ours.backward(dy), xt.grad.numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(ours.grads()["gamma"], theirs.weight.grad.numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ours.grads()["beta"], theirs.bias.grad.numpy(), rtol=1e-9, atol=1e-9)
        theirs.zero_grad()
    state = theirs.state_dict()
    np.testing.assert_allclose(ours.running_mean, state["running_mean"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var, state["running_var"].numpy(), rtol=1e-12)
    assert ours.num_batches_tracked == state["num_batches_tracked"].item() == 5


@pytest.mark.parametrize("kind, shape", KINDS, ids=IDS)
def test_normops_state_loads_into_torch(kind, shape):
    layer = normops.BatchNorm(shape[1], momentum=0.3)
    layer.gamma[...] = np.linspace(0.5, 2.0, shape[1])
    for step in range(4):
        layer(data(shape, step))
    theirs = kind(shape[1])
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    assert theirs.num_batches_tracked.dtype == torch.int64 and theirs.num_batches_tracked.item() == 4
    x = data(shape, 50)
    with torch.no_grad():
        expected = theirs.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(layer.eval()(x), expected, rtol=1e-5, atol=1e-5)


def test_without_affine_parameters():
    trained = train_torch(torch.nn.BatchNorm2d, (4, 3, 5, 5), steps=0, affine=True)
    plain = torch.nn.BatchNorm2d(3, affine=False)
    for step in range(3):
        plain(torch.from_numpy(data((4, 3, 5, 5), step)))
    layer = normops.BatchNorm(3, affine=False)
    layer.load_state_dict(plain.state_dict())
    x = data((4, 3, 5, 5), 9)
    with torch.no_grad():
        np.testing.assert_allclose(layer.eval()(x), plain.eval()(torch.from_numpy(x)).numpy(),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match=r"unexpected keys \['weight', 'bias'\]"):
        layer.load_state_dict(trained.state_dict())


def test_batch_renorm_exports_a_torch_batch_norm_state():
    brn = normops.BatchRenorm(5, momentum=0.2, eps=1e-3)
    brn.gamma[...] = np.linspace(0.5, 2.0, 5)
    for step in range(8):
        brn(data((4, 5, 6, 3), step))
    theirs = torch.nn.BatchNorm2d(5, eps=1e-3)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in brn.batch_norm_state_dict().items()})
    x = data((4, 5, 6, 3), 77)
    with torch.no_grad():
        expected = theirs.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(brn.eval()(x), expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_state_loads_widened():
    theirs = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor([0.5, 1.25, 2.0]))
        theirs.running_var.copy_(torch.tensor([0.25, 4.0, 1.5]))
    layer = normops.BatchNorm(3)
    layer.load_state_dict(theirs.to(torch.bfloat16).state_dict())   # NumPy has no bfloat16
    np.testing.assert_array_equal(layer.gamma, [0.5, 1.25, 2.0])     # exact in bfloat16
    np.testing.assert_array_equal(layer.running_var, [0.25, 4.0, 1.5])
