"""cupy.random and cupy.cuda of tests/cupy_standin.py.

The generator: CuPy's Generator(XORWOW) keeps cuRAND states in a device array,
`bit_generator._state` (int8; cupy/random/_bit_generator.pyx). The stand-in keeps a NumPy PCG64's
whole state in such an array (48 bytes of it, the rest zero, 98,304 bytes for 2,048 "threads"), loads
it for each draw and writes it back, so checkpoint code that copies and restores `_state` works as on
a GPU, and the draws equal numpy.random.default_rng(seed)'s.
"""
from __future__ import annotations

import inspect
import os

import numpy
from cupy_standin import API, RELEASE, check_call, signature
from cupy_standin_array import device_arg, wrap

STATE_BYTES = 48                                   # PCG64: state, inc (16 bytes each), has_uint32, uinteger
_GEN_API = API["classes"]["cupy.random.Generator"]
_GEN_SIG = {n: signature(s) for n, s in _GEN_API.items() if not n.startswith("_") and s != "value"}


class XORWOWState:
    """CuPy's XORWOW bit generator: its state an int8 device array of the class `_ndarray`, which
    random_module binds to one stand-in's ndarray."""
    _ndarray = None

    def __init__(self, seed=None, *, size=-1):
        pcg = numpy.random.PCG64(numpy.random.SeedSequence(seed))
        size = 8 * 256 if size < 0 else size       # threads of one multiprocessor
        self._state = wrap(self._ndarray, numpy.zeros(max(size, 1) * STATE_BYTES, dtype=numpy.int8))
        self._store(pcg)

    def _store(self, pcg):
        """Write pcg's whole state into the first STATE_BYTES of the device state."""
        s = pcg.state
        words = [s["state"]["state"], s["state"]["inc"]]
        raw = b"".join(w.to_bytes(16, "little") for w in words) + \
            int(s["has_uint32"]).to_bytes(8, "little") + int(s["uinteger"]).to_bytes(8, "little")
        self._state._a[:STATE_BYTES] = numpy.frombuffer(raw, dtype=numpy.int8)

    def _load(self):
        """A NumPy PCG64 in the state the device array holds."""
        raw = self._state._a[:STATE_BYTES].tobytes()
        pcg = numpy.random.PCG64()
        pcg.state = {"bit_generator": "PCG64",
                     "state": {"state": int.from_bytes(raw[:16], "little"),
                               "inc": int.from_bytes(raw[16:32], "little")},
                     "has_uint32": int.from_bytes(raw[32:40], "little"),
                     "uinteger": int.from_bytes(raw[40:48], "little")}
        return pcg


class Generator:
    """cupy.random.Generator: the release's methods (set below), each a NumPy draw from the state."""
    __module__ = "cupy.random._generator_api"

    def __init__(self, bit_generator):
        self.bit_generator = bit_generator

    def _draw(self, name, args, kwargs):
        check_call("Generator." + name, _GEN_API[name], args, kwargs)
        bound = _GEN_SIG[name].bind(*args, **kwargs).arguments
        bound = {k: device_arg(v, "Generator." + name) for k, v in bound.items()}
        out, dtype = bound.pop("out", None), bound.get("dtype")
        if "dtype" not in inspect.signature(getattr(numpy.random.Generator, name)).parameters:
            bound.pop("dtype", None)
        pcg = self.bit_generator._load()
        r = getattr(numpy.random.Generator(pcg), name)(**bound)
        self.bit_generator._store(pcg)
        r = numpy.asarray(r, dtype=dtype) if dtype is not None else numpy.asarray(r)
        ndarray = type(self.bit_generator._state)
        if out is None:
            return wrap(ndarray, r)
        out[...] = r
        return wrap(ndarray, out) if isinstance(out, numpy.ndarray) else out


def _draw_method(name):
    def m(self, *args, **kwargs):
        return self._draw(name, args, kwargs)
    m.__name__ = name
    return m


for _name in _GEN_SIG:
    if hasattr(numpy.random.Generator, _name):
        setattr(Generator, _name, _draw_method(_name))


def make_random(module_type, ndarray):
    """cupy.random with default_rng, Generator and XORWOW (its state an int8 device array)."""
    rnd = module_type("cupy.random")
    xorwow = type("XORWOW", (XORWOWState,), {"__module__": "cupy.random._bit_generator", "_ndarray": ndarray})

    def default_rng(seed=None):
        return Generator(xorwow(seed))

    rnd.default_rng, rnd.Generator, rnd.XORWOW = default_rng, Generator, xorwow
    return rnd


def make_cuda(module_type):
    """cupy.cuda: one pretend device; synchronising does nothing (NumPy is synchronous)."""
    cuda = module_type("cupy.cuda")
    runtime = module_type("cupy.cuda.runtime")
    runtime.getDeviceCount = lambda: 1
    runtime.getDeviceProperties = lambda device: {"name": f"CuPy {RELEASE} stand-in (NumPy)".encode(),
                                                  "multiProcessorCount": 1}
    runtime.runtimeGetVersion = lambda: 12080

    class Stream:
        def synchronize(self):
            return None

    Stream.null = Stream()

    class Device:
        def __init__(self, device=None):
            self.id = 0

        def synchronize(self):
            return None

        @property
        def mem_info(self):
            """(free, total) bytes: the host's, where the stand-in's arrays live."""
            page = os.sysconf("SC_PAGE_SIZE")
            return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page

    cuda.runtime, cuda.Stream, cuda.Device = runtime, Stream, Device
    cuda.is_available = lambda: True
    return cuda
