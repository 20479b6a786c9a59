"""Built-in backends, registered by name and imported only when first used. (The
package is private: users reach backends through the registry, and the public name
``normops.backends`` is the listing function.)"""
from .._registry import register_backend

# (name, "module:attr", array library it is picked for automatically, priority, install hint)
BUILTINS = (
    ("reference", "normops._backends.reference:ReferenceBackend", "numpy", 0, None),
    ("cpu", "normops._backends.cpu:CpuBackend", "numpy", 10,
     "the cpu backend's compiled extension is missing or failed to load: reinstall normops "
     "from source with a C compiler (pip install --force-reinstall --no-deps .)"),
)


def register_builtins():
    for name, target, array_module, priority, hint in BUILTINS:
        register_backend(name, target, array_module=array_module, priority=priority,
                         install_hint=hint, _source="built-in")
