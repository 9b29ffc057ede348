"""Frozen-base quantization formats: absmax int8/int4 per row or group (QLoRA-style storage)."""
from minilora.quant.absmax import (
    QuantizedTensor,
    codes,
    dequantize,
    error_bound,
    merge_into_quantized,
    nbytes,
    quantize,
)

__all__ = ["QuantizedTensor", "codes", "dequantize", "error_bound", "merge_into_quantized", "nbytes", "quantize"]
