"""One protocol over the frozen-base formats: each stored weight says which format it is in.

    format   stored as                               made by
    absmax   QuantizedTensor (int8 / packed int4)    quant.absmax.quantize(w, bits, group_size)
    nf4      NF4Tensor (QLoRA's NormalFloat4)        quant.nf4.quantize(w, double_quant)
    q8_0, q4_0, q4_1   GGUFBlocks (llama.cpp's blocks, kept packed)   quant.gguf_blocks.quantize(w, qtype)

Every format module has dequantize(qt, dtype), nbytes(qt), requantize(qt, w) (same format and
settings, used by merges) and to_backend(qt, xp); the functions here dispatch on the type of qt.
"""
from __future__ import annotations

from minilora.errors import MiniLoraError
from minilora.quant import absmax, gguf_blocks, nf4

FORMATS = ("absmax", "nf4", "q8_0", "q4_0", "q4_1")
_MODULES = {absmax.QuantizedTensor: absmax, nf4.NF4Tensor: nf4, gguf_blocks.GGUFBlocks: gguf_blocks}
_BITS = {"nf4": 4, "q8_0": 8, "q4_0": 4, "q4_1": 4}


def _module(qt):
    mod = _MODULES.get(type(qt))
    if mod is None:
        raise MiniLoraError(f"not a quantized weight: {type(qt).__name__}")
    return mod


def format_of(qt) -> str:
    """'absmax', 'nf4' or the GGUF block type in lower case ('q4_1', ...)."""
    mod = _module(qt)
    return qt.qtype.lower() if mod is gguf_blocks else ("nf4" if mod is nf4 else "absmax")


def quantize_as(w, fmt: str = "absmax", bits: int = 8, group_size: int | None = None, double_quant: bool = False):
    """w (out, in) stored in `fmt` at `bits` (absmax: 8 or 4 with group_size; nf4: 4; q8_0: 8; q4_*: 4)."""
    if fmt not in FORMATS:
        raise MiniLoraError(f"unknown quantization format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "absmax":
        return absmax.quantize(w, bits, group_size)
    if bits != _BITS[fmt]:
        raise MiniLoraError(f"format {fmt} stores {_BITS[fmt]} bits per weight, not {bits}")
    if group_size is not None:
        raise MiniLoraError(f"format {fmt} has a fixed block size; group_size applies to absmax only")
    if fmt == "nf4":
        return nf4.quantize(w, double_quant=double_quant)
    return gguf_blocks.quantize(w, fmt.upper())


def dequantize(qt, dtype="float32"):
    """The stored weight as an array of dtype (shape qt.shape)."""
    return _module(qt).dequantize(qt, dtype)


def nbytes(qt) -> int:
    """Bytes the stored weight takes (codes or blocks, and their scales)."""
    return _module(qt).nbytes(qt)


def requantize(qt, w):
    """w stored in the same format and settings as qt (used when merging into a quantized base)."""
    return _module(qt).requantize(qt, w)


def to_backend(qt, xp):
    """qt with its arrays moved to xp (numpy or cupy)."""
    return _module(qt).to_backend(qt, xp)
