"""kanlab.optim: LBFGS takes the same iterates as torch.optim.LBFGS in float64, at less cost per step; adam is torch's Adam, fused."""

import pytest
import torch

from kanlab.optim import LBFGS, adam


def _problem(seed: int = 0):
    """A small nonlinear least-squares problem with parameters of several shapes (float64)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(200, 3, generator=generator, dtype=torch.float64)
    y = torch.sin(x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).unsqueeze(1)
    parameters = [
        torch.randn(3, 6, generator=generator, dtype=torch.float64).requires_grad_(),
        torch.zeros(6, dtype=torch.float64, requires_grad=True),
        torch.randn(6, 1, generator=generator, dtype=torch.float64).mul(0.3).requires_grad_(),
    ]

    def loss_of(params):
        w, b, v = params
        return ((torch.tanh(x @ w + b) @ v - y) ** 2).mean()

    return parameters, loss_of


def _run(optimizer_class, steps: int, **options):
    parameters, loss_of = _problem()
    optimizer = optimizer_class(parameters, **options)
    losses = []

    def closure():
        optimizer.zero_grad()
        loss = loss_of(parameters)
        loss.backward()
        return loss

    for _ in range(steps):
        losses.append(float(optimizer.step(closure)))
    state = optimizer.state[parameters[0]]
    return torch.cat([p.detach().reshape(-1) for p in parameters]), losses, state["func_evals"], state["n_iter"]


@pytest.mark.parametrize(
    "options",
    [
        dict(lr=1.0, history_size=10, line_search_fn="strong_wolfe", tolerance_grad=1e-32, tolerance_change=1e-32),
        dict(lr=1.0, history_size=3, line_search_fn="strong_wolfe", max_iter=7),  # default tolerances stop it early
        dict(lr=0.1, history_size=5, line_search_fn=None, max_iter=10),
    ],
)
def test_iterates_equal_torchs_lbfgs_bit_for_bit(options):
    """On these problems every step matches torch's to the last bit (a long run may differ by one
    unit in the last place of a step length, where torch divides by a reciprocal: see kanlab.optim)."""
    ours = _run(LBFGS, 15, **options)
    theirs = _run(torch.optim.LBFGS, 15, **options)
    assert torch.equal(ours[0], theirs[0])
    assert ours[1:] == theirs[1:]  # losses, evaluations and iterations


def test_it_minimises_and_resumes_from_its_state_dict():
    options = dict(lr=1.0, history_size=10, line_search_fn="strong_wolfe")
    straight, losses, _, _ = _run(LBFGS, 6, **options)
    assert losses[-1] < 0.1 * losses[0]
    parameters, loss_of = _problem()
    optimizer = LBFGS(parameters, **options)

    def closure():
        optimizer.zero_grad()
        loss = loss_of(parameters)
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)
    saved = optimizer.state_dict()
    resumed = LBFGS(parameters, **options)
    resumed.load_state_dict(saved)
    optimizer = resumed
    for _ in range(3):
        optimizer.step(closure)
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in parameters]), straight)


def test_tolerance_ys_keeps_the_curvature_pairs_of_a_small_loss():
    """torch drops pairs with y's <= 1e-10; on a loss scaled down by 1e-12 that is every pair,
    and the iterates are steepest descent. ``tolerance_ys=1e-32`` (fit's) keeps them."""
    runs = {}
    for tolerance_ys in (1e-10, 1e-32):
        parameters, loss_of = _problem()
        optimizer = LBFGS(parameters, history_size=10, line_search_fn="strong_wolfe",
                          tolerance_grad=1e-32, tolerance_change=1e-32, tolerance_ys=tolerance_ys)

        def closure():
            optimizer.zero_grad()
            loss = loss_of(parameters) * 1e-12
            loss.backward()
            return loss

        for _ in range(5):
            optimizer.step(closure)
        runs[tolerance_ys] = (float(loss_of(parameters)), len(optimizer.state[parameters[0]]["old_dirs"]))
    assert runs[1e-10][1] == 0
    assert runs[1e-32][1] == 10
    assert runs[1e-32][0] < 0.5 * runs[1e-10][0]


def test_a_state_saved_without_tolerance_ys_loads_with_torchs():
    parameters, loss_of = _problem()
    saved = LBFGS(parameters, tolerance_ys=1e-32).state_dict()
    del saved["param_groups"][0]["tolerance_ys"]  # as written before the argument existed
    optimizer = LBFGS(parameters, tolerance_ys=1e-32)
    optimizer.load_state_dict(saved)
    assert optimizer.param_groups[0]["tolerance_ys"] == 1e-10

    def closure():
        optimizer.zero_grad()
        loss = loss_of(parameters)
        loss.backward()
        return loss

    optimizer.step(closure)


def test_bad_arguments_are_named():
    parameters, _ = _problem()
    with pytest.raises(ValueError, match="line_search_fn"):
        LBFGS(parameters, line_search_fn="armijo")
    with pytest.raises(ValueError, match="lr"):
        LBFGS(parameters, lr=0.0)
    with pytest.raises(ValueError, match="history_size"):
        LBFGS(parameters, history_size=0)
    with pytest.raises(ValueError, match="tolerance_ys"):
        LBFGS(parameters, tolerance_ys=-1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_is_fused_on_the_cpu_and_takes_torchs_steps(dtype):
    """``adam`` uses torch's fused kernel on the CPU, whose steps are torch's default Adam's to
    rounding; on a device without one (here "meta") it leaves the choice to torch."""
    generator = torch.Generator().manual_seed(0)
    ours = torch.randn(50, 7, generator=generator, dtype=dtype, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_(True)
    optimizer, reference = adam([ours], lr=1e-2), torch.optim.Adam([theirs], lr=1e-2)
    assert optimizer.defaults["fused"] is True and not reference.defaults["fused"]
    weights = torch.arange(7, dtype=dtype)
    for _ in range(100):
        for parameter, step in ((ours, optimizer), (theirs, reference)):
            step.zero_grad()
            (parameter.sin() * weights).sum().backward()
            step.step()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-13)
    assert not adam([torch.zeros(3, device="meta", requires_grad=True)], lr=1e-3).defaults["fused"]
