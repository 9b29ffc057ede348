"""cupy.random and cupy.cuda of tests/cupy_standin.py.

The generator: CuPy's Generator(XORWOW) keeps cuRAND states in a device array,
`bit_generator._state` (int8; cupy/random/_bit_generator.pyx). The stand-in keeps a NumPy PCG64's
whole state in such an array (48 bytes of it, the rest zero, 98,304 bytes for 2,048 "threads"), loads
it for each draw and writes it back, so checkpoint code that copies and restores `_state` works as on
a GPU, and the draws equal numpy.random.default_rng(seed)'s.
"""
from __future__ import annotations

import inspect

import numpy
from cupy_standin import API, RELEASE, check_call, signature


def make_random(module_type, wrap, device_arg):
    """cupy.random with default_rng, Generator and XORWOW (its state an int8 device array)."""
    gen_api = API["classes"]["cupy.random.Generator"]
    rnd = module_type("cupy.random")
    state_words = 48                               # PCG64: state, inc (16 bytes each), has_uint32, uinteger

    class XORWOW:
        def __init__(self, seed=None, *, size=-1):
            pcg = numpy.random.PCG64(numpy.random.SeedSequence(seed))
            size = 8 * 256 if size < 0 else size   # threads of one multiprocessor
            self._state = wrap(numpy.zeros(max(size, 1) * state_words, dtype=numpy.int8))
            self._store(pcg)

        def _store(self, pcg):
            s = pcg.state
            words = [s["state"]["state"], s["state"]["inc"]]
            raw = b"".join(w.to_bytes(16, "little") for w in words) + \
                int(s["has_uint32"]).to_bytes(8, "little") + int(s["uinteger"]).to_bytes(8, "little")
            self._state._a[:state_words] = numpy.frombuffer(raw, dtype=numpy.int8)

        def _load(self):
            raw = self._state._a[:state_words].tobytes()
            pcg = numpy.random.PCG64()
            pcg.state = {"bit_generator": "PCG64",
                         "state": {"state": int.from_bytes(raw[:16], "little"),
                                   "inc": int.from_bytes(raw[16:32], "little")},
                         "has_uint32": int.from_bytes(raw[32:40], "little"),
                         "uinteger": int.from_bytes(raw[40:48], "little")}
            return pcg

    XORWOW.__module__ = "cupy.random._bit_generator"

    class Generator:
        def __init__(self, bit_generator):
            self.bit_generator = bit_generator

    def draw(name, spec):
        def m(self, *args, **kwargs):
            check_call("Generator." + name, spec, args, kwargs)
            bound = gen_sig[name].bind(*args, **kwargs).arguments
            bound = {k: device_arg(v, "Generator." + name) for k, v in bound.items()}
            np_method = getattr(numpy.random.Generator, name)
            takes = set(inspect.signature(np_method).parameters)
            out, dtype = bound.pop("out", None), bound.get("dtype")
            if "dtype" not in takes:
                bound.pop("dtype", None)
            pcg = self.bit_generator._load()
            r = getattr(numpy.random.Generator(pcg), name)(**bound)
            self.bit_generator._store(pcg)
            r = numpy.asarray(r, dtype=dtype) if dtype is not None else numpy.asarray(r)
            if out is not None:
                out[...] = r
                return wrap(out) if isinstance(out, numpy.ndarray) else out
            return wrap(r)
        m.__name__ = name
        return m

    gen_sig = {n: signature(s) for n, s in gen_api.items() if not n.startswith("_") and s != "value"}
    for name in gen_sig:
        if hasattr(numpy.random.Generator, name):
            setattr(Generator, name, draw(name, gen_api[name]))
    Generator.__module__ = "cupy.random._generator_api"

    def default_rng(seed=None):
        return Generator(XORWOW(seed))

    rnd.default_rng, rnd.Generator, rnd.XORWOW = default_rng, Generator, XORWOW
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

    cuda.runtime, cuda.Stream, cuda.Device = runtime, Stream, Device
    cuda.is_available = lambda: True
    return cuda
