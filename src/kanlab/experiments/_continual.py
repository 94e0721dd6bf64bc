"""Paper section 3.5: continual learning on five Gaussian peaks, KAN [1, 1] (G = 200) vs an MLP.

Phase i trains only on 100 points in [c_i - 0.2, c_i + 0.2]. The KAN's edge is a pure spline
(residual ``base_fun="zero"``, scales frozen, no grid updates), so a phase changes only the
coefficients whose support its points touch: what was learned elsewhere stays. The MLP
([1, 64, 64, 1], same optimizer and steps) shares every weight across regions. After each
phase: RMSE on each region seen so far.
"""

from __future__ import annotations

import torch

from ..model import KAN
from .common import Result, Timer, make_mlp, minimize

CENTRES = (-0.8, -0.4, 0.0, 0.4, 0.8)


def target(x: torch.Tensor) -> torch.Tensor:
    return sum(torch.exp(-300 * (x - c) ** 2) for c in CENTRES)


def phase_data(i: int, n: int = 100, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(CENTRES[i] - 0.2, CENTRES[i] + 0.2, n, dtype=dtype).unsqueeze(1)
    return x, target(x)


def _train(model, x, y, steps: int) -> None:
    parameters = [p for p in model.parameters() if p.requires_grad]
    minimize(parameters, lambda: torch.mean((model(x) - y) ** 2), steps)


def run(quick: bool = False, seed: int = 0) -> Result:
    steps = 5 if quick else 50
    kan = KAN([1, 1], grid=200, k=3, seed=seed, base_fun="zero", sb_trainable=False, sp_trainable=False,
              noise_scale=0.0, dtype=torch.float64)
    mlp = make_mlp([1, 64, 64, 1], "silu", seed)
    result = Result("continual", "Continual learning (paper section 3.5): five Gaussian peaks, phase by phase",
                    ["after phase", "model", *[f"RMSE region {i + 1}" for i in range(len(CENTRES))]])
    grid_x = torch.linspace(-1, 1, 801, dtype=torch.float64).unsqueeze(1)
    snapshots = []
    with Timer() as total:
        for phase in range(len(CENTRES)):
            x, y = phase_data(phase)
            for model in (kan, mlp):
                _train(model, x, y, steps)
            with torch.no_grad():
                snapshots.append((kan(grid_x).squeeze(1).clone(), mlp(grid_x).squeeze(1).clone()))
                for name, model in (("KAN [1, 1], G=200", kan), ("MLP [1, 64, 64, 1]", mlp)):
                    errors = []
                    for region in range(len(CENTRES)):
                        if region > phase:
                            errors.append(float("nan"))
                            continue
                        rx, ry = phase_data(region)
                        errors.append(torch.sqrt(torch.mean((model(rx) - ry) ** 2)).item())
                    result.rows.append([phase + 1, name, *errors])
    result.seconds = total.seconds
    result.notes.append(f"LBFGS, {steps} steps per phase for both models; regions not yet seen are blank")
    result.notes.append("paper: the KAN keeps the earlier peaks (local B-splines), the MLP forgets them (Fig 3.4)")

    def draw(figure):
        xs = grid_x.squeeze(1).numpy()
        for phase, (k_values, m_values) in enumerate(snapshots):
            ax = figure.add_subplot(2, len(snapshots), phase + 1)
            ax.plot(xs, target(grid_x).squeeze(1).numpy(), color="0.8")
            ax.plot(xs, k_values.numpy(), color="tab:blue")
            ax.set_title(f"KAN, phase {phase + 1}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
            ax = figure.add_subplot(2, len(snapshots), len(snapshots) + phase + 1)
            ax.plot(xs, target(grid_x).squeeze(1).numpy(), color="0.8")
            ax.plot(xs, m_values.numpy(), color="tab:red")
            ax.set_title(f"MLP, phase {phase + 1}", fontsize=8)
            ax.set_ylim(-0.5, 1.5)
            ax.set_xticks([]), ax.set_yticks([])

    result.draw = draw
    return result
