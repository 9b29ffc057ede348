"""Layers: one file per forward/backward pair (pure functions, arrays in, arrays + cache out)."""
