"""Paper section 3.4: a 2-D Poisson equation solved as a PINN, KAN [2, 10, 1] vs MLPs.

u_xx + u_yy = f on [-1, 1]^2, u = 0 on the boundary, with the exact solution
u = sin(pi x) sin(pi y^2). Loss = alpha * mean(residual^2) + mean(u_boundary^2), alpha = 0.01,
10,000 interior and 800 boundary points; second derivatives by autograd (create_graph). The
KAN adapts its grid to the points and is refined through the grids; the MLPs (tanh, width 100,
1 to 3 hidden layers) get LBFGS with the same total number of steps. L2 and H1 errors are
measured against the exact solution on a 101 x 101 grid.
"""

from __future__ import annotations

import math

import torch

from ..model import KAN
from .common import Result, Timer, make_mlp, minimize, mlp_parameters

ALPHA = 0.01


def exact(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(math.pi * x[:, 0]) * torch.sin(math.pi * x[:, 1] ** 2)


def exact_gradient(x: torch.Tensor) -> torch.Tensor:
    gx = math.pi * torch.cos(math.pi * x[:, 0]) * torch.sin(math.pi * x[:, 1] ** 2)
    gy = torch.sin(math.pi * x[:, 0]) * torch.cos(math.pi * x[:, 1] ** 2) * 2 * math.pi * x[:, 1]
    return torch.stack([gx, gy], dim=1)


def source(x: torch.Tensor) -> torch.Tensor:
    """f = Laplacian of the exact solution."""
    px, y = math.pi * x[:, 0], x[:, 1]
    return (-(math.pi**2) * (1 + 4 * y**2) * torch.sin(px) * torch.sin(math.pi * y**2)
            + 2 * math.pi * torch.sin(px) * torch.cos(math.pi * y**2))


def points(n_interior: int, n_boundary: int, seed: int = 0, dtype=torch.float64):
    """Random interior points and points spread evenly over the four edges."""
    g = torch.Generator().manual_seed(seed)
    interior = torch.rand(n_interior, 2, generator=g, dtype=dtype) * 2 - 1
    t = torch.linspace(-1, 1, n_boundary // 4 + 1, dtype=dtype)[:-1]
    one = torch.ones_like(t)
    boundary = torch.cat([torch.stack(p, 1) for p in ((t, -one), (one, t), (-t, one), (-one, -t))])
    return interior, boundary


def laplacian(model, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    u = model(x).squeeze(-1)
    (grad,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    u_xx = torch.autograd.grad(grad[:, 0].sum(), x, create_graph=True)[0][:, 0]
    u_yy = torch.autograd.grad(grad[:, 1].sum(), x, create_graph=True)[0][:, 1]
    return u_xx + u_yy


def pinn_loss(model, interior, boundary, f_interior) -> torch.Tensor:
    residual = laplacian(model, interior) - f_interior
    return ALPHA * torch.mean(residual**2) + torch.mean(model(boundary).squeeze(-1) ** 2)


def errors(model, n: int = 101) -> tuple[float, float]:
    axis = torch.linspace(-1, 1, n, dtype=torch.float64)
    x = torch.cartesian_prod(axis, axis).requires_grad_(True)
    u = model(x).squeeze(-1)
    (grad,) = torch.autograd.grad(u.sum(), x)
    with torch.no_grad():
        l2 = torch.mean((u - exact(x)) ** 2).item()
        h1 = l2 + torch.mean(((grad - exact_gradient(x)) ** 2).sum(1)).item()
    return math.sqrt(l2), math.sqrt(h1)


def train(model, interior, boundary, steps: int) -> None:
    f_interior = source(interior)
    parameters = [p for p in model.parameters() if p.requires_grad]
    minimize(parameters, lambda: pinn_loss(model, interior, boundary, f_interior), steps)


FULL = dict(n_interior=10000, n_boundary=800, grids=(5, 10, 20), steps=50, mlp_widths=(100,), mlp_depths=(1, 2, 3))
QUICK = dict(n_interior=400, n_boundary=80, grids=(5,), steps=5, mlp_widths=(32,), mlp_depths=(1,))


def run(quick: bool = False, seed: int = 0) -> Result:
    setting = QUICK if quick else FULL
    interior, boundary = points(setting["n_interior"], setting["n_boundary"], seed)
    result = Result("poisson", "Poisson equation as a PINN (paper section 3.4)",
                    ["model", "parameters", "L2 error", "H1 error", "LBFGS steps", "seconds"])
    total_steps = setting["steps"] * len(setting["grids"])
    with Timer() as total:
        with Timer() as timer:
            model = None
            for grid in setting["grids"]:
                if model is None:
                    model = KAN([2, 10, 1], grid=grid, seed=seed, dtype=torch.float64)
                    model.update_grid(interior)
                else:
                    model = model.refine(grid, interior)
                train(model, interior, boundary, setting["steps"])
        n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad) - 4 * 30  # no symbolic affine
        result.rows.append([f"KAN [2, 10, 1], G {'->'.join(map(str, setting['grids']))}", n_parameters,
                            *errors(model), total_steps, round(timer.seconds, 1)])
        kan_model = model
        for width in setting["mlp_widths"]:
            for depth in setting["mlp_depths"]:
                sizes = [2, *([width] * depth), 1]
                with Timer() as timer:
                    mlp = make_mlp(sizes, "tanh", seed)
                    train(mlp, interior, boundary, total_steps)
                result.rows.append([f"MLP {sizes} (tanh)", mlp_parameters(sizes), *errors(mlp), total_steps,
                                    round(timer.seconds, 1)])
    result.seconds = total.seconds
    result.notes.append(f"{setting['n_interior']} interior and {setting['n_boundary']} boundary points, alpha = {ALPHA}")
    result.notes.append("paper (Fig 3.3): KAN [2, 10, 1] reaches L2 about 1e-4 to 1e-3 after grid extension, "
                        "about 100x below MLPs [2, 100 x depth, 1] with far more parameters")

    def draw(figure):
        axis = torch.linspace(-1, 1, 101, dtype=torch.float64)
        x = torch.cartesian_prod(axis, axis)
        with torch.no_grad():
            u = kan_model(x).squeeze(-1)
        for index, (values, title) in enumerate(((exact(x), "exact u"), (u, "KAN u"), (u - exact(x), "KAN error"))):
            ax = figure.add_subplot(1, 3, index + 1)
            image = ax.imshow(values.reshape(101, 101).T.numpy(), origin="lower", extent=(-1, 1, -1, 1))
            figure.colorbar(image, ax=ax, shrink=0.7)
            ax.set_title(title)

    result.draw = draw
    return result
