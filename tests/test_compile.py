"""Formula to KAN, and growing a KAN (kanlab.compile)."""

import numpy as np
import pytest
import sympy
import torch

from kanlab import KAN, from_formula
from kanlab.formula import round_formula

x, y = sympy.symbols("x y", real=True)

CASES = [
    (sympy.exp(sympy.sin(sympy.pi * x) + y**2), (-1.0, 1.0)),
    (x * y, (-1.0, 1.0)),
    (x / y, (0.1, 1.0)),
    ((x + y) / (1 + x * y), (-0.9, 0.9)),
    (sympy.sqrt(x**2 + y**2), (-1.0, 1.0)),
    (sympy.exp(-(x**2 + y**2) / 2), (-1.0, 1.0)),
    (x + y * sympy.sin(x) + x**6, (-1.0, 1.0)),
]


@pytest.mark.parametrize("expr, domain", CASES, ids=[str(c[0]) for c in CASES])
def test_from_formula_computes_the_formula(expr, domain):
    model = from_formula(expr, [x, y], domain=domain)
    generator = torch.Generator().manual_seed(1)
    inputs = domain[0] + (domain[1] - domain[0]) * torch.rand(2000, 2, generator=generator, dtype=torch.float64)
    truth = sympy.lambdify([x, y], expr, "numpy")(inputs[:, 0].numpy(), inputs[:, 1].numpy())
    error = np.mean((model(inputs)[:, 0].detach().numpy() - truth) ** 2)
    assert error < 1e-12
    # and the model's own formula is the same expression
    (formula,) = model.symbolic_formula(var_names=[x, y])
    assert sympy.simplify(round_formula(formula, 8) - expr) == 0 or np.allclose(
        sympy.lambdify([x, y], formula, "numpy")(inputs[:, 0].numpy(), inputs[:, 1].numpy()), truth, atol=1e-10
    )


def test_from_formula_shapes_and_errors():
    assert from_formula(sympy.exp(sympy.sin(sympy.pi * x) + y**2), [x, y]).width_in == [2, 1, 1]
    assert from_formula(x * y, ["x", "y"]).width == [[2, 0], [0, 1], [1, 0]]
    two = from_formula([x + y, x * y], [x, y])
    assert two.width_in[-1] == 2
    with pytest.raises(ValueError, match="not listed"):
        from_formula(x + y, [x])
    with pytest.raises(ValueError, match="library"):
        from_formula(sympy.besselj(0, x), [x])
    with pytest.raises(ValueError, match="domain"):
        from_formula(x + y, [x, y], domain=[(1, 0), (0, 1)])


def test_from_formula_model_trains_and_turns_back_into_splines():
    expr = sympy.exp(sympy.sin(sympy.pi * x) + y**2)
    model = from_formula(expr, [x, y])
    inputs = model.sample_input
    before = model(inputs).detach()
    model.unfix_symbolic_all()  # every symbolic edge becomes a spline fit to it
    assert all(not layer.symbolic_edges for layer in model.layers)
    relative = torch.sqrt(torch.mean((model(inputs) - before) ** 2)) / before.std()
    assert relative < 0.05
    data = {"train_input": inputs, "train_label": before}
    history = model.fit(data, steps=10)
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_expand_width_and_depth_keep_the_function():
    model = KAN([2, [2, 1], 1], seed=0, dtype=torch.float64)
    model.remember_inputs(torch.rand(100, 2, dtype=torch.float64) * 2 - 1)
    inputs = torch.rand(50, 2, dtype=torch.float64) * 2 - 1
    wider = model.expand_width(1, 2)
    assert wider.width[1] == [4, 1]
    torch.testing.assert_close(wider(inputs), model(inputs))
    with_product = model.expand_width(1, 1, mult_arity=3)
    assert with_product.width[1] == [2, 2] and with_product.mult_arity[1] == [2, 3]
    torch.testing.assert_close(with_product(inputs), model(inputs))
    deeper = model.expand_depth()
    assert deeper.depth == model.depth + 1
    torch.testing.assert_close(deeper(inputs), model(inputs))
    # the new parts can learn: their parameters receive gradients
    wider(inputs).sum().backward()
    assert wider.layers[1].coef.grad[:, 2:4].abs().sum() > 0
    with pytest.raises(ValueError, match="hidden"):
        model.expand_width(0, 1)
