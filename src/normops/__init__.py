"""Batch Normalization and Batch Renormalization, forward and backward, with
running-statistics updates, behind one runtime backend registry."""
from ._backends import register_builtins as _register_builtins
from ._registry import (
    BackendError,
    BackendInfo,
    BackendUnavailableError,
    InvalidBackendError,
    UnknownBackendError,
    backends,
    get_backend,
    register_backend,
    set_backend,
    unregister_backend,
    use_backend,
)
from ._config import (get_num_threads, max_threads, set_num_threads, set_output_cache,
                      show_config)
from ._saved import BatchNormSaved, BatchRenormSaved
from ._version import __version__
from .ops import batch_norm, batch_norm_backward, batch_renorm, batch_renorm_backward
from . import schedules
from .layers import BatchNorm, BatchRenorm
from ._population import recompute_population_stats
from ._folding import fold_into_conv, fold_into_linear

_register_builtins()

__all__ = [
    "BackendError", "BackendInfo", "backends", "BackendUnavailableError", "batch_norm",
    "batch_norm_backward", "batch_renorm", "batch_renorm_backward", "BatchNorm",
    "BatchNormSaved", "BatchRenorm", "BatchRenormSaved", "fold_into_conv",
    "fold_into_linear", "get_backend", "get_num_threads", "InvalidBackendError",
    "max_threads", "recompute_population_stats", "register_backend", "schedules", "set_backend",
    "set_num_threads", "set_output_cache", "show_config", "UnknownBackendError",
    "unregister_backend", "use_backend", "__version__",
]
