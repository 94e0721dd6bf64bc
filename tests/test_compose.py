"""Composite edges f(g(x)) (kanlab.compose): found by auto_symbolic, written, saved and loaded."""

import sympy
import torch

import kanlab
from kanlab import KAN
from kanlab.compose import compositions, resolve


def test_composites_compute_their_parts_composition():
    library = kanlab.default_library()
    composites = compositions(library)
    z = torch.linspace(-0.9, 0.9, 7, dtype=torch.float64)
    exp_sin = composites["exp(sin)"]
    torch.testing.assert_close(exp_sin.torch(z), torch.exp(torch.sin(z)))
    x = sympy.Symbol("x", real=True)
    assert sympy.simplify(exp_sin.sympy(x) - sympy.exp(sympy.sin(x))) == 0
    assert exp_sin.complexity == library["exp"].complexity + library["sin"].complexity
    assert resolve("cos(x^2)", library).name == "cos(x^2)" and resolve("cos", library) is None


def test_a_composite_edge_is_snapped_written_and_saved(tmp_path):
    f = lambda x: torch.cos(2 * x[:, :1] ** 2)  # noqa: E731 - one edge: cos(x**2), no single library function
    data = kanlab.create_dataset(f, n_var=1, train_num=400, test_num=100, seed=0, dtype=torch.float64, ranges=(-1.5, 1.5))
    model = KAN([1, 1], grid=20, seed=0, dtype=torch.float64)
    model.fit(data, steps=50, progress=False)
    single = KAN([1, 1], grid=20, seed=0, dtype=torch.float64)
    single.load_state_dict(model.state_dict())
    single.sample_input = model.sample_input
    report = single.auto_symbolic(compose_below=None)
    assert "(" not in report[(0, 0, 0)].name  # without compositions: a single function
    report = model.auto_symbolic()
    assert report[(0, 0, 0)].name == "cos(x^2)", report
    model.fit(data, steps=30, update_grid=False, progress=False)
    (formula,) = model.symbolic_formula()
    x1 = sorted(formula.free_symbols, key=str)[0]
    values = sympy.lambdify(x1, formula, "numpy")(data["test_input"][:, 0].numpy())
    assert abs(values - data["test_label"][:, 0].numpy()).max() < 1e-6, formula
    model.save(tmp_path / "composite.kan")
    again = KAN.load(tmp_path / "composite.kan")
    torch.testing.assert_close(again(data["test_input"]), model(data["test_input"]))
