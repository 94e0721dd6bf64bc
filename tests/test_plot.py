"""Pictures of a model (kanlab.plot): headless, a Figure back, a PNG only when asked."""

import os

import pytest
import torch

from kanlab import KAN, from_formula
from kanlab.plot import draw

matplotlib = pytest.importorskip("matplotlib")


def test_plot_returns_a_figure_and_writes_only_the_png(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    model = KAN([3, [2, 1], 2], seed=0)  # no forward pass, no samples
    figure = model.plot()
    assert isinstance(figure, matplotlib.figure.Figure)
    assert os.listdir(tmp_path) == []
    figure = model.plot(tmp_path / "kan.png", in_vars=["a", "b", "c"], out_vars=["u", "v"], title="t")
    assert os.listdir(tmp_path) == ["kan.png"]
    assert (tmp_path / "kan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    texts = {t.get_text() for t in figure.axes[0].texts}
    assert {"a", "b", "c", "u", "v"} <= texts


def test_plot_marks_symbolic_edges_and_uses_samples(tmp_path):
    import sympy

    x, y = sympy.symbols("x y")
    model = from_formula(sympy.sin(x) * y, [x, y])
    figure = draw(model, ax=None)
    labels = {t.get_text() for t in figure.axes[0].texts}
    assert "sin" in labels and "x" in labels
    fig = matplotlib.figure.Figure()
    ax = fig.add_subplot(1, 1, 1)
    assert draw(model, ax=ax, x=torch.rand(10, 2, dtype=torch.float64)) is fig
    with pytest.raises(ValueError, match="in_vars"):
        draw(model, in_vars=["only one"])
