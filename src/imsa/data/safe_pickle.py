"""Loading pickles without letting them run code.

A pickle can call any importable function while it loads. Files in the field's
formats come from shared drives and strangers, so every pickle imsa reads goes
through :func:`load_pickle`, which resolves only the types these formats hold:
builtin containers and scalars, and numpy arrays, dtypes and scalars.
"""

from __future__ import annotations

import _compat_pickle
import pickle
from pathlib import Path

from ..errors import DataError

_ALLOWED = (
    {("builtins", name) for name in ("set", "frozenset", "dict", "list", "tuple", "str", "bytes", "int", "float", "complex", "bool", "slice", "range")}
    | {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Python 3 writes bytes (numpy array data) as _codecs.encode(str, "latin1") in protocols 0-2
        ("_codecs", "encode"),
    }
    | {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")}
    | {(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")}
    | {
        # numpy >= 1.25 pickles dtypes through their class, e.g. numpy.dtypes.Float32DType
        ("numpy.dtypes", name)
        for name in (
            "Float16DType",
            "Float32DType",
            "Float64DType",
            "Int8DType",
            "Int16DType",
            "Int32DType",
            "Int64DType",
            "UInt8DType",
            "UInt16DType",
            "UInt32DType",
            "UInt64DType",
            "BoolDType",
            "StrDType",
            "BytesDType",
            "ObjectDType",
        )
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Python 2 names (protocols 0-2, e.g. __builtin__.set) as Python 3 knows them, as
        # pickle's own fix_imports does, so that the allow-list sees the real name
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        else:
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return super().find_class(module, name)


def load_pickle(path: str | Path, *, encoding: str = "latin1"):
    """Unpickle ``path`` allowing only containers, scalars and numpy arrays.

    Raises
    ------
    DataError
        If the file is missing, truncated, not a pickle, or references any other type
        (for example ``os.system``), with the file name in the message.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding=encoding).load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except pickle.UnpicklingError as e:
        if "refused to load" in str(e):
            raise DataError(
                f"{path}: {e}; this pickle asks to run code that the dataset formats never contain. Do not load it; obtain the file from its original source."
            ) from None
        if "truncated" in str(e):
            raise DataError(f"{path}: truncated or corrupted pickle ({e}). Download it again.") from None
        raise DataError(f"{path}: not a readable pickle ({e}); the file is corrupted or of another format. Download it again.") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, ImportError, MemoryError) as e:
        raise DataError(f"{path}: truncated or corrupted pickle ({type(e).__name__}: {e}). Download it again.") from None
