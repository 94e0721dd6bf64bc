import pytest
import torch


def random_knots(n_inputs: int, n_knots: int, generator: torch.Generator) -> torch.Tensor:
    """Strictly increasing random knot vectors ``(n_inputs, n_knots)`` in float64."""
    gaps = torch.rand(n_inputs, n_knots - 1, generator=generator, dtype=torch.float64) + 0.05
    start = torch.rand(n_inputs, 1, generator=generator, dtype=torch.float64) * 2 - 3
    return torch.cat([start, start + gaps.cumsum(1)], dim=1)


@pytest.fixture(autouse=True)
def outside_the_working_folder(tmp_path, monkeypatch):
    """Every test runs in a folder of its own, so nothing a user (or ``make demo``) left in the
    working folder changes a result, and no test leaves a file there."""
    monkeypatch.chdir(tmp_path)
