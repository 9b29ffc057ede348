"""Shared test setup: hypothesis profiles (small, no deadline, derandomised under CI)."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "ci", deadline=None, max_examples=25, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _cupy_status():
    """None when CuPy runs a kernel, a generator draw and a qr here; else why not (minilora.backend)."""
    from minilora.backend import cupy_status

    return cupy_status()


def backend_params():
    """pytest params for every backend: numpy always; cupy skipped cleanly unless CuPy really runs."""
    import pytest

    reason = _cupy_status()
    return [pytest.param("numpy", id="numpy"),
            pytest.param("cupy", id="cupy", marks=pytest.mark.skipif(
                reason is not None, reason=f"CuPy cannot run here: {reason}"))]


def smollm2_gguf():
    """The cached SmolLM2-135M-Instruct GGUF (`minilora fetch smollm2-135m-instruct`, which `make test`
    runs first); the calling test skips when it is not there (nothing is fetched from a test)."""
    import pytest

    from minilora.errors import MiniLoraError
    from minilora.runs.registry import resolve_model

    try:
        return resolve_model("smollm2-135m-instruct", fetch_missing=False)
    except MiniLoraError as e:
        pytest.skip(str(e))
