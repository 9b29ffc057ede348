"""Merging a LoRA update into a quantized base, in any format: dequantize, add s B A, requantize.

The requantization rounds the merged weight onto the format's grid again, so an update smaller
than about half a quantization step is lost; the report measures how much of it survives.
"""
from __future__ import annotations

from minilora.backend import array_module
from minilora.errors import MiniLoraError
from minilora.layers.lora import lora_delta
from minilora.quant.absmax import QuantizedTensor
from minilora.quant.formats import dequantize, requantize


def _errors(approx, ref, xp):
    """(max abs error, Frobenius relative error) of approx against ref, both float64."""
    diff = approx - ref
    max_abs = float(xp.max(xp.abs(diff))) if diff.size else 0.0
    ref_norm = float(xp.linalg.norm(ref))
    rel = float(xp.linalg.norm(diff)) / ref_norm if ref_norm > 0 else float(xp.linalg.norm(diff))
    return max_abs, rel


def _stored(qt):
    """The first array of a stored weight (to find its array module)."""
    return qt[0]


def merge_into_quantized(qt, a, b, scale: float, w=None):
    """Merge a LoRA update into a quantized base and requantize. Returns (new_qt, report).

    qt: the quantized base (out, in) in any format (minilora.quant.formats); a (r, in), b (out, r),
    scale s; w: optionally the original float weight the base was quantized from. The merge is
    dequantize(qt) + s B A in float32, requantized in qt's format and settings (new_qt keeps qt's
    dtype). Report (errors of dequantize(new_qt), all computed in float64):
      max_abs_vs_float, rel_vs_float      against the exact float merge W + s B A (None without w)
      max_abs_vs_dequant, rel_vs_dequant  against dequantize(qt) + s B A (the requantization cost)
      update_rel_err   ||dequant(new) - (dequant(qt) + s B A)||_F / ||s B A||_F: above ~1 the
                       update is mostly rounded away
      requant_bound    absmax format: max(new scales) / 2, the bound on the requantization error
                       per element; None for the other formats
    Relative errors are Frobenius: ||error||_F / ||reference||_F.
    """
    xp = array_module(_stored(qt), a, b)
    if tuple(b.shape[:1]) + tuple(a.shape[1:]) != tuple(qt.shape):
        raise MiniLoraError(f"LoRA update {(b.shape[0], a.shape[1])} does not match the quantized "
                            f"weight {tuple(qt.shape)}")
    base32 = dequantize(qt, xp.float32)                                   # (out, in)
    merged32 = base32 + lora_delta(a, b, scale).astype(xp.float32)        # (out, in)
    new = requantize(qt, merged32)
    requant = dequantize(new, xp.float64)
    delta64 = scale * (b.astype(xp.float64) @ a.astype(xp.float64))      # (out, r) @ (r, in)
    ref_deq = dequantize(qt, xp.float64) + delta64
    max_abs_d, rel_d = _errors(requant, ref_deq, xp)
    report = {"max_abs_vs_float": None, "rel_vs_float": None,
              "max_abs_vs_dequant": max_abs_d, "rel_vs_dequant": rel_d}
    if w is not None:
        if tuple(w.shape) != tuple(qt.shape):
            raise MiniLoraError(f"float weight {tuple(w.shape)} does not match {tuple(qt.shape)}")
        report["max_abs_vs_float"], report["rel_vs_float"] = _errors(
            requant, w.astype(xp.float64) + delta64, xp)
    dnorm = float(xp.linalg.norm(delta64))
    diff_norm = float(xp.linalg.norm(requant - ref_deq))
    report["update_rel_err"] = diff_norm / dnorm if dnorm > 0 else (0.0 if diff_norm == 0 else float("inf"))
    report["requant_bound"] = None
    if isinstance(new, QuantizedTensor):
        report["requant_bound"] = float(xp.max(new.scales)) / 2.0 if new.scales.size else 0.0
    return new, report
