"""A deliberately broken backend, there to show ``python -m normops check`` catching a bug.

Do not copy it: it is :class:`NumpyKernels` with the sign of the ``q[c] * x`` term of
``grad_input`` flipped. ``q`` is zero in eval mode, and the forward kernels are
untouched, so forward outputs and eval-mode gradients stay right; only training-mode
gradients are wrong, which the kit's finite-difference and reference checks report.
"""
from . import NumpyKernels

__all__ = ["SignErrorKernels"]


class SignErrorKernels(NumpyKernels):
    def grad_input(self, dy, x, p, q, s):
        return super().grad_input(dy, x, p, -q, s)  # the bug: should be +q[c] * x
