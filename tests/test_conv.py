"""KANConv1d / KANConv2d: shapes as nn.Conv, values against KANLinear on patches, gradients."""

import pytest
import torch
from torch import nn

import kanlab
from kanlab import KANConv1d, KANConv2d


def _reference_2d(conv, x):
    """Loop over output positions: each group's KANLinear on the patch read by hand."""
    n, c, h, w = x.shape
    kh, kw = conv.kernel_size
    (sh, sw), (dh, dw) = conv.stride, conv.dilation
    ph, pw = conv._explicit_padding()
    if conv.padding == "same":
        x = torch.nn.functional.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        ph = pw = 0
    else:
        x = torch.nn.functional.pad(x, [pw, pw, ph, ph])
    out_h = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    per = c // conv.groups
    out = torch.zeros(n, conv.out_channels, out_h, out_w, dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            window = x[:, :, i * sh: i * sh + dh * (kh - 1) + 1: dh, j * sw: j * sw + dw * (kw - 1) + 1: dw]
            for g, kan in enumerate(conv.kans):
                patch = window[:, g * per:(g + 1) * per].reshape(n, -1)
                out[:, g * conv.out_per_group:(g + 1) * conv.out_per_group, i, j] = kan(patch)
    if conv.bias is not None:
        out = out + conv.bias[:, None, None]
    return out


@pytest.mark.parametrize("options", [
    dict(kernel_size=3), dict(kernel_size=(2, 3), stride=2, padding=1), dict(kernel_size=3, dilation=2, padding=2),
    dict(kernel_size=3, groups=2), dict(kernel_size=3, padding="same"), dict(kernel_size=(2, 4), padding="same"),
    dict(kernel_size=2, padding="valid", bias=False),
])
def test_conv2d_matches_patches_and_nn_conv_shapes(options):
    torch.manual_seed(0)
    conv = KANConv2d(4, 6, grid=4, dtype=torch.float64, grid_update=None, **options).eval()
    with torch.no_grad():
        conv.bias is not None and conv.bias.normal_()
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    out = conv(x)
    assert out.shape == nn.Conv2d(4, 6, **options)(x.float()).shape
    torch.testing.assert_close(out, _reference_2d(conv, x), rtol=1e-10, atol=1e-10)
    assert conv(x[0]).shape == out.shape[1:]  # unbatched input, as nn.Conv2d


@pytest.mark.parametrize("options", [dict(kernel_size=3), dict(kernel_size=5, stride=2, padding=2, dilation=1),
                                     dict(kernel_size=3, padding="same", groups=3)])
def test_conv1d_is_conv2d_on_a_height_one_image(options):
    torch.manual_seed(1)
    conv1 = KANConv1d(3, 6, dtype=torch.float64, **options).eval()
    two_d = {key: (1, value) if isinstance(value, int) and key in ("kernel_size", "stride", "dilation") else value
             for key, value in options.items()}
    if isinstance(two_d.get("padding"), int):
        two_d["padding"] = (0, two_d["padding"])
    conv2 = KANConv2d(3, 6, dtype=torch.float64, **two_d).eval()
    conv2.load_state_dict(conv1.state_dict())
    x = torch.randn(2, 3, 20, dtype=torch.float64)
    out = conv1(x)
    assert out.shape == nn.Conv1d(3, 6, **options)(x.float()).shape
    torch.testing.assert_close(out, conv2(x[:, :, None])[:, :, 0])


def test_gradcheck_and_float32():
    torch.manual_seed(2)
    conv = KANConv2d(2, 3, kernel_size=2, grid=3, dtype=torch.float64, grid_update=None)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: conv(x), (x,))
    layer = KANConv1d(2, 4, 3)
    assert layer(torch.randn(5, 2, 10)).dtype == torch.float32


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="divisible by groups"):
        KANConv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        KANConv2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="stride 1"):
        KANConv1d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="input channels"):
        KANConv2d(3, 4, 3)(torch.randn(1, 2, 5, 5))


def test_a_kan_cnn_trains_in_a_plain_loop():
    torch.manual_seed(3)
    x = torch.randn(64, 1, 8, 8)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()
    net = nn.Sequential(KANConv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), kanlab.KANLinear(64, 2))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (net.eval()(x).argmax(1) == y).float().mean() > 0.9


def test_torch_compile_matches_eager_and_keeps_no_grid_steps():
    torch.manual_seed(3)
    conv = KANConv2d(2, 3, 3, padding=1)
    x = 2 * torch.randn(4, 2, 6, 6)
    conv(x)  # grid keeping (eager): general knots
    compiled = torch.compile(conv, backend="eager", fullgraph=True)
    steps = int(conv.kans[0].grid_steps)
    torch.testing.assert_close(compiled(x), conv(x), rtol=1e-5, atol=1e-6)
    assert int(conv.kans[0].grid_steps) == steps + 1  # only the eager call counted


def test_autocast_runs_the_layers_in_their_own_dtype():
    """After an autocast nn.Linear (bfloat16 output) a KAN layer converts and computes in float32."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 6), kanlab.KANLinear(6, 3, grid_update=None))
    x = torch.randn(16, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        hidden = model[0](x)
    assert hidden.dtype == torch.bfloat16 and out.dtype == torch.float32
    torch.testing.assert_close(out, model[1](hidden.float()))
    out.sum().backward()
    assert model[0].weight.grad is not None and model[1].coef.grad is not None
    conv = KANConv1d(2, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(torch.randn(2, 2, 9).bfloat16())
    assert y.dtype == torch.float32
