"""Read a pickled ``.npy`` file (an object array saved with ``np.save``) without running its pickle.

``np.load(path, allow_pickle=True)`` hands the payload to :mod:`pickle`, which can call any function
the file names (``os.system`` included). The authors' result files are such pickles: a 0-d object
array holding a dict of lists and floats. :func:`read_pickled_npy` parses the ``.npy`` header itself
(``numpy.lib.format``, which reads the header with ``ast.literal_eval``) and unpickles the payload
with :class:`RestrictedUnpickler`, which resolves only the few globals that rebuilding a numpy
array needs; every other global (``os.system``, ``builtins.eval``, ``torch._utils...``) is refused
before anything is called.
"""
from __future__ import annotations

import io
import pickle

import numpy as np
from numpy.lib import format as npy_format

try:   # numpy >= 2 moved the module; pickles written by numpy 1.x name numpy.core
    from numpy._core.multiarray import _reconstruct, scalar as _scalar
except ImportError:   # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar as _scalar

# (module, name) -> object: what ndarray.__reduce__ / dtype.__reduce__ / numpy scalars pickle as
ALLOWED_GLOBALS = {
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names something other than numpy array reconstruction."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for numpy arrays and plain containers (dict, list, tuple, str, numbers) only."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedPickle(f"refused to load global {module}.{name}: only numpy arrays and plain "
                                f"containers are allowed") from None

    def persistent_load(self, pid):
        raise RefusedPickle("refused a persistent id: not a plain pickle")


def restricted_loads(payload: bytes):
    """``pickle.loads`` through :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(payload)).load()


def read_pickled_npy(data: bytes):
    """The object stored by ``np.save(path, obj)`` for a non-array ``obj`` (a dict, say).

    ``data``: the bytes of the ``.npy`` file. Only object arrays (``descr '|O'``) hold pickles;
    a plain numeric ``.npy`` is returned as an array. A 0-d object array gives back its item."""
    stream = io.BytesIO(data)
    version = npy_format.read_magic(stream)
    if version == (1, 0):
        shape, fortran_order, dtype = npy_format.read_array_header_1_0(stream)
    elif version in ((2, 0), (3, 0)):
        shape, fortran_order, dtype = npy_format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    if not dtype.hasobject:
        count = int(np.prod(shape)) if shape else 1
        array = np.frombuffer(stream.read(count * dtype.itemsize), dtype=dtype, count=count)
        return array.reshape(shape, order="F" if fortran_order else "C")
    array = restricted_loads(stream.read())
    if not isinstance(array, np.ndarray):
        raise ValueError(f"the pickle holds a {type(array).__name__}, not the numpy array np.save writes")
    if array.shape != tuple(shape):
        raise ValueError(f"header says shape {shape}, the pickle holds {array.shape}")
    return array.item() if array.shape == () else array
