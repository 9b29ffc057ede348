"""The modules of tests/cupy_standin.py: ufuncs, functions, the host/device moves, cupy / cupyx.

Everything here is shared by all stand-ins; what belongs to one stand-in (its transfer log) lives in
its `ndarray` class (cupy_standin_array.ndarray_class), which each ufunc and function holds.
"""
from __future__ import annotations

import numpy
from cupy_standin import API, HOST_IN, RELEASE, check_call
from cupy_standin_array import device_arg, device_args, index, ndarray_class, stable, wrap
from cupy_standin_random import make_cuda, make_random

_SORTS = ("sort", "argsort")
_NUMPY_CLASSES = ("dtype", "finfo", "iinfo")     # CuPy's are NumPy's own
_SCATTER = {"add": "add", "max": "maximum", "min": "minimum"}


class Ufunc:
    """An elementwise function: device arrays and scalars only (CuPy's kernel arguments)."""

    def __init__(self, name, ndarray):
        self._np, self.__name__, self.name = getattr(numpy, name), name, "cupy_" + name
        self._spec = API["modules"]["cupy"][name]
        self._ndarray = ndarray

    def __repr__(self):
        return f"<ufunc '{self.name}'>"

    nin = property(lambda self: self._np.nin)
    nout = property(lambda self: self._np.nout)
    nargs = property(lambda self: self._np.nargs)
    types = property(lambda self: self._np.types)

    def __call__(self, *args, **kwargs):
        check_call("cupy." + self.__name__, self._spec, args, kwargs)
        a, kw = device_args("cupy." + self.__name__, args, kwargs, allow_lists=False)
        r = self._np(*a, **kw)
        return kwargs["out"] if kwargs.get("out") is not None else wrap(self._ndarray, r)

    def _method(self, method, args, kwargs):
        check_call(f"cupy.{self.__name__}.{method}", API["classes"]["cupy.ufunc"][method], args, kwargs)
        if method == "reduceat" and self.__name__ != "add":
            raise NotImplementedError(f"`{self.name}.reduceat` is not supported yet")
        a, kw = device_args(method, args, kwargs)
        r = getattr(self._np, method)(*a, **kw)
        return kwargs["out"] if kwargs.get("out") is not None else wrap(self._ndarray, r)

    def at(self, *args, **kwargs):
        """at(a, indices, b) in place; the indices may be host arrays."""
        check_call(f"cupy.{self.__name__}.at", API["classes"]["cupy.ufunc"]["at"], args, kwargs)
        a, idx, *rest = args
        self._np.at(device_arg(a, "at"), index(idx, a.shape), *[device_arg(b, "at") for b in rest])

    def reduce(self, *args, **kwargs):
        return self._method("reduce", args, kwargs)

    def accumulate(self, *args, **kwargs):
        return self._method("accumulate", args, kwargs)

    def reduceat(self, *args, **kwargs):
        return self._method("reduceat", args, kwargs)

    def outer(self, *args, **kwargs):
        return self._method("outer", args, kwargs)


def function(qual, np_func, spec, ndarray, host_in=False):
    """cupy.<name> as NumPy's np_func: CuPy's parameters, device arguments (host ones for the moves
    in HOST_IN), results as ndarray."""
    def f(*args, **kwargs):
        check_call(qual, spec, args, kwargs)
        if f.__name__ in _SORTS:
            args, kwargs = stable(spec, args, kwargs)
        if host_in:
            return np_func(*args, **kwargs)
        a, kw = device_args(qual, args, kwargs)
        return wrap(ndarray, np_func(*a, **kw))
    f.__name__ = f.__qualname__ = qual.rpartition(".")[2]
    return f


class Moves:
    """The functions that take host data or give it back, bound to one stand-in's cupy module."""

    def __init__(self, cupy):
        self.cupy, self.ndarray = cupy, cupy.ndarray

    def asarray(self, a, dtype=None, order=None, *, copy=None, blocking=False):
        if isinstance(a, self.ndarray):
            return a if dtype is None or numpy.dtype(dtype) == a.dtype else a.astype(dtype)
        return wrap(self.ndarray, numpy.array(a, dtype=dtype, order=order or "K", copy=True))

    def array(self, obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
        if isinstance(obj, self.ndarray):
            return wrap(self.ndarray, numpy.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
        return wrap(self.ndarray, numpy.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin))

    def asnumpy(self, a, stream=None, order="C", out=None, *, blocking=True):
        if isinstance(a, self.ndarray):
            return a.get(order=order, out=out)
        return numpy.asarray(a, order=order)

    def get_array_module(self, *args):
        return self.cupy if any(isinstance(a, self.ndarray) for a in args) else numpy

    def ascontiguousarray(self, a, dtype=None):
        if not isinstance(a, self.ndarray):
            raise TypeError(f"Argument 'a' has incorrect type (expected cupy.ndarray, got {type(a).__name__})")
        return wrap(self.ndarray, numpy.ascontiguousarray(a._a, dtype=dtype))

    def names(self) -> dict:
        return {"asarray": self.asarray, "array": self.array, "asanyarray": self.asarray,
                "asnumpy": self.asnumpy, "get_array_module": self.get_array_module,
                "ascontiguousarray": self.ascontiguousarray, "ufunc": Ufunc}


def _cupy_object(name, spec, special, ndarray):
    """What the stand-in's cupy.<name> is; None where the stand-in leaves it out."""
    np_obj = getattr(numpy, name, None)
    if name in special:
        return special[name]
    if spec in ("value", "type") or (spec == "class" and name in _NUMPY_CLASSES):
        return np_obj
    if spec in ("class", "module"):
        return None
    if isinstance(np_obj, numpy.ufunc):
        return Ufunc(name, ndarray)
    if callable(np_obj):
        return function("cupy." + name, np_obj, spec, ndarray, host_in=name in HOST_IN)
    return None


def _linalg(module_type, ndarray):
    linalg = module_type("cupy.linalg")
    for name, spec in API["modules"]["cupy.linalg"].items():
        np_func = getattr(numpy.linalg, name, None)
        if callable(np_func) and spec not in ("class", "module"):
            setattr(linalg, name, function("cupy.linalg." + name, np_func, spec, ndarray))
    return linalg


def scatter_op(op):
    """cupyx.scatter_<op>(a, slices, value): unbuffered, in place, as NumPy's <ufunc>.at."""
    qual = "cupyx.scatter_" + op

    def f(a, slices, value):
        check_call(qual, API["modules"]["cupyx"]["scatter_" + op], (a, slices, value), {})
        getattr(numpy, _SCATTER[op]).at(device_arg(a, qual), index(slices, a.shape), device_arg(value, qual))
    f.__name__ = f.__qualname__ = "scatter_" + op
    return f


def build(standin, module_type):
    """(cupy, cupyx) modules of a new stand-in whose transfers go to standin.transfers."""
    ndarray = ndarray_class(standin)
    cupy = module_type("cupy")
    cupy.__version__, cupy.ndarray = RELEASE, ndarray
    special = Moves(cupy).names()
    for name, spec in API["modules"]["cupy"].items():
        obj = _cupy_object(name, spec, special, ndarray)
        if obj is not None:
            setattr(cupy, name, obj)
    cupy.random = make_random(module_type, ndarray)
    cupy.linalg = _linalg(module_type, ndarray)
    cupy.cuda = make_cuda(module_type)
    cupyx = module_type("cupyx")
    for op in _SCATTER:
        setattr(cupyx, "scatter_" + op, scatter_op(op))
    return cupy, cupyx
