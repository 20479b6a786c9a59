"""normops: Batch Normalization and Batch Renormalization, forward and backward, with
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
from ._config import get_num_threads, set_num_threads, set_output_cache, show_config
from ._saved import BatchNormSaved, BatchRenormSaved
from ._version import __version__
from .ops import batch_norm, batch_norm_backward, batch_renorm, batch_renorm_backward

_register_builtins()

__all__ = [
    "BackendError", "BackendInfo", "BackendUnavailableError", "BatchNormSaved",
    "BatchRenormSaved", "InvalidBackendError", "UnknownBackendError", "__version__",
    "backends", "batch_norm", "batch_norm_backward", "batch_renorm", "batch_renorm_backward",
    "get_backend", "get_num_threads", "register_backend", "set_backend", "set_num_threads",
    "set_output_cache", "show_config", "unregister_backend", "use_backend",
]
