"""Built-in backends, registered by name and imported only when first used."""
from .._registry import register_backend

# (name, "module:attr", array library it is picked for automatically, priority, install hint)
BUILTINS = (
    ("reference", "normops.backends.reference:ReferenceBackend", "numpy", 0, None),
)


def register_builtins():
    for name, target, array_module, priority, hint in BUILTINS:
        register_backend(name, target, array_module=array_module, priority=priority,
                         install_hint=hint, _source="built-in")
