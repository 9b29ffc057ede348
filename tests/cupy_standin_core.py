"""The machinery of tests/cupy_standin.py: the device array, ufuncs, functions, the modules.

Each stand-in (make()) gets its own classes, bound to its own transfer log.
"""
from __future__ import annotations

import numpy
from cupy_standin import API, HOST_IN, RELEASE, check_call, signature
from cupy_standin_random import make_cuda, make_random

_CLS = API["classes"]["cupy.ndarray"]
_BINOPS = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
           "floordiv": "floor_divide", "mod": "remainder", "pow": "power", "and": "bitwise_and",
           "or": "bitwise_or", "xor": "bitwise_xor", "lshift": "left_shift", "rshift": "right_shift",
           "matmul": "matmul"}
_COMPARE = {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater",
            "ge": "greater_equal"}
_UNARY = {"neg": "negative", "pos": "positive", "abs": "absolute", "invert": "invert"}


def build(standin, module_type):
    """(cupy, cupyx) modules of a new stand-in whose transfers go to standin.transfers."""
    log = standin.transfers

    class ndarray:
        """A device array: a NumPy array behind CuPy's rules (see tests/cupy_standin.py)."""
        __slots__ = ("_a",)
        __hash__ = None

        def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
            self._a = numpy.empty(shape, dtype=dtype, order=order)

        # -- the rules ------------------------------------------------------------------------
        def __array__(self, dtype=None, copy=None):
            raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                            "Please use `.get()` to construct a NumPy array explicitly.")

        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
            if "out" in kwargs:
                kwargs["out"] = kwargs["out"][0]
            func = getattr(cupy, ufunc.__name__, None)
            if func is None or not isinstance(func, Ufunc):
                return NotImplemented
            for x in inputs:
                if not (type(x) in (int, float, bool, complex) or isinstance(x, (numpy.generic, ndarray,
                                                                                   numpy.ndarray))):
                    return NotImplemented
            return func(*inputs, **kwargs) if method == "__call__" else getattr(func, method)(*inputs, **kwargs)

        def __array_function__(self, func, types_, args, kwargs):
            mod = cupy
            for part in func.__module__.split(".")[1:]:
                mod = getattr(mod, part, None) if part not in ("_core", "lib", "_function_base_impl") else mod
            own = getattr(mod, func.__name__, None) if mod is not None else None
            if own is None or any(not issubclass(t, (ndarray, numpy.ndarray)) for t in types_):
                return NotImplemented
            return own(*args, **kwargs)

        def _read(self, how):
            log.append((self._a.nbytes, self._a.shape, self._a.dtype))
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
                return bool(self._a)                  # NumPy's (and CuPy's) ValueError / False
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
            return wrap(self._a[index(key, self._a.shape)])

        def __setitem__(self, key, value):
            self._a[index(key, self._a.shape)] = device_arg(value, "ndarray.__setitem__")

        def __repr__(self):
            return repr(self._a)

        __str__ = __repr__

        def __copy__(self):
            return wrap(self._a.copy())

        def __deepcopy__(self, memo):
            return wrap(self._a.copy())

        # -- explicit moves -------------------------------------------------------------------
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

        # -- attributes -----------------------------------------------------------------------
        shape = property(lambda self: self._a.shape)
        dtype = property(lambda self: self._a.dtype)
        ndim = property(lambda self: self._a.ndim)
        size = property(lambda self: self._a.size)
        itemsize = property(lambda self: self._a.itemsize)
        nbytes = property(lambda self: self._a.nbytes)
        strides = property(lambda self: self._a.strides)
        flags = property(lambda self: self._a.flags)
        T = property(lambda self: wrap(self._a.T))
        mT = property(lambda self: wrap(self._a.mT))
        real = property(lambda self: wrap(self._a.real))
        imag = property(lambda self: wrap(self._a.imag))
        base = property(lambda self: None if self._a.base is None else wrap(self._a.base))

        @shape.setter
        def shape(self, value):
            self._a.shape = value

    ndarray.__module__ = "cupy"
    ndarray.__qualname__ = ndarray.__name__ = "ndarray"

    def wrap(r):
        """NumPy results as device arrays (0-d for scalars, as CuPy returns)."""
        if isinstance(r, numpy.ndarray):
            out = ndarray.__new__(ndarray)
            out._a = r
            return out
        if isinstance(r, numpy.generic):
            return wrap(numpy.asarray(r))
        if isinstance(r, tuple):
            return tuple(wrap(v) for v in r)
        if isinstance(r, list):
            return [wrap(v) for v in r]
        return r

    def device_arg(x, where, allow_lists=True):
        """The NumPy array behind a device argument; a host array raises, as CuPy does."""
        if isinstance(x, ndarray):
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

    def index(key, shape):
        """An index with device arrays unwrapped (NumPy and list indices allowed, as CuPy converts them);
        integer index arrays wrap around (CuPy's take), where the axis is plain to see."""
        parts = key if isinstance(key, tuple) else (key,)
        plain = not any(p is None or p is Ellipsis for p in parts)
        out = []
        for axis, p in enumerate(parts):
            p = p._a if isinstance(p, ndarray) else p
            if isinstance(p, list):
                p = numpy.asarray(p)
            if isinstance(p, numpy.ndarray) and p.dtype.kind in "iu" and plain and axis < len(shape) \
                    and shape[axis] > 0:
                p = numpy.mod(p, shape[axis])
            out.append(p)
        return tuple(out) if isinstance(key, tuple) else out[0]

    class Ufunc:
        """An elementwise function: device arrays and scalars only (CuPy's kernel arguments)."""

        def __init__(self, name):
            self._np, self.__name__, self.name = getattr(numpy, name), name, "cupy_" + name
            self._spec = API["modules"]["cupy"][name]

        def __repr__(self):
            return f"<ufunc '{self.name}'>"

        nin = property(lambda self: self._np.nin)
        nout = property(lambda self: self._np.nout)
        nargs = property(lambda self: self._np.nargs)
        types = property(lambda self: self._np.types)

        def __call__(self, *args, **kwargs):
            check_call("cupy." + self.__name__, self._spec, args, kwargs)
            a = [device_arg(x, "cupy." + self.__name__, allow_lists=False) for x in args]
            kw = {k: device_arg(v, "cupy." + self.__name__, allow_lists=False) for k, v in kwargs.items()}
            r = self._np(*a, **kw)
            return kwargs["out"] if "out" in kwargs else wrap(r)

        def _method(self, method, args, kwargs, in_place=False):
            spec = API["classes"]["cupy.ufunc"][method]
            check_call(f"cupy.{self.__name__}.{method}", spec, args, kwargs)
            if method == "reduceat" and self.__name__ != "add":
                raise NotImplementedError(f"`{self.name}.reduceat` is not supported yet")
            if in_place:                                   # at(a, indices, b): indices may be host
                a, idx, *rest = args
                self._np.at(device_arg(a, "at"), index(idx, a.shape), *[device_arg(b, "at") for b in rest])
                return None
            r = getattr(self._np, method)(*[device_arg(x, method) for x in args],
                                          **{k: device_arg(v, method) for k, v in kwargs.items()})
            return kwargs["out"] if "out" in kwargs else wrap(r)

        def at(self, *args, **kwargs):
            return self._method("at", args, kwargs, in_place=True)

        def reduce(self, *args, **kwargs):
            return self._method("reduce", args, kwargs)

        def accumulate(self, *args, **kwargs):
            return self._method("accumulate", args, kwargs)

        def reduceat(self, *args, **kwargs):
            return self._method("reduceat", args, kwargs)

        def outer(self, *args, **kwargs):
            return self._method("outer", args, kwargs)

    def stable(qual, spec, args, kwargs):
        """sort / argsort: CuPy's are always stable and take kind None or 'stable' only."""
        bound = signature(spec).bind(*args, **kwargs).arguments
        if bound.get("kind") not in (None, "stable"):
            raise ValueError("kind can only be None or 'stable'")
        return (), {**bound, "kind": "stable"}

    def function(qual, np_func, spec, host_in=False):
        def f(*args, **kwargs):
            check_call(qual, spec, args, kwargs)
            if qual.rpartition(".")[2] in ("sort", "argsort"):
                args, kwargs = stable(qual, spec, args, kwargs)
            if host_in:
                return np_func(*args, **kwargs)
            return wrap(np_func(*[device_arg(x, qual) for x in args],
                                **{k: device_arg(v, qual) for k, v in kwargs.items()}))
        f.__name__ = f.__qualname__ = qual.rpartition(".")[2]
        return f

    def method(name, spec):
        def m(self, *args, **kwargs):
            check_call("ndarray." + name, spec, args, kwargs)
            if name in ("sort", "argsort"):
                args, kwargs = stable("ndarray." + name, spec, args, kwargs)
            r = getattr(self._a, name)(*[device_arg(x, "ndarray." + name) for x in args],
                                       **{k: device_arg(v, "ndarray." + name) for k, v in kwargs.items()})
            return kwargs["out"] if kwargs.get("out") is not None else wrap(r)
        m.__name__ = name
        return m

    for name, spec in _CLS.items():
        if not name.startswith("_") and spec not in ("value", "?") and name not in vars(ndarray):
            if hasattr(numpy.ndarray, name):
                setattr(ndarray, name, method(name, spec))
    for dunder, uname in {**_BINOPS, **_COMPARE}.items():
        def fwd(self, other, _u=uname):
            return getattr(cupy, _u)(self, other)

        def rev(self, other, _u=uname):
            return getattr(cupy, _u)(other, self)

        def inplace(self, other, _u=uname):
            getattr(cupy, _u)(self, other, out=self)
            return self
        setattr(ndarray, f"__{dunder}__", fwd)
        if dunder in _BINOPS:
            setattr(ndarray, f"__r{dunder}__", rev)
            if dunder != "matmul":
                setattr(ndarray, f"__i{dunder}__", inplace)
    for dunder, uname in _UNARY.items():
        setattr(ndarray, f"__{dunder}__", lambda self, _u=uname: getattr(cupy, _u)(self))
    ndarray.__divmod__ = lambda self, other: (self // other, self % other)

    # -- the modules ------------------------------------------------------------------------------
    cupy = module_type("cupy")
    cupy.__version__ = RELEASE
    cupy.ndarray = ndarray

    def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
        if isinstance(a, ndarray):
            return a if dtype is None or numpy.dtype(dtype) == a.dtype else a.astype(dtype)
        return wrap(numpy.array(a, dtype=dtype, order=order or "K", copy=True))

    def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
        if isinstance(obj, ndarray):
            return wrap(numpy.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
        return wrap(numpy.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin))

    def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
        if isinstance(a, ndarray):
            return a.get(order=order, out=out)
        return numpy.asarray(a, order=order)

    def get_array_module(*args):
        return cupy if any(isinstance(a, ndarray) for a in args) else numpy

    def ascontiguousarray(a, dtype=None):
        if not isinstance(a, ndarray):
            raise TypeError(f"Argument 'a' has incorrect type (expected cupy.ndarray, got {type(a).__name__})")
        return wrap(numpy.ascontiguousarray(a._a, dtype=dtype))

    special = {"asarray": asarray, "array": array, "asanyarray": asarray, "asnumpy": asnumpy,
               "get_array_module": get_array_module, "ascontiguousarray": ascontiguousarray,
               "ufunc": Ufunc}
    for name, spec in API["modules"]["cupy"].items():
        np_obj = getattr(numpy, name, None)
        if name in special:
            setattr(cupy, name, special[name])
        elif spec in ("value", "type") or (spec == "class" and name in ("dtype", "finfo", "iinfo")):
            if np_obj is not None:
                setattr(cupy, name, np_obj)
        elif spec in ("class", "module"):
            continue
        elif isinstance(np_obj, numpy.ufunc):
            setattr(cupy, name, Ufunc(name))
        elif callable(np_obj):
            setattr(cupy, name, function("cupy." + name, np_obj, spec, host_in=name in HOST_IN))
    cupy.random = make_random(module_type, wrap, device_arg)
    cupy.linalg = module_type("cupy.linalg")
    for name, spec in API["modules"]["cupy.linalg"].items():
        if callable(getattr(numpy.linalg, name, None)) and spec not in ("class", "module"):
            setattr(cupy.linalg, name, function("cupy.linalg." + name, getattr(numpy.linalg, name), spec))
    cupy.cuda = make_cuda(module_type)
    cupyx = module_type("cupyx")

    def scatter_op(op):
        def f(a, slices, value):
            check_call("cupyx.scatter_" + op, API["modules"]["cupyx"]["scatter_" + op], (a, slices, value), {})
            getattr(numpy, {"add": "add", "max": "maximum", "min": "minimum"}[op]).at(
                device_arg(a, "cupyx.scatter_" + op), index(slices, a.shape), device_arg(value, "scatter_" + op))
        return f
    for op in ("add", "max", "min"):
        setattr(cupyx, "scatter_" + op, scatter_op(op))
    return cupy, cupyx
