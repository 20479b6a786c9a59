"""Built-in backends, registered by name and imported only when first used. (The
package is private: users reach backends through the registry, and the public name
``normops.backends`` is the listing function.)"""
from typing import Optional

from .._arrays import COMPAT_INSTALL
from .._registry import ANY_LIBRARY, _register

# (name, "module:attr", array library it is picked for automatically, priority, install hint)
BUILTINS: tuple[tuple[str, str, str, int, Optional[str]], ...] = (
    ("reference", "normops._backends.reference:ReferenceBackend", "numpy", 0, None),
    ("cpu", "normops._backends.cpu:CpuBackend", "numpy", 10,
     "the cpu backend's compiled extension is missing or failed to load: reinstall normops "
     "from source with a C compiler (pip install --force-reinstall --no-deps .)"),
    ("array-api", "normops._backends.array_api:ArrayApiBackend", ANY_LIBRARY, 0,
     COMPAT_INSTALL),
    ("torch", "normops._backends.torch:TorchBackend", "torch", 10,
     "pip install 'normops[torch]' (PyTorch and array-api-compat)"),
    ("cupy", "normops._backends.cupy:load", "cupy", 10,
     "pip install 'normops[cupy]' (CuPy for CUDA 12 and array-api-compat; for another CUDA, "
     "the cupy-cudaXXx wheel that matches it) on a machine with an NVIDIA GPU"),
)


def register_builtins() -> None:
    """Register normops' own backends (listed with the source "built-in")."""
    for name, target, array_module, priority, hint in BUILTINS:
        _register(name, target, array_module=array_module, priority=priority,
                  install_hint=hint, source="built-in")
