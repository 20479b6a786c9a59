"""What normops' own backends share: the name the registry gives them, and a repr that
says which backend an object is."""
from typing import Optional


class BuiltinBackend:
    """Base class of the built-in backends (reference, cpu, array-api, torch, cupy)."""

    #: The name it is registered under. None on the class: the registry sets it on the
    #: instance it loads (see normops._registry), so one made directly has none.
    name: Optional[str] = None
    #: The kind of device its arrays live on (each backend sets its own).
    device: str

    def __repr__(self) -> str:
        what = repr(self.name) if self.name is not None else f"{type(self).__name__}, unnamed"
        return f"<normops backend {what} (built-in, device {self.device!r})>"
