"""Data-parallel training of the digits MLP with synchronized BatchNorm, checked against
training in one process: ``python -m normops demo --ranks N`` runs this module on N ranks
(``mpiexec -n N python -m normops.demo.data_parallel``, which works directly too).

Every rank builds the same float64 MLP (Linear -> BatchNorm(comm=comm) -> ReLU ... ->
Linear; one seed, so one init) and draws the same batch order. Each step's global batch
is split unevenly over the ranks (rank r gets a share proportional to r + 1). A rank's
loss is the sum of its examples' losses divided by the global batch size, so the ranks'
gradients add up to the gradient of the global batch's mean loss. After the backward:

* the Linear gradients are all-gathered and summed in rank order (every rank gets
  bitwise the same sum, whatever MPI's reduction algorithm);
* the BatchNorm gradients (gamma, beta) are left as they are: normops's synchronized
  backward returns them already summed over the ranks. Summing them again would scale
  them by the number of ranks (PyTorch's SyncBatchNorm differs here: there the data-
  parallel wrapper reduces them like any other parameter).

Rank 0 also trains the same network in one process (BatchNorm without comm) on the whole
global batch, step for step, and compares every parameter and running statistic. In
float64 they agree to rounding (far below TOLERANCE); the command exits 1 otherwise.
"""
import argparse
import hashlib
import importlib.util
import sys
import time

import numpy as np

import normops
from normops._text import table

from .. import _mpirun
from .data import INSTALL_HINT, iid_batches, load_digits
from .nn import Linear, evaluate, mlp, softmax_cross_entropy, train_step

TOLERANCE = 1e-9
STEPS = 50
BATCH = 64
LR = 0.1
HIDDEN = (64, 16)
MOMENTUM = 0.1
TIMEOUT_S = 300   # of the whole mpiexec run, started to finished


def launch(ranks, *, timeout=TIMEOUT_S, args=()):
    """``python -m normops demo --ranks N``: this module on ``ranks`` processes under
    mpiexec; returns its exit status (0: data parallel matches one process). ImportError
    without scikit-learn, _mpirun.LaunchError without mpi4py or mpiexec, or on timeout."""
    if importlib.util.find_spec("sklearn") is None:
        raise ImportError(f"scikit-learn is needed for the digits data of python -m normops demo "
                          f"and is not installed: {INSTALL_HINT}")
    return _mpirun.run(ranks, __name__, ["--ranks", ranks, *args], timeout=timeout)


def uneven_counts(total, ranks):
    """Examples per rank: shares proportional to rank + 1 (for 2 ranks 21 + 43 of 64)."""
    weights = np.arange(1, ranks + 1)
    cuts = np.rint(total * np.cumsum(weights) / weights.sum()).astype(int)
    return np.diff(np.concatenate([[0], cuts])).tolist()


def build(sizes, seed, comm):
    """The MLP in float64 with BatchNorm(comm=comm); the init depends on the seed only."""
    norm = lambda c: normops.BatchNorm(c, momentum=MOMENTUM, dtype=np.float64, comm=comm)  # noqa: E731
    return mlp(sizes, rng=np.random.default_rng([seed, 0]), norm=norm, dtype=np.float64)


def summed_in_rank_order(parts):
    total = parts[0]
    for part in parts[1:]:
        total = [{k: acc[k] + g[k] for k in acc} for acc, g in zip(total, part)]
    return total


def dp_step(net, comm, x, labels, global_size, lr, reduce_bn=False):
    """One data-parallel SGD step on this rank's part (x, labels) of a global batch of
    ``global_size`` examples; returns the global batch's mean loss (the same on every rank).
    ``reduce_bn``: also sum BatchNorm's gradients over the ranks, the mistake this demo
    guards against (its negative control)."""
    logits = net(x)
    if len(labels):
        mean_loss, dlogits = softmax_cross_entropy(logits, labels)   # dlogits: grad / len(labels)
        loss_sum, dlogits = mean_loss * len(labels), dlogits * (len(labels) / global_size)
    else:   # a rank may hold no example of a step
        loss_sum, dlogits = 0.0, np.zeros_like(logits)
    net.backward(dlogits)
    grads = net.layer_grads()
    reduced = (Linear, normops.BatchNorm) if reduce_bn else Linear
    linear = [i for i, layer in enumerate(net.layers) if isinstance(layer, reduced)]
    parts = comm.allgather(([grads[i] for i in linear], loss_sum))
    for i, summed in zip(linear, summed_in_rank_order([p[0] for p in parts])):
        grads[i] = summed
    # BatchNorm's grads are global already: they go to the step as they are
    net.sgd_step(lr, grads)
    return sum(p[1] for p in parts) / global_size


def state(net):
    """[(layer index, layer name, parameter name, array)] of every parameter and running
    statistic, in layer order."""
    out = []
    for i, layer in enumerate(net.layers):
        for name, value in layer.params().items():
            out.append((i, type(layer).__name__, name, value))
        if isinstance(layer, normops.BatchNorm):
            out += [(i, "BatchNorm", "running_mean", layer.running_mean),
                    (i, "BatchNorm", "running_var", layer.running_var)]
    return out


