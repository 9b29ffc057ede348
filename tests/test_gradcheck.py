"""The gradient checker itself: exact on known derivatives, and it catches a wrong one."""
import numpy as np

from minilora.gradcheck import check_gradient, numerical_gradient, rel_error


def test_numerical_gradient_of_known_function():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    dout = rng.standard_normal((3, 4))
    g = numerical_gradient(lambda: np.sin(x) * x, x, dout)
    exact = (np.cos(x) * x + np.sin(x)) * dout
    assert rel_error(g, exact) < 1e-9


def test_checker_rejects_a_wrong_gradient():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(5)
    dout = np.ones(5)
    assert check_gradient(lambda: x ** 2, x, 2 * x, dout) < 1e-8
    assert check_gradient(lambda: x ** 2, x, -2 * x, dout) > 0.5
    assert check_gradient(lambda: x ** 2, x, 2.001 * x, dout) > 1e-4


def test_rel_error_floor():
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error(np.array([1e-12]), np.array([0.0])) == 1e-12 / 1e-8
