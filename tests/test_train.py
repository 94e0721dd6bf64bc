"""fit: data forms, history, regulariser, grid schedule, reproducibility, divergence, accuracy."""

import math

import numpy as np
import pytest
import torch

from kanlab import KAN, create_dataset, fit, paper_function, regularization


@pytest.fixture(scope="module")
def data64():
    function, n_var = paper_function("exp_sin")
    return create_dataset(function, n_var=n_var, train_num=200, test_num=100, dtype=torch.float64)


def test_fit_dict_returns_history_and_improves(data64):
    model = KAN([2, 3, 1], grid=5, dtype=torch.float64)
    history = model.fit(data64, steps=6, progress=False)
    assert history["step"] == [1, 2, 3, 4, 5, 6]
    assert history["train_rmse"] is history["train_loss"] and len(history["test_loss"]) == 6
    assert history["test_loss"][-1] < 0.2 and history["stopped"] is None
    assert model.sample_input.shape == (200, 2)


def test_fit_accepts_arrays_pairs_and_dataloaders(data64):
    x, y = data64["train_input"].numpy(), data64["train_label"].numpy()[:, 0]
    model = KAN([2, 3, 1], dtype=torch.float64)
    history = model.fit((x, y), opt="Adam", lr=1e-2, steps=3, progress=False, test=(x, y))
    assert math.isfinite(history["test_loss"][-1])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data64["train_input"], data64["train_label"]), batch_size=50
    )
    history = model.fit(loader, opt="Adam", lr=1e-2, steps=5, progress=False, log=5)
    assert history["step"] == [5] and math.isnan(history["test_loss"][0])


