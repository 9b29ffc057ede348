"""Frozen-base quantization formats (QLoRA-style storage): absmax int8/int4 per row or group, QLoRA's
NF4, and GGUF's blocks (Q8_0, Q4_0, Q4_1) kept packed. dequantize / nbytes / requantize work on
any of them (minilora.quant.formats); quantize is absmax's (bits, group_size), quantize_as any format's."""
from minilora.quant.absmax import QuantizedTensor, codes, error_bound, quantize
from minilora.quant.formats import FORMATS, dequantize, format_of, nbytes, quantize_as, requantize, to_backend
from minilora.quant.gguf_blocks import GGUFBlocks
from minilora.quant.merge import merge_into_quantized
from minilora.quant.nf4 import NF4, NF4Tensor

__all__ = ["QuantizedTensor", "codes", "dequantize", "error_bound", "merge_into_quantized", "nbytes", "quantize",
           "FORMATS", "format_of", "quantize_as", "requantize", "to_backend", "GGUFBlocks", "NF4", "NF4Tensor"]
