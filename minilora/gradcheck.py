"""The one gradient checker: centred finite differences in float64.

For an array-valued function f of an array x and an upstream gradient dout, the
directional derivative of L = sum(f(x) * dout) along coordinate i is

    dL/dx_i ~= sum((f(x + h e_i) - f(x - h e_i)) * dout) / (2 h)

with error O(h^2). The comparison is ``rel_error``: the largest absolute
difference divided by the largest magnitude of either gradient (with a floor, so
two tiny gradients do not divide by zero). Used by the tests and the notebooks.
"""
from __future__ import annotations

from minilora.backend import array_module


def numerical_gradient(f, x, dout, h: float = 1e-6):
    """Centred-difference gradient of sum(f() * dout) with respect to x.

    f takes no arguments and reads x (which is perturbed in place and restored).
    x and dout must be float64 for the result to be meaningful.
    """
    xp = array_module(x)
    grad = xp.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    assert flat.base is x or flat is x or xp.shares_memory(flat, x), "x must be contiguous"
    for i in range(flat.size):
        old = float(flat[i])
        flat[i] = old + h
        plus = xp.sum(f() * dout)
        flat[i] = old - h
        minus = xp.sum(f() * dout)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def rel_error(a, b, floor: float = 1e-8) -> float:
    """max|a - b| / max(max|a|, max|b|, floor)."""
    xp = array_module(a, b)
    diff = float(xp.max(xp.abs(a - b))) if a.size else 0.0
    scale = max(float(xp.max(xp.abs(a))) if a.size else 0.0,
                float(xp.max(xp.abs(b))) if b.size else 0.0, floor)
    return diff / scale


def check_gradient(f, x, analytic, dout, h: float = 1e-6) -> float:
    """rel_error between an analytic gradient and the centred-difference one."""
    return rel_error(analytic, numerical_gradient(f, x, dout, h))
