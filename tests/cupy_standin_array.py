"""The device array of tests/cupy_standin.py: a NumPy array behind CuPy's host/device rules.

`DeviceArray` holds every rule and method once. Each stand-in gets its own subclass, named
`ndarray` in module `cupy`, from `ndarray_class(standin)`, which binds only the stand-in (its
transfer log, and its `cupy` module for operators and NumPy's dispatch protocols). The helpers
`wrap`, `device_arg` and `index` move between NumPy results and device arrays.
"""
from __future__ import annotations

import numpy
from cupy_standin import API, check_call, signature

_BINOPS = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
           "floordiv": "floor_divide", "mod": "remainder", "pow": "power", "and": "bitwise_and",
           "or": "bitwise_or", "xor": "bitwise_xor", "lshift": "left_shift", "rshift": "right_shift",
           "matmul": "matmul"}
_COMPARE = {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater",
            "ge": "greater_equal"}
_UNARY = {"neg": "negative", "pos": "positive", "abs": "absolute", "invert": "invert"}
_SCALARS = (int, float, bool, complex)
_NUMPY_SUBMODULES = ("_core", "lib", "_function_base_impl")   # NumPy's, not CuPy's, module paths


class DeviceArray:
    """A device array: a NumPy array behind CuPy's rules (see tests/cupy_standin.py)."""
    __slots__ = ("_a",)
    __hash__ = None
    _standin = None                                  # bound by ndarray_class

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = numpy.empty(shape, dtype=dtype, order=order)

    # -- the rules ----------------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        cupy = self._standin.cupy
        if "out" in kwargs:
            kwargs["out"] = kwargs["out"][0]
        func = getattr(cupy, ufunc.__name__, None)
        if not isinstance(func, cupy.ufunc):
            return NotImplemented
        if not all(type(x) in _SCALARS or isinstance(x, (numpy.generic, numpy.ndarray, DeviceArray))
                   for x in inputs):
            return NotImplemented
        return func(*inputs, **kwargs) if method == "__call__" else getattr(func, method)(*inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        mod = self._standin.cupy
        for part in func.__module__.split(".")[1:]:
            if part not in _NUMPY_SUBMODULES:
                mod = getattr(mod, part, None)
        own = getattr(mod, func.__name__, None) if mod is not None else None
        if own is None or any(not issubclass(t, (DeviceArray, numpy.ndarray)) for t in types_):
            return NotImplemented
        return own(*args, **kwargs)

    def _read(self, how):
        """how(the NumPy array), logged as one device-to-host read."""
        self._standin.transfers.append((self._a.nbytes, self._a.shape, self._a.dtype))
        return how(self._a)

    def _scalar(self, conv):
        if self._a.ndim != 0:
            raise TypeError(f"only 0-d device arrays convert with {conv.__name__}() here "
                            f"(shape {self._a.shape}); index or reduce first")
        return self._read(lambda a: conv(a[()]))

    def __int__(self):
        return self._scalar(int)

    def __float__(self):
        return self._scalar(float)

    def __complex__(self):
        return self._scalar(complex)

    def __bool__(self):
        if self._a.size != 1:
            return bool(self._a)                      # NumPy's (and CuPy's) ValueError / False
        return self._read(lambda a: bool(a.reshape(())))

    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return self._a.shape[0]

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    def __getitem__(self, key):
        return wrap(type(self), self._a[index(key, self._a.shape)])

    def __setitem__(self, key, value):
        self._a[index(key, self._a.shape)] = device_arg(value, "ndarray.__setitem__")

    def __repr__(self):
        return repr(self._a)

    __str__ = __repr__

    def __copy__(self):
        return wrap(type(self), self._a.copy())

    def __deepcopy__(self, memo):
        return wrap(type(self), self._a.copy())

    def __divmod__(self, other):
        return self // other, self % other

    # -- explicit moves -----------------------------------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True):
        host = self._read(lambda a: numpy.array(a, order=order))
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr, stream=None):
        if not isinstance(arr, numpy.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray (got {type(arr)})")
        self._a[...] = arr

    def item(self):
        return self._read(lambda a: a.item())

    def tolist(self):
        return self._read(lambda a: a.tolist())

    # -- attributes ---------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: wrap(type(self), self._a.T))
    mT = property(lambda self: wrap(type(self), self._a.mT))
    real = property(lambda self: wrap(type(self), self._a.real))
    imag = property(lambda self: wrap(type(self), self._a.imag))
    base = property(lambda self: None if self._a.base is None else wrap(type(self), self._a.base))

    @shape.setter
    def shape(self, value):
        self._a.shape = value


def ndarray_class(standin) -> type:
    """`cupy.ndarray` of one stand-in: DeviceArray bound to standin (its transfers and cupy module)."""
    return type("ndarray", (DeviceArray,), {"__slots__": (), "__module__": "cupy", "__qualname__": "ndarray",
                                            "_standin": standin})


def wrap(cls, r):
    """NumPy results as device arrays of class cls (0-d for scalars, as CuPy returns)."""
    if isinstance(r, numpy.ndarray):
        out = cls.__new__(cls)
        out._a = r
        return out
    if isinstance(r, numpy.generic):
        return wrap(cls, numpy.asarray(r))
    if isinstance(r, tuple):
        return tuple(wrap(cls, v) for v in r)
    if isinstance(r, list):
        return [wrap(cls, v) for v in r]
    return r


def device_arg(x, where, allow_lists=True):
    """The NumPy array behind a device argument; a host array raises, as CuPy does."""
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, numpy.ndarray):
        raise TypeError(f"Unsupported type {type(x)}: {where} got a NumPy (host) array; CuPy does not "
                        "move it implicitly, use cupy.asarray(x)")
    if isinstance(x, (list, tuple)):
        if not allow_lists:
            raise TypeError(f"Unsupported type {type(x)}: {where} takes device arrays or scalars")
        return type(x)(device_arg(v, where) for v in x)
    if isinstance(x, dict):
        return {k: device_arg(v, where) for k, v in x.items()}
    return x


