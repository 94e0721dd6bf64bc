"""Grids that follow the data in a plain training loop (kanlab.grid_keeping)."""

import torch
from torch import nn

import kanlab
from kanlab import KAN, KANLinear
from kanlab.grid_keeping import due


def _layer(**options):
    return KANLinear(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0), **options)


def test_schedule_is_powers_of_two_up_to_the_limit():
    assert [s for s in range(1, 1100) if due(s, 512)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


def test_training_forwards_move_the_grid_over_every_value_seen():
    torch.manual_seed(0)
    layer = _layer()
    knots = []
    for step in range(1, 9):
        x = 3.0 * torch.randn(64, 3, dtype=torch.float64)
        layer(x)
        knots.append(layer.grid.clone())
        assert int(layer.grid_steps) == step
    # moved on forwards 1, 2, 4, 8 only
    moved = [not torch.equal(knots[i], knots[i - 1]) for i in range(1, 8)]
    assert moved == [True, False, True, False, False, False, True]
    k = layer.k
    assert (layer.grid[:, k] <= layer.input_min).all() and (layer.grid[:, -k - 1] >= layer.input_max).all()
    assert layer.input_min.max() < -5 and layer.input_max.min() > 5  # not the fixed [-1, 1]


def test_an_update_keeps_each_edge_function_on_the_batch():
    torch.manual_seed(1)
    layer = _layer()
    layer(torch.rand(256, 3, dtype=torch.float64) * 1.6 - 0.8)  # first update: inside the old grid
    x = torch.rand(256, 3, dtype=torch.float64) * 1.6 - 0.8
    with torch.no_grad():
        before = layer(x)
    layer(x)  # the second update, on these samples
    with torch.no_grad():
        after = layer(x)
    assert torch.allclose(before, after, rtol=0, atol=1e-2 * before.abs().max())


def test_eval_mode_no_grad_and_none_leave_the_grid_alone():
    x = 3.0 * torch.randn(32, 3, dtype=torch.float64)
    for layer, run in ((_layer().eval(), lambda l: l(x)), (_layer(), lambda l: torch.no_grad()(l)(x)),
                       (_layer(grid_update=None), lambda l: l(x))):
        grid = layer.grid.clone()
        run(layer)
        assert torch.equal(layer.grid, grid) and int(layer.grid_steps) == 0


def test_state_is_saved_deterministic_and_old_state_dicts_load():
    def trained():
        torch.manual_seed(2)
        layer = _layer()
        optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
        for _ in range(5):
            loss = layer(2 * torch.randn(32, 3, dtype=torch.float64)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return layer.state_dict()

    first, second = trained(), trained()
    assert {"input_min", "input_max", "grid_steps"} <= set(first)
    assert all(torch.equal(first[key], second[key]) for key in first)
    old = {key: value for key, value in first.items() if key not in ("input_min", "input_max", "grid_steps")}
    fresh = _layer()
    fresh.load_state_dict(old)
    assert torch.equal(fresh.grid, first["grid"]) and int(fresh.grid_steps) == 0


def test_kan_layers_leave_grids_to_fit_which_pauses_automatic_ones():
    model = KAN([2, 3, 1], seed=0, dtype=torch.float64)
    assert all(layer.grid_update is None for layer in model.layers)
    model.layers[0].grid_update = "auto"
    x = torch.rand(50, 2, dtype=torch.float64)
    model.fit((x, x.sum(1, keepdim=True)), steps=3, opt="Adam", update_grid=False, progress=False)
    assert int(model.layers[0].grid_steps) == 0 and model.layers[0].grid_update == "auto"


def test_a_plain_loop_on_standardized_data_fits_better_with_grid_keeping():
    torch.manual_seed(3)
    x = 2 * torch.randn(512, 4)  # most values outside the initial grid [-1, 1]
    y = torch.sin(2 * x[:, :1]) + torch.tanh(x[:, 1:2] * x[:, 2:3])

    def loss_after(grid_update):
        torch.manual_seed(0)
        net = nn.Sequential(kanlab.KANLinear(4, 8, grid_update=grid_update), kanlab.KANLinear(8, 1, grid_update=grid_update))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(1000):
            loss = (net(x) - y).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return float((net.eval()(x) - y).square().mean())

    kept, fixed = loss_after("auto"), loss_after(None)
    assert kept < 0.5 * fixed, (kept, fixed)


def test_pruned_and_sliced_layers_keep_their_statistics_per_input(tmp_path):
    model = KAN([3, 4, 1], seed=0, dtype=torch.float64)
    x = torch.rand(100, 3, dtype=torch.float64)
    model.fit((x, x[:, :1] ** 2), steps=5, lamb=1e-2, progress=False)
    pruned = model.prune()
    for layer in pruned.layers:
        assert layer.input_min.shape == (layer.in_features,) == layer.input_max.shape
    pruned.save(tmp_path / "pruned.kan")
    again = KAN.load(tmp_path / "pruned.kan")
    assert torch.equal(again(x), pruned(x))


def test_after_the_schedule_a_forward_records_nothing():
    layer = kanlab.KANLinear(2, 3, grid_update_until=4)
    for _ in range(6):
        layer(torch.randn(16, 2))
    assert int(layer.grid_steps) == 4
    low, high, grid = layer.input_min.clone(), layer.input_max.clone(), layer.grid.clone()
    layer(10 * torch.randn(16, 2))
    assert torch.equal(layer.input_min, low) and torch.equal(layer.input_max, high) and torch.equal(layer.grid, grid)
    # a loaded count is read again: a layer reset to step 0 by loading keeps its grid again
    state = kanlab.KANLinear(2, 3, grid_update_until=4).state_dict()
    layer.load_state_dict(state)
    layer(5 * torch.randn(16, 2))
    assert int(layer.grid_steps) == 1 and float(layer.input_max.max()) > 1
