"""KAN: construction, module behaviour, multiplication nodes, derivatives, refine."""

import copy
import io
import pickle

import pytest
import torch

from kanlab import KAN, create_dataset, paper_function


def _x(n=20, d=2, seed=0):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def test_shapes_and_width_parsing():
    model = KAN([3, 4, [2, 1], 2], grid=4, dtype=torch.float64)
    assert model.width == [[3, 0], [4, 0], [2, 1], [2, 0]]
    assert [layer.out_features for layer in model.layers] == [4, 2 + 2, 2]
    assert [layer.in_features for layer in model.layers] == [3, 4, 3]
    assert model(_x(5, 3)).shape == (5, 2)


def test_construction_never_touches_global_rng_and_seed_reproduces():
    state = torch.get_rng_state()
    first = KAN([2, 3, 1], seed=3)
    assert torch.equal(state, torch.get_rng_state())
    second = KAN([2, 3, 1], seed=3)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(KAN([2, 3, 1], seed=4).layers[0].coef, first.layers[0].coef)


def test_multiplication_nodes_compute_products_of_subnodes():
    model = KAN([2, [1, 2], 1], mult_arity=[0, [2, 3], 0], dtype=torch.float64)
    x = _x()
    sub = model.layers[0](x)
    hidden = torch.stack([sub[:, 0], sub[:, 1] * sub[:, 2], sub[:, 3] * sub[:, 4] * sub[:, 5]], dim=1)
    torch.testing.assert_close(model(x), model.layers[1](hidden))
    out, inputs = model.forward_with_inputs(x)
    torch.testing.assert_close(inputs[1], hidden)


@pytest.mark.parametrize(
    "width, options, message",
    [
        ([2], {}, "at least 2"),
        (5, {}, "at least 2"),
        ([2, 0, 1], {}, "at least one node"),
        ([2, "a", 1], {}, "width\\[1\\]"),
        ([[1, 1], 2], {}, "input layer"),
        ([2, 3, 1], {"grid": 0}, "grid"),
        ([2, 3, 1], {"k": 0}, "k \\(spline degree\\)"),
        ([2, [1, 1], 1], {"mult_arity": 1}, "mult_arity"),
        ([2, 3, 1], {"seed": 1.5}, "seed"),
    ],
)
def test_bad_construction(width, options, message):
    with pytest.raises(ValueError, match=message):
        KAN(width, **options)


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.rand(4), ValueError, "2-D"),
        (torch.rand(4, 3, dtype=torch.float64), ValueError, "2 features"),
        (torch.rand(4, 2, dtype=torch.float32), TypeError, "dtype"),
    ],
)
def test_bad_input(x, error, message):
    with pytest.raises(error, match=message):
        KAN([2, 3, 1], dtype=torch.float64)(x)


def test_module_behaviour_copy_pickle_torch_save_double_state_dict():
    model = KAN([2, [3, 1], 1], grid=4)
    model.remember_inputs(torch.rand(30, 2))
    x = torch.rand(8, 2)
    expected = model(x)
    assert torch.equal(copy.deepcopy(model)(x), expected)
    assert torch.equal(pickle.loads(pickle.dumps(model))(x), expected)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False)(x), expected)
    fresh = KAN([2, [3, 1], 1], grid=4, seed=9)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), expected) and torch.equal(fresh.sample_input, model.sample_input)
    double = copy.deepcopy(model).double()
    assert double.dtype == torch.float64 and double.sample_input.dtype == torch.float64
    torch.testing.assert_close(double(x.double()).float(), expected)


def test_gradcheck_and_gradgradcheck_three_layer_kan():
    model = KAN([2, 3, 2, 1], grid=4, dtype=torch.float64)
    x = (_x(5) * 0.9).requires_grad_()
    assert torch.autograd.gradcheck(model, (x,))
    assert torch.autograd.gradgradcheck(model, (x,))


def test_second_derivatives_match_finite_differences():
    model = KAN([2, 4, 1], grid=5, dtype=torch.float64, seed=1)
    with torch.no_grad():
        for layer in model.layers:
            layer.coef.normal_(generator=torch.Generator().manual_seed(2))
    x = (_x(6) * 0.8).requires_grad_()
    (gradient,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    laplacian = sum(torch.autograd.grad(gradient[:, d].sum(), x, retain_graph=True)[0][:, d] for d in range(2))
    step = 1e-4
    with torch.no_grad():
        numeric = torch.zeros(6, dtype=torch.float64)
        for d in range(2):
            shift = torch.zeros(2, dtype=torch.float64)
            shift[d] = step
            numeric += ((model(x + shift) - 2 * model(x) + model(x - shift)) / step**2).squeeze(1)
    torch.testing.assert_close(laplacian, numeric, rtol=1e-4, atol=1e-4)


def test_refine_keeps_the_function_on_training_inputs():
    function, n_var = paper_function("exp_sin")
    data = create_dataset(function, n_var=n_var, train_num=300, test_num=10, dtype=torch.float64)
    model = KAN([2, 3, 1], grid=5, dtype=torch.float64)
    model.fit(data, steps=50, log=50, progress=False)  # the usual schedule: grid updates to step 45
    x = data["train_input"]
    for new_grid in (10, 20, 37):
        finer = model.refine(new_grid)
        assert finer.grid == new_grid and all(layer.grid_size == new_grid for layer in finer.layers)
        assert ((finer(x) - model(x)).norm() / model(x).norm()).item() < 1e-3
    assert model.grid == 5


def test_refine_without_samples_uses_the_grid_span():
    model = KAN([2, 2, 1], grid=5, dtype=torch.float64)
    x = _x(100) * 0.9
    finer = model.refine(10)
    torch.testing.assert_close(finer(x), model(x), rtol=1e-9, atol=1e-9)  # knot insertion: exact


def test_update_grid_from_samples_and_no_sample_error():
    model = KAN([2, 3, 1], grid=10, dtype=torch.float64)
    with pytest.raises(ValueError, match="no samples"):
        model.update_grid()
    with torch.no_grad():  # edges that are smooth at the grid's scale (the random init is not)
        for layer in model.layers:
            layer.coef.copy_(torch.sin(torch.linspace(0, 2, layer.n_basis, dtype=torch.float64)) * 0.5)
    x = _x(400)
    before = model(x)
    model.update_grid(x)
    assert ((model(x) - before).norm() / before.norm()).item() < 1e-3


def test_torch_compile_fullgraph_matches_eager():
    model = KAN([2, 3, 1], grid=5)
    x = torch.rand(16, 2)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), model(x))
