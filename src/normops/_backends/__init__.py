"""Built-in backends, registered by name and imported only when first used. (The
package is private: users reach backends through the registry, and the public name
``normops.backends`` is the listing function.)"""
from .._registry import register_backend

# (name, "module:attr", array library it is picked for automatically, priority, install hint)
BUILTINS = (
    ("reference", "normops._backends.reference:ReferenceBackend", "numpy", 0, None),
)


def register_builtins():
    for name, target, array_module, priority, hint in BUILTINS:
        register_backend(name, target, array_module=array_module, priority=priority,
                         install_hint=hint, _source="built-in")
