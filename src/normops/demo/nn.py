"""NumPy network pieces that work with normops's BatchNorm / BatchRenorm layers.

Every piece has ``forward(x)`` (also ``piece(x)``), ``backward(dy) -> dx``, ``params()``
and ``grads()`` (dicts with the same keys) and ``train(mode)`` / ``eval()``, the
convention of normops's layers, so one SGD loop updates a whole network.
"""
import numpy as np


class _Piece:
    """train/eval mode and the saved-gradients bookkeeping the pieces share."""

    training = True
    _grads: dict[str, np.ndarray] | None = None

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def params(self):
        return {}

    def grads(self):
        if self._grads is None:
            raise RuntimeError(f"{type(self).__name__}: no gradients yet; call backward(dy) after forward(x)")
        return dict(self._grads)

    def __call__(self, x):
        return self.forward(x)


class Linear(_Piece):
    """y = x @ weight + bias, weight of shape (in, out) drawn with He (MSRA) init:
    normal with standard deviation sqrt(2 / in), the init for ReLU networks; bias 0."""

    def __init__(self, in_features, out_features, *, rng, bias=True, dtype=np.float32):
        std = np.sqrt(2.0 / in_features)
        self.weight = (rng.standard_normal((in_features, out_features)) * std).astype(dtype)
        self.bias = np.zeros(out_features, dtype) if bias else None
        self._x = None

    def forward(self, x):
        self._x = x
        y = x @ self.weight
        if self.bias is not None:
            y += self.bias
        return y

    def backward(self, dy):
        self._grads = {"weight": self._x.T @ dy}
        if self.bias is not None:
            self._grads["bias"] = dy.sum(axis=0)
        return dy @ self.weight.T

    def params(self):
        return {"weight": self.weight} if self.bias is None else {"weight": self.weight, "bias": self.bias}

    def __repr__(self):
        return f"Linear({self.weight.shape[0]}, {self.weight.shape[1]})"


class ReLU(_Piece):
    _grads = {}

    def forward(self, x):
        self._mask = x > 0
        return np.where(self._mask, x, x.dtype.type(0))

    def backward(self, dy):
        return np.where(self._mask, dy, dy.dtype.type(0))

    def __repr__(self):
        return "ReLU()"


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient
    with respect to the logits (of the logits' dtype)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = -float(np.mean(log_probs[rows, labels], dtype=np.float64))
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1
    grad /= len(labels)
    return loss, grad


class Sequential(_Piece):
    """Pieces (and normops layers) run in order; backward runs them in reverse."""

    def __init__(self, *layers):
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def train(self, mode=True):
        super().train(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def layer_grads(self):
        """Each layer's grads() of the last backward, in layer order."""
        return [layer.grads() for layer in self.layers]

    def sgd_step(self, lr, layer_grads=None):
        """p -= lr * g, in place, for every parameter of every layer (gradients of the last
        backward unless ``layer_grads`` gives others, as ``layer_grads()`` lists them)."""
        layer_grads = self.layer_grads() if layer_grads is None else layer_grads
        for layer, grads in zip(self.layers, layer_grads):
            for name, p in layer.params().items():
                p -= lr * grads[name]

    def __repr__(self):
        return "Sequential(" + ", ".join(map(repr, self.layers)) + ")"


def mlp(sizes, *, rng, norm=None, dtype=np.float32):
    """Linear -> [norm] -> ReLU for each hidden layer, then a Linear for the logits.
    ``sizes``: (inputs, hidden..., outputs); ``norm``: None or a callable
    ``num_features -> layer`` such as ``normops.BatchNorm``."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(n_in, n_out, rng=rng, dtype=dtype))
        if i < len(sizes) - 2:
            if norm is not None:
                layers.append(norm(n_out))
            layers.append(ReLU())
    return Sequential(*layers)


def train_step(net, x, labels, lr, *, microbatch=None):
    """One SGD step on the batch (x, labels); returns the batch's mean loss.

    ``microbatch``: normalize over microbatches of this many examples (each runs its own
    forward and backward, so BN/BRN layers see only its statistics) and step once with the
    gradient of the whole batch's mean loss, the microbatch setting of the Batch
    Renormalization paper."""
    n = len(labels)
    if microbatch is None or microbatch >= n:
        loss, dlogits = softmax_cross_entropy(net(x), labels)
        net.backward(dlogits)
        net.sgd_step(lr)
        return loss
    total_loss, summed = 0.0, None
    for start in range(0, n, microbatch):
        part = slice(start, start + microbatch)
        weight = len(labels[part]) / n
        loss, dlogits = softmax_cross_entropy(net(x[part]), labels[part])
        net.backward(dlogits)
        total_loss += weight * loss
        grads = net.layer_grads()
        if summed is None:
            summed = [{k: weight * g for k, g in lg.items()} for lg in grads]
        else:
            for acc, lg in zip(summed, grads):
                for k, g in lg.items():
                    acc[k] += weight * g
    net.sgd_step(lr, summed)
    return total_loss


def evaluate(net, x, labels):
    """(mean loss, accuracy) of the network in eval mode (BN/BRN with their running
    statistics); the network's mode is restored afterwards."""
    was_training = net.training
    net.eval()
    try:
        logits = net(x)
    finally:
        net.train(was_training)
    loss, _ = softmax_cross_entropy(logits, labels)
    return loss, float(np.mean(logits.argmax(axis=1) == labels))
