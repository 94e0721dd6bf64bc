import pytest
import torch


def random_knots(n_inputs: int, n_knots: int, generator: torch.Generator) -> torch.Tensor:
    """Strictly increasing random knot vectors ``(n_inputs, n_knots)`` in float64."""
    gaps = torch.rand(n_inputs, n_knots - 1, generator=generator, dtype=torch.float64) + 0.05
    start = torch.rand(n_inputs, 1, generator=generator, dtype=torch.float64) * 2 - 3
    return torch.cat([start, start + gaps.cumsum(1)], dim=1)


@pytest.fixture(scope="session", autouse=True)
def torch_path_unless_asked():
    """Tests exercise the pure-torch path; test_native.py turns the compiled kernel on for itself."""
    from kanlab import native

    with native.use(False):
        yield
