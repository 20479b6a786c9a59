"""Train a small MLP with normops.BatchNorm on scikit-learn's handwritten digits.

    pip install "normops[demo]"
    python examples/digits_mlp.py            # BatchNorm
    python examples/digits_mlp.py --renorm   # BatchRenorm with the paper's rmax/dmax warm-up

Linear -> BatchNorm -> ReLU twice, then a Linear for the 10 logits; plain SGD. The
network pieces (Linear, ReLU, Sequential, the loss) come from normops.demo, the code
behind ``python -m normops demo``; they share the layers' convention of
``forward`` / ``backward`` / ``params()`` / ``grads()``.
"""
import argparse

import numpy as np

import normops
from normops.demo.data import iid_batches, load_digits
from normops.demo.experiments import scaled_paper_schedule
from normops.demo.nn import Linear, ReLU, Sequential, evaluate, softmax_cross_entropy


def build(rng, renorm=False, steps=600):
    def norm(channels):
        if renorm:
            # normops.schedules.renorm_paper's step counts scaled to this run: plain BN
            # (rmax 1, dmax 0) for the first 1/32 of the steps, then relaxed to 3 and 5
            schedule = scaled_paper_schedule(steps)
            return normops.BatchRenorm(channels, **schedule._asdict())
        return normops.BatchNorm(channels)   # momentum 0.1, eps 1e-5, float32

    return Sequential(
        Linear(64, 64, rng=rng), norm(64), ReLU(),   # He-initialized weights
        Linear(64, 16, rng=rng), norm(16), ReLU(),
        Linear(16, 10, rng=rng),
    )


def main(steps=600, lr=0.1, batch_size=64, renorm=False, seed=0):
    data = load_digits()                        # 8x8 pixels in [0, 1], float32
    rng = np.random.default_rng(seed)
    net = build(rng, renorm, steps)
    print(net)
    batches = iid_batches(len(data.y_train), batch_size, rng)
    for step in range(1, steps + 1):
        idx = next(batches)
        logits = net(data.x_train[idx])         # training mode: each batch's statistics
        loss, dlogits = softmax_cross_entropy(logits, data.y_train[idx])
        net.backward(dlogits)                   # every layer keeps the grads of its params
        net.sgd_step(lr)                        # p -= lr * grads()[name] for every layer
        if step % 100 == 0:
            # eval mode normalizes with the running statistics; evaluate() switches to
            # it (net.eval()) and back (net.train())
            val_loss, val_acc = evaluate(net, data.x_val, data.y_val)
            print(f"step {step}: batch loss {loss:.3f}, validation loss {val_loss:.3f}, "
                  f"accuracy {100 * val_acc:.1f}%")
    bn = net.layers[1]
    print(f"first norm layer after {bn.num_batches_tracked} batches: running mean "
          f"{np.round(bn.running_mean[:4], 2)}..., gamma {np.round(bn.gamma[:4], 2)}...")
    test_loss, test_acc = evaluate(net, data.x_test, data.y_test)
    print(f"test: loss {test_loss:.3f}, accuracy {100 * test_acc:.1f}%")
    return test_acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--renorm", action="store_true", help="BatchRenorm instead of BatchNorm")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    main(steps=args.steps, renorm=args.renorm)
