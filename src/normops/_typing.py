"""Type aliases of the public API.

normops takes the arrays of several libraries and answers in the library of its input, so
an array is typed by the alias ``Array`` (any supported array: ``numpy.ndarray``,
``torch.Tensor``, ``cupy.ndarray``, an array-API array) and an input that may also be a
nested list of numbers by ``ArrayLike``. Both are ``Any`` to a type checker: the library
checks arrays at run time (normops._validation), where it can say what is wrong.
"""
from typing import Any, TypeAlias

#: An array of a supported library: numpy.ndarray, torch.Tensor, cupy.ndarray or any
#: array-API array. Results are arrays of the input's library.
Array: TypeAlias = Any

#: What an op accepts as input: an ``Array``, or (NumPy only) nested lists of numbers.
ArrayLike: TypeAlias = Any

#: An mpi4py intracommunicator (``mpi4py.MPI.Comm``); mpi4py is an optional extra.
Comm: TypeAlias = Any

#: A NumPy dtype or anything ``numpy.dtype`` accepts, or a dtype of the array library in use.
DTypeLike: TypeAlias = Any

__all__ = ["Array", "ArrayLike", "Comm", "DTypeLike"]