def device_args(where, args, kwargs, allow_lists=True):
    """(args, kwargs) with every argument through device_arg."""
    return ([device_arg(x, where, allow_lists) for x in args],
            {k: device_arg(v, where, allow_lists) for k, v in kwargs.items()})


def index(key, shape):
    """An index with device arrays unwrapped (NumPy and list indices allowed, as CuPy converts them);
    integer index arrays wrap around (CuPy's take), where the axis is plain to see."""
    parts = key if isinstance(key, tuple) else (key,)
    plain = not any(p is None or p is Ellipsis for p in parts)
    out = [_index_part(p, shape, axis, plain) for axis, p in enumerate(parts)]
    return tuple(out) if isinstance(key, tuple) else out[0]


def _index_part(p, shape, axis, plain):
    p = p._a if isinstance(p, DeviceArray) else p
    if isinstance(p, list):
        p = numpy.asarray(p)
    wraps = plain and axis < len(shape) and shape[axis] > 0
    if wraps and isinstance(p, numpy.ndarray) and p.dtype.kind in "iu":
        p = numpy.mod(p, shape[axis])
    return p


def stable(spec, args, kwargs):
    """sort / argsort: CuPy's are always stable and take kind None or 'stable' only."""
    bound = signature(spec).bind(*args, **kwargs).arguments
    if bound.get("kind") not in (None, "stable"):
        raise ValueError("kind can only be None or 'stable'")
    return (), {**bound, "kind": "stable"}


# -- the methods and operators, once on DeviceArray ------------------------------------------------
def _method(name, spec):
    """ndarray.name as NumPy's, with CuPy's parameter list and device arguments only."""
    def m(self, *args, **kwargs):
        check_call("ndarray." + name, spec, args, kwargs)
        if name in ("sort", "argsort"):
            args, kwargs = stable(spec, args, kwargs)
        a, kw = device_args("ndarray." + name, args, kwargs)
        r = getattr(self._a, name)(*a, **kw)
        return kwargs["out"] if kwargs.get("out") is not None else wrap(type(self), r)
    m.__name__ = name
    return m


def _operators(uname):
    """(a op b, b op a, a op= b) through the stand-in's ufunc uname."""
    def fwd(self, other):
        return getattr(self._standin.cupy, uname)(self, other)

    def rev(self, other):
        return getattr(self._standin.cupy, uname)(other, self)

    def inplace(self, other):
        getattr(self._standin.cupy, uname)(self, other, out=self)
        return self
    return fwd, rev, inplace


def _unary(uname):
    return lambda self: getattr(self._standin.cupy, uname)(self)


def _install_methods():
    for name, spec in API["classes"]["cupy.ndarray"].items():
        if name.startswith("_") or spec in ("value", "?") or name in vars(DeviceArray):
            continue
        if hasattr(numpy.ndarray, name):
            setattr(DeviceArray, name, _method(name, spec))
    for dunder, uname in {**_BINOPS, **_COMPARE}.items():
        fwd, rev, inplace = _operators(uname)
        setattr(DeviceArray, f"__{dunder}__", fwd)
        if dunder in _BINOPS:
            setattr(DeviceArray, f"__r{dunder}__", rev)
        if dunder in _BINOPS and dunder != "matmul":
            setattr(DeviceArray, f"__i{dunder}__", inplace)
    for dunder, uname in _UNARY.items():
        setattr(DeviceArray, f"__{dunder}__", _unary(uname))


_install_methods()
