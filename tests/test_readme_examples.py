"""The README's examples run as written and do what their comments say."""
import numpy as np

from readme_blocks import run_readme_block


def test_example_block():
    names = run_readme_block("test: example")
    assert names["y"].shape == names["x"].shape and names["dx"].dtype == np.float32
    assert np.all(names["running_mean"] != 0)       # updated in place by the training calls


def test_layers_block():
    names = run_readme_block("test: layers")
    bn, brn = names["bn"], names["brn"]
    assert bn.num_batches_tracked == 1 and not bn.training
    # dy = 1 gives dbeta = m = 32 * 8 * 8 per channel, and the SGD step moved beta by 0.1 of it
    np.testing.assert_allclose(bn.beta, -0.1 * 32 * 8 * 8, rtol=1e-6)
    assert brn.clips(0) == (1.0, 0.0) and brn.clips(40000) == (3.0, 5.0)
