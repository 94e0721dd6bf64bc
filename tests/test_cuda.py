"""The torch path on CUDA: the same numbers as on the CPU (skipped where no GPU is present)."""

import pytest
import torch

import kanlab

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_kan_linear_forward_and_backward_match_the_cpu():
    torch.manual_seed(0)
    cpu = kanlab.KANLinear(6, 5, grid=7, dtype=torch.float64, grid_update=None)
    gpu = kanlab.KANLinear(6, 5, grid=7, dtype=torch.float64, grid_update=None).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = 1.5 * torch.randn(64, 6, dtype=torch.float64)
    xc, xg = x.clone().requires_grad_(True), x.cuda().requires_grad_(True)
    yc, yg = cpu(xc), gpu(xg)
    torch.testing.assert_close(yg.cpu(), yc, rtol=1e-10, atol=1e-10)
    yc.square().sum().backward()
    yg.square().sum().backward()
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(gpu.coef.grad.cpu(), cpu.coef.grad, rtol=1e-9, atol=1e-10)


def test_kan_fits_and_snaps_on_cuda():
    data = kanlab.create_dataset(lambda x: x[:, :1] ** 2 + torch.sin(torch.pi * x[:, 1:]), n_var=2, train_num=300,
                                 test_num=50, seed=0, dtype=torch.float64, device="cuda")
    model = kanlab.KAN([2, 1], seed=0, dtype=torch.float64, device="cuda")
    history = model.fit(data, steps=30, progress=False)
    assert history["test_loss"][-1] < 1e-2
    model.auto_symbolic(lib=["x^2", "sin"])
    model.fit(data, steps=20, update_grid=False, progress=False)
    assert model(data["test_input"]).device.type == "cuda"


def test_conv_and_grid_keeping_on_cuda():
    torch.manual_seed(1)
    conv = kanlab.KANConv2d(2, 3, 3, padding=1, dtype=torch.float64).cuda()
    x = 3 * torch.randn(4, 2, 6, 6, dtype=torch.float64, device="cuda")
    out = conv(x)  # training mode: the first forward moves the grid over x
    assert out.shape == (4, 3, 6, 6) and out.device.type == "cuda"
    layer = conv.kans[0]
    assert int(layer.grid_steps) == 1 and float(layer.input_max.max()) > 3
    cpu = kanlab.KANConv2d(2, 3, 3, padding=1, dtype=torch.float64)
    cpu.load_state_dict({k: v.cpu() for k, v in conv.state_dict().items()})
    conv.eval(), cpu.eval()
    torch.testing.assert_close(conv(x).cpu(), cpu(x.cpu()), rtol=1e-10, atol=1e-10)