def fingerprint(net):
    h = hashlib.blake2b(digest_size=8)
    for *_, value in state(net):
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def add_arguments(parser):
    parser.add_argument("--steps", type=int, default=STEPS, help=f"SGD steps (default {STEPS})")
    parser.add_argument("--batch-size", type=int, default=BATCH,
                        help=f"global batch size, split unevenly over the ranks (default {BATCH})")
    parser.add_argument("--seed", type=int, default=0, help="init and batch order (default 0)")
    parser.add_argument("--reduce-bn-grads", action="store_true",
                        help="negative control: sum BatchNorm's gradients over the ranks too (as "
                             "for PyTorch's SyncBatchNorm), which normops has summed already; "
                             "the check must then fail")
    parser.add_argument("--ranks", type=int,
                        help="the number of ranks expected (checked against the communicator, "
                             "to catch an mpiexec of another MPI than mpi4py's)")
    return parser


def train(comm, args, log):
    rank, size = comm.Get_rank(), comm.Get_size()
    split = load_digits(dtype=np.float64) if rank == 0 else None   # scikit-learn on rank 0 only
    split = comm.bcast(split, root=0)
    sizes = (split.num_features, *HIDDEN, split.num_classes)
    counts = uneven_counts(args.batch_size, size)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    mine = slice(offsets[rank], offsets[rank + 1])
    if rank == 0:
        log(f"data-parallel training on {size} rank{'s' if size > 1 else ''} vs one process, float64")
        log(f"digits: {len(split.y_train)} training examples; MLP {'-'.join(map(str, sizes))}: "
            f"Linear -> BatchNorm(comm=comm) -> ReLU, softmax cross-entropy; SGD lr {LR:g}, "
            f"BN momentum {MOMENTUM:g}, {args.steps} steps, seed {args.seed}")
        log(f"global batch {args.batch_size} per step, split unevenly: "
            + " + ".join(f"{c} (rank {r})" for r, c in enumerate(counts)))
        log("each rank: loss = its examples' summed loss / global batch; Linear gradients "
            "all-gathered and summed in rank order; BatchNorm gamma/beta gradients used as "
            "normops returns them (already summed over the ranks)")
        if args.reduce_bn_grads:
            log("NEGATIVE CONTROL (--reduce-bn-grads): BatchNorm gradients summed over the ranks "
                "a second time; the check must fail")
        log("rank 0 also trains the same network (same init, same batches) in one process "
            "with BatchNorm(comm=None)")
    net = build(sizes, args.seed, comm)
    reference = build(sizes, args.seed, None) if rank == 0 else None
    batches = iid_batches(len(split.y_train), args.batch_size, np.random.default_rng([args.seed, 1]))
    losses, ref_losses = [], []
    dp_seconds = ref_seconds = 0.0
    for _ in range(args.steps):
        idx = next(batches)
        start = time.perf_counter()
        losses.append(dp_step(net, comm, split.x_train[idx[mine]], split.y_train[idx[mine]],
                              len(idx), LR, args.reduce_bn_grads))
        dp_seconds += time.perf_counter() - start
        if reference is not None:
            start = time.perf_counter()
            ref_losses.append(train_step(reference, split.x_train[idx], split.y_train[idx], LR))
            ref_seconds += time.perf_counter() - start
    # eval mode: every rank normalizes with the same running statistics
    accuracy = evaluate(net, split.x_test, split.y_test)[1]
    prints = comm.allgather(fingerprint(net))
    identical = all(p == prints[0] for p in prints)
    if rank != 0:
        return identical
    rows, worst = [], 0.0
    for (i, kind, name, ours), (*_, theirs) in zip(state(net), state(reference)):
        diff = float(np.max(np.abs(ours - theirs)))
        worst = max(worst, diff)
        rows.append((i, kind, name, "x".join(map(str, ours.shape)), f"{diff:.1e}"))
    loss_diff = max(abs(a - b) for a, b in zip(losses, ref_losses))
    ref_accuracy = evaluate(reference, split.x_test, split.y_test)[1]
    log("")
    log(table(("layer", "type", "parameter", "shape", "max |data parallel - one process|"), rows))
    log("")
    log(f"loss (global batch mean): step 1 {losses[0]:.4f}, step {args.steps} {losses[-1]:.4f} "
        f"(one process: {ref_losses[0]:.4f}, {ref_losses[-1]:.4f}); largest difference over "
        f"the steps {loss_diff:.1e}")
    log(f"test accuracy (eval mode): data parallel {100 * accuracy:.1f}%, one process "
        f"{100 * ref_accuracy:.1f}%")
    log(f"time in the training steps: data parallel {dp_seconds:.2f} s, one process "
        f"{ref_seconds:.2f} s (on rank 0)")
    log(f"replicas bitwise identical on every rank: {'yes' if identical else 'NO'}")
    match = identical and worst <= TOLERANCE
    log(f"largest parameter difference {worst:.1e} (tolerance {TOLERANCE:g}): "
        f"{'match' if match else 'MISMATCH'}")
    return match


def main(argv=None):
    args = add_arguments(argparse.ArgumentParser(
        prog="mpiexec -n N python -m normops.demo.data_parallel",
        description=__doc__.split("\n\n")[0])).parse_args(argv)
    started = time.perf_counter()

    def body(comm):
        match = train(comm, args, log=lambda line: print(line, flush=True))
        match = comm.bcast(match, root=0)
        if comm.Get_rank() == 0:
            print(f"({time.perf_counter() - started:.1f} s)", flush=True)
        return 0 if match else 1
    return _mpirun.rank_main("normops.demo.data_parallel", args.ranks, body)


if __name__ == "__main__":
    sys.exit(main())
