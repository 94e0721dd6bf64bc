"""KAN 2.0's structure tools on functions whose structure is known: sums, products,
compositions and symmetric groups; then on a trained KAN."""

import pytest
import torch

import kanlab
from kanlab import structure


def _x(n=400, d=4, low=-1.0, high=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g, dtype=torch.float64) * (high - low) + low


def test_interaction_matrix_of_a_sum_and_a_product():
    x = _x(d=3)
    f = lambda x: torch.sin(x[:, 0]) + x[:, 1] * x[:, 2]  # noqa: E731
    m = structure.feature_interaction(f, x)
    assert m.shape == (3, 3) and m[1, 2] == 1 and m[0, 1] < 1e-12 and m[0, 2] < 1e-12
    assert structure.detect_separability(f, x) == [[0], [1, 2]]


def test_multiplicative_separability_in_physical_units():
    x = _x(d=3, low=1.0, high=5.0)
    f = lambda x: x[:, 0] ** 2 * torch.exp(-x[:, 1] / 3) * torch.cos(x[:, 2] / 4)  # noqa: E731
    assert structure.detect_separability(f, x, mode="add") == [[0, 1, 2]]  # no sum
    assert structure.detect_separability(f, x, mode="mul") == [[0], [1], [2]]
    assert structure.test_separability(f, x, [[0], [1, 2]], mode="mul")
    assert not structure.test_separability(f, x, [[0], [1, 2]], mode="add")


def test_symmetry_of_a_group_seen_through_one_combination():
    x = _x(d=3)
    f = lambda x: torch.exp(-(x[:, 0] ** 2 + x[:, 1] ** 2)) * (1 + x[:, 2]) + torch.sin(x[:, 2] * (x[:, 0] ** 2 + x[:, 1] ** 2))  # noqa: E731
    assert structure.test_symmetry(f, x, [0, 1])
    assert not structure.test_symmetry(f, x, [0, 2])
    assert structure.test_symmetry(f, x, [2])  # one input is always "one combination"


def test_tree_of_a_nested_formula():
    x = _x(d=4, low=0.5, high=1.5)
    # x1 + x2 * f(x3 + x4) : a sum, a product inside it, a composition inside that
    f = lambda x: x[:, 0] + x[:, 1] * torch.sin(x[:, 2] + x[:, 3])  # noqa: E731
    node = structure.tree(f, x)
    assert node.kind == "+" and [c.variables for c in node.children] == [[0], [1, 2, 3]]
    product = node.children[1]
    assert product.kind == "*" and [c.variables for c in product.children] == [[1], [2, 3]]
    assert product.children[1].kind == "f" or product.children[1].kind == "leaf"
    text = node.describe(["a", "b", "c", "d"])
    assert text.startswith("a + b * ") and "c" in text and "d" in text


def test_tree_finds_a_composition_of_a_symmetric_pair():
    x = _x(d=3)
    f = lambda x: torch.tanh(x[:, 0] * x[:, 1] + x[:, 2] ** 3)  # noqa: E731  f(h(x1 x2), x3)? no: f(h(x1, x2, x3))
    node = structure.tree(f, x)
    assert node.kind == "f" and node.children[0].variables in ([0, 1], [0, 1, 2][:2])


def test_plot_tree_draws(tmp_path):
    pytest.importorskip("matplotlib")
    x = _x(d=3)
    node = structure.tree(lambda x: x[:, 0] * x[:, 1] + x[:, 2], x)
    figure = structure.plot_tree(node, tmp_path / "tree.png", names=["a", "b", "c"])
    assert figure is not None and (tmp_path / "tree.png").stat().st_size > 1000


def test_on_a_trained_kan_and_its_methods():
    x = _x(n=600, d=3, seed=1).float()
    y = (torch.sin(2 * x[:, 0]) + x[:, 1] ** 2 + 0.3 * x[:, 2]).unsqueeze(1)
    model = kanlab.KAN([3, 5, 1], grid=5, seed=0)
    model.fit((x, y), steps=40, update_grid=True)
    groups = model.detect_separability(threshold=2e-2)
    assert groups == [[0], [1], [2]]
    assert model.test_separability(groups=[[0], [1, 2]], threshold=2e-2)
    assert model.feature_interaction().shape == (3, 3)
    assert model.tree(threshold=2e-2).kind == "+"


def test_attribution_of_one_node():
    x = _x(n=300, d=3, seed=2).float()
    model = kanlab.KAN([3, 2, 1], grid=3, seed=0)
    with torch.no_grad():
        model.layers[0].mask[0, 2] = 0  # hidden node 0 ignores input 2
        model.layers[0].mask[1, 0] = 0  # hidden node 1 ignores input 0
    model.remember_inputs(x)
    scores = model.attribute(1, 0)  # hidden node 0
    assert scores.node[0][2] == 0 and scores.node[0][0] > 0 and scores.node[1][0] == 1 and scores.node[1][1] == 0
    whole = model.attribute()
    assert torch.equal(whole.node[-1], torch.ones(1))


def test_bad_arguments():
    with pytest.raises(ValueError, match="x is needed"):
        structure.feature_interaction(lambda x: x.sum(1))
    with pytest.raises(ValueError, match="mode"):
        structure.feature_interaction(lambda x: x.sum(1), _x(), mode="both")
    with pytest.raises(ValueError, match="one output"):
        structure.feature_interaction(lambda x: x, _x())
    with pytest.raises(ValueError, match="outside"):
        structure.test_symmetry(lambda x: x.sum(1), _x(), [0, 7])