def test_adam_minibatches_and_metrics(data64):
    model = KAN([2, 3, 1], dtype=torch.float64)
    mae = {"mae": lambda pred, label: (pred - label).abs().mean().item()}
    history = model.fit(data64, opt="Adam", lr=0.02, batch=32, steps=40, log=10, metrics=mae, progress=False)
    assert history["step"] == [10, 20, 30, 40] and len(history["test_mae"]) == 4
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_same_seed_is_bit_identical(data64):
    results = []
    for _ in range(2):
        model = KAN([2, 3, 1], seed=1, dtype=torch.float64)
        history = model.fit(data64, steps=4, lamb=1e-3, progress=False)
        results.append((history["train_loss"], [p.clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_regularization_equals_the_explicit_formula(data64):
    model = KAN([2, 3, 2], dtype=torch.float64)
    x = data64["train_input"]
    _, inputs = model.forward_with_inputs(x)
    value = regularization(model, inputs, lamb_l1=1.0, lamb_entropy=2.0, lamb_coef=0.5, lamb_coefdiff=0.25)
    expected = 0.0
    for layer, h in zip(model.layers, inputs):
        norms = layer.edge_activations(h).abs().mean(0).detach().numpy()
        share = norms / norms.sum()
        coef = layer.coef.detach().numpy()
        expected += norms.sum() - 2.0 * (share * np.log(share)).sum()
        expected += 0.5 * np.abs(coef).mean() + 0.25 * np.abs(np.diff(coef, axis=-1)).mean()
    assert value.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("base_fun", ["silu", "zero"])
def test_training_path_edge_norms_equal_explicit_activations(base_fun):
    """fit's regulariser reads |phi|_1 off the forward pass's features; it must equal the
    explicit per-edge mean, values and gradients, with a symbolic edge and a masked one."""
    from kanlab.functions import default_library

    model = KAN([3, [2, 1], 2], base_fun=base_fun, dtype=torch.float64, seed=3)
    model.layers[0].set_symbolic(1, 2, default_library()["sin"], (1.5, 0.1, 0.7, 0.0))
    model.remove_edge(1, 0, 1)
    x = (torch.rand(70, 3, dtype=torch.float64) * 2.4 - 1.2).requires_grad_(True)
    out, norms = model.forward_with_edge_norms(x)
    torch.testing.assert_close(out, model(x))
    inputs = model.forward_with_inputs(x)[1]
    explicit = [layer.edge_activations(h, part="numeric").abs().mean(0) for layer, h in zip(model.layers, inputs)]
    for fast, slow in zip(norms, explicit):
        torch.testing.assert_close(fast, slow)
    weights = [torch.rand_like(n) for n in norms]
    fast_grads = torch.autograd.grad(sum((w * n).sum() for w, n in zip(weights, norms)), [x, *model.parameters()], allow_unused=True)
    slow_grads = torch.autograd.grad(sum((w * n).sum() for w, n in zip(weights, explicit)), [x, *model.parameters()], allow_unused=True)
    for fast, slow, wrt in zip(fast_grads, slow_grads, [x, *model.parameters()]):
        zero = torch.zeros_like(wrt)  # an unused input is a zero gradient either way
        torch.testing.assert_close(zero if fast is None else fast, zero if slow is None else slow)


def test_sparsification_shrinks_edges(data64):
    plain = KAN([2, 5, 1], dtype=torch.float64)
    sparse = KAN([2, 5, 1], dtype=torch.float64)
    plain.fit(data64, steps=15, progress=False)
    sparse.fit(data64, steps=15, lamb=1e-2, progress=False)
    norm = lambda m: sum(layer.edge_mean_abs(h).sum() for layer, h in zip(m.layers, m.layer_inputs()))
    assert norm(sparse) < 0.7 * norm(plain)


def test_grid_update_schedule(data64, monkeypatch):
    calls = []
    model = KAN([2, 2, 1], dtype=torch.float64)
    original = KAN.update_grid
    monkeypatch.setattr(KAN, "update_grid", lambda self, x=None: calls.append(1) or original(self, x))
    model.fit(data64, steps=12, grid_update_num=5, stop_grid_update_step=10, progress=False)
    assert len(calls) == 5  # steps 0, 2, 4, 6, 8
    calls.clear()
    model.fit(data64, steps=12, update_grid=False, progress=False)
    assert not calls


def test_divergence_restores_the_best_state(data64, caplog):
    model = KAN([2, 3, 1], dtype=torch.float64)
    poisoned = {"count": 0}

    def loss_fn(pred, label):
        poisoned["count"] += 1
        loss = torch.mean((pred - label) ** 2)
        return loss * float("nan") if poisoned["count"] > 30 else loss

    with caplog.at_level("WARNING", logger="kanlab"):
        history = model.fit(data64, opt="Adam", lr=1e-2, steps=50, loss_fn=loss_fn, progress=False)
    assert history["stopped"] == "diverged" and "diverged" in caplog.text
    assert all(torch.isfinite(p).all() for p in model.parameters())
    best = min(history["objective"][:-1])
    with torch.no_grad():
        now = torch.mean((model(data64["train_input"]) - data64["train_label"]) ** 2).item()
    assert now == pytest.approx(best, rel=1e-12)


def test_interrupt_leaves_the_best_state(data64):
    model = KAN([2, 3, 1], dtype=torch.float64)

    def interrupt(step, model_, history):
        if step == 4:
            with torch.no_grad():  # a half-finished update
                model_.layers[0].coef.fill_(1e6)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(data64, opt="Adam", lr=1e-2, steps=10, callbacks=[interrupt], progress=False)
    assert model.layers[0].coef.abs().max() < 1e3


def test_callback_can_stop_training(data64):
    model = KAN([2, 3, 1], dtype=torch.float64)
    history = model.fit(data64, steps=10, callbacks=[lambda step, m, h: step == 3], progress=False)
    assert history["step"] == [1, 2, 3] and history["stopped"] == "callback"


@pytest.mark.parametrize(
    "dataset, options, error, message",
    [
        ({"train_input": torch.zeros(0, 2, dtype=torch.float64), "train_label": torch.zeros(0, 1, dtype=torch.float64)}, {}, ValueError, "empty"),
        ({"train_input": torch.full((3, 2), float("nan"), dtype=torch.float64), "train_label": torch.zeros(3, 1, dtype=torch.float64)}, {}, ValueError, "NaN"),
        ({"train_input": torch.zeros(3, 3, dtype=torch.float64), "train_label": torch.zeros(3, 1, dtype=torch.float64)}, {}, ValueError, "train_input must be 2-D \\(N, 2\\)"),
        ({"train_input": torch.zeros(3, 2), "train_label": torch.zeros(3, 1)}, {}, TypeError, "dtype"),
        ({"train_input": torch.zeros(3, 2, dtype=torch.float64)}, {}, ValueError, "missing"),
        ({"train_input": torch.zeros(3, 2, dtype=torch.float64), "train_label": torch.zeros(4, 1, dtype=torch.float64)}, {}, ValueError, "rows"),
        ("data.csv", {}, TypeError, "dataset must be"),
        ((np.zeros((3, 2)), np.zeros(3)), {"opt": "SGD"}, ValueError, "opt"),
        ((np.zeros((3, 2)), np.zeros(3)), {"batch": 0}, ValueError, "batch"),
    ],
)
def test_bad_training_input(dataset, options, error, message):
    with pytest.raises(error, match=message):
        fit(KAN([2, 2, 1], dtype=torch.float64), dataset, steps=1, progress=False, **options)


def test_grid_extension_accuracy_matches_the_paper():
    """KAN([2, 1, 1]) on exp(sin(pi x) + y^2), 50 LBFGS steps per grid (pykan logs 6.8e-3, 3.6e-4, 4.0e-5, 8.2e-6)."""
    function, n_var = paper_function("exp_sin")
    data = create_dataset(function, n_var=n_var, train_num=1000, test_num=1000, dtype=torch.float64, seed=0)
    targets = {5: 1e-2, 10: 5e-4, 20: 6e-5, 50: 2e-5}
    model, reached = None, {}
    for grid in targets:
        model = KAN([2, 1, 1], grid=grid, seed=0, dtype=torch.float64) if model is None else model.refine(grid)
        reached[grid] = model.fit(data, steps=50, progress=False)["test_loss"][-1]
    assert all(reached[grid] <= target for grid, target in targets.items()), reached


def test_progress_bar_when_asked_and_silent_on_a_pipe(data64, capsys):
    model = KAN([2, 2, 1], dtype=torch.float64)
    model.fit(data64, steps=3, progress=True)
    assert "fit" in capsys.readouterr().err
    model.fit(data64, steps=3)  # default: only on a terminal; pytest's stderr is not one
    assert capsys.readouterr().err == ""


def test_float32_training_works():
    function, n_var = paper_function("exp_sin")
    data = create_dataset(function, n_var=n_var, train_num=200, test_num=50, dtype=torch.float32)
    model = KAN([2, 3, 1])
    history = model.fit(data, steps=10, progress=False)
    assert history["train_loss"][-1] < 0.15 * history["train_loss"][0] and model.dtype == torch.float32


def _sparsity_by_autograd(norms, lamb_l1, lamb_entropy):
    """The regulariser's L1 and entropy terms in plain torch operations, and autograd's gradient."""
    leaves = [n.detach().clone().requires_grad_(True) for n in norms]
    total = leaves[0].new_zeros(())
    for n in leaves:
        share = n / (n.sum() + 1e-12)
        total = total + lamb_l1 * n.sum() - lamb_entropy * (share * torch.log(share.clamp_min(1e-12))).sum()
    return total.detach(), list(torch.autograd.grad(total, leaves))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", [(1.0, 2.0), (0.0, 2.0), (1.0, 0.0), (0.3, 0.7)])
def test_sparsity_gradient_written_out_equals_autograd(dtype, weights):
    """The L1 and entropy terms with their gradient written out (numpy on the CPU, torch
    operations elsewhere) against autograd of the plain formula, with pruned (zero) edges."""
    from kanlab.sparsity import edge_sparsity, sparsity_and_gradients

    generator = torch.Generator().manual_seed(3)
    norms = [torch.rand(5, 2, generator=generator, dtype=torch.float64).to(dtype),
             torch.rand(1, 5, generator=generator, dtype=torch.float64).to(dtype)]
    norms[0][2, 1] = 0.0
    expected, expected_grads = _sparsity_by_autograd(norms, *weights)
    value, grads = sparsity_and_gradients(norms, *weights)  # numpy
    total, torch_grads = norms[0].new_zeros(()), []
    for n in norms:
        total, gradient = edge_sparsity(n, *weights, total)
        torch_grads.append(gradient)
    tolerance = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    assert value.dtype == dtype and value.shape == ()
    for ours in (value, total):
        torch.testing.assert_close(ours, expected, **tolerance)
    for ours, theirs in zip(grads + torch_grads, expected_grads * 2):
        torch.testing.assert_close(ours, theirs, **tolerance)


def test_sparsity_node_passes_gradcheck():
    from kanlab.sparsity import EdgeSparsity

    generator = torch.Generator().manual_seed(4)
    norms = [torch.rand(3, 2, generator=generator, dtype=torch.float64).add_(0.1).requires_grad_(True),
             torch.rand(2, 3, generator=generator, dtype=torch.float64).add_(0.1).requires_grad_(True)]
    assert torch.autograd.gradcheck(lambda *n: EdgeSparsity.apply(1.0, 2.0, *n), norms)


def test_sparsity_in_other_precisions_and_its_second_order_refused():
    """bfloat16 norms take the torch operations (numpy has no bfloat16); the written-out
    gradient is first order only, and a graph built through it says so."""
    from kanlab.sparsity import EdgeSparsity, sparsity_and_gradients

    norms = [torch.tensor([[0.5, 0.25]], dtype=torch.bfloat16)]
    value, (gradient,) = sparsity_and_gradients(norms, 1.0, 2.0)
    assert value.dtype == torch.bfloat16 and gradient.dtype == torch.bfloat16
    leaf = torch.tensor([[0.5, 0.25]], dtype=torch.float64, requires_grad=True)
    (first,) = torch.autograd.grad(EdgeSparsity.apply(1.0, 2.0, leaf), leaf, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        first.sum().backward()
