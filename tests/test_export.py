"""Deployment exports: ONNX (run in onnxruntime) and torch.export, numeric and symbolic models."""

import numpy as np
import pytest
import torch

import kanlab
from kanlab.export import to_onnx


def _trained(width=(3, 4, 2), mult=False):
    model = kanlab.KAN([3, [4, 1], 2] if mult else list(width), grid=5, seed=0)
    x = torch.rand(128, 3) * 2 - 1
    y = torch.stack([x.sum(1), x[:, 0] * x[:, 1]], 1)
    model.fit((x, y), steps=3, progress=False)  # grid updates: non-uniform knots
    return model


def _run_onnx(path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path))
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("mult", [False, True])
def test_onnx_matches_torch(tmp_path, mult):
    pytest.importorskip("onnxscript")
    model = _trained(mult=mult)
    to_onnx(model, tmp_path / "m.onnx")
    x = (torch.rand(257, 3) * 2.6 - 1.3)  # another batch size, some points outside the grid
    expected = model(x).detach().numpy()
    np.testing.assert_allclose(_run_onnx(tmp_path / "m.onnx", x.numpy()), expected, atol=1e-5, rtol=1e-5)


def test_onnx_symbolic_model(tmp_path, capsys):
    pytest.importorskip("onnxscript")
    model = _trained()
    model.fix_symbolic(0, 0, 0, "sin", fit_params=False)
    model.fix_symbolic(0, 1, 1, "x^2", fit_params=False)
    to_onnx(model, tmp_path / "s.onnx")
    assert capsys.readouterr().out == ""  # the exporter's chatter does not reach the user
    x = torch.rand(64, 3) * 2 - 1
    np.testing.assert_allclose(_run_onnx(tmp_path / "s.onnx", x.numpy()), model(x).detach().numpy(), atol=1e-5, rtol=1e-5)


def test_torch_export_matches_eager():
    model = _trained()
    x = torch.rand(50, 3) * 2 - 1
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    other = torch.rand(33, 3) * 2 - 1
    torch.testing.assert_close(program.module()(other), model(other))


def test_onnx_rejects_a_bad_example(tmp_path):
    with pytest.raises(ValueError, match="example"):
        to_onnx(_trained(), tmp_path / "m.onnx", example=torch.zeros(2, 5))
