"""The compiled basis-feature kernel (``kanlab.native``) against the pure-torch path it replaces."""

import functools
import math

import pytest
import torch

from conftest import random_knots
import functools

import kanlab
from kanlab import KAN, native, splines

# the layer's mathematics, with the grid where the test puts it (grid keeping: tests/test_grid_keeping.py)
KANLinear = functools.partial(kanlab.KANLinear, grid_update=None)
from kanlab import fused as kanlab_fused
from kanlab import layer as layer_module
from kanlab.layer import _FeatureWeight, _KANLayer, _LocalProduct


@pytest.fixture(scope="module", autouse=True)
def compiled(tmp_path_factory):
    """The installed kernel (or, where none was built at install, one built from the package's
    source: g++ and ninja are on every machine we support)."""
    assert native.load(build_directory=tmp_path_factory.mktemp("native")), "the compiled kernel did not build"
    with native.use(True):
        yield


def _knots(kind: str, n_inputs: int, grid: int, k: int, dtype, generator) -> torch.Tensor:
    if kind == "uniform":
        return splines.uniform_knots(n_inputs, grid, k, (-1.0, 1.0), dtype=dtype)
    if kind == "random":
        return random_knots(n_inputs, grid + 2 * k + 1, generator).to(dtype)
    samples = torch.randn(300, n_inputs, generator=generator, dtype=torch.float64) ** 3  # adapted to samples
    return splines.knots_from_samples(samples, grid, k, 0.02).to(dtype)


def _features_and_input_gradient(x, base, plan, grad):
    x = x.clone().requires_grad_(True)
    base = None if base is None else base.clone().requires_grad_(True)
    features = splines.basis_features(x, plan, base=base)
    inputs = (x,) if base is None else (x, base)
    return features, torch.autograd.grad(features, inputs, grad)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("kind", ["uniform", "random", "adapted"])
@pytest.mark.parametrize("with_base", [True, False])
def test_features_and_gradients_equal_the_torch_path(dtype, k, kind, with_base):
    generator = torch.Generator().manual_seed(k)
    knots = _knots(kind, 4, 6, k, dtype, generator)
    plan = splines.plan_knots(knots, k)
    low, high = knots[:, 0], knots[:, -1]
    x = (low + (high - low) * (torch.rand(257, 4, generator=generator, dtype=torch.float64).to(dtype) * 1.4 - 0.2))
    x[0] = knots[:, 0]  # exactly on the first knot, an inner knot and the last knot
    x[1] = knots[:, k + 2]
    x[2] = knots[:, -1]
    base = torch.sin(x) if with_base else None
    width = plan.n_basis + with_base
    grad = torch.randn(x.shape[0], 4 * width, generator=generator, dtype=torch.float64).to(dtype)
    fast, fast_grads = _features_and_input_gradient(x, base, plan, grad)
    # the reference: the torch path in float64 on the same (rounded) knots and inputs; in
    # float32 the torch path itself is about 1e-6 from it, the kernel no further
    as64 = {"dtype": torch.float64}
    with native.disabled():
        plain, plain_grads = _features_and_input_gradient(
            x.to(**as64), None if base is None else base.to(**as64), splines.plan_knots(knots.to(**as64), k),
            grad.to(**as64))
    if dtype == torch.float64:
        tolerances = [1e-12] * 3
    else:  # no further from the float64 reference than the float32 torch path is (1e-6 at least)
        with native.disabled():
            plain32, plain32_grads = _features_and_input_gradient(x, base, plan, grad)
        tolerances = [max(1e-6, 1.5 * _relative(ours.to(**as64), theirs))
                      for ours, theirs in zip((plain32, *plain32_grads), (plain, *plain_grads))]
    for ours, theirs, tolerance in zip((fast, *fast_grads), (plain, *plain_grads), tolerances):
        assert _relative(ours.to(**as64), theirs) < tolerance


@pytest.mark.parametrize("k", [3, 7])  # the chunked path (k <= 5) and the entry-at-a-time one
@pytest.mark.parametrize("kind", ["uniform", "adapted"])
@pytest.mark.parametrize("n_inputs", [1, 20, 40, 150])
@pytest.mark.parametrize("grid", [5, 45])  # 45: more than 40 knots, found by bisection
def test_rows_of_any_width_fill_the_chunks(k, kind, n_inputs, grid):
    """150 inputs: two full chunks of 64 and a partial one per row; 40 and 20: one partial chunk
    per row; 1: a narrow layer, taken by columns of samples (33: a partial chunk). Against the
    torch path in float64 (the other tests here take 4 inputs, by columns: 257 samples, four
    full chunks and a partial one)."""
    generator = torch.Generator().manual_seed(k)
    knots = _knots(kind, n_inputs, grid, k, torch.float64, generator)
    plan = splines.plan_knots(knots, k)
    x = torch.randn(33, n_inputs, generator=generator, dtype=torch.float64) * 1.2
    base = torch.sin(x)
    grad = torch.randn(33, n_inputs * (plan.n_basis + 1), generator=generator, dtype=torch.float64)
    fast, fast_grads = _features_and_input_gradient(x, base, plan, grad)
    with native.disabled():
        plain, plain_grads = _features_and_input_gradient(x, base, plan, grad)
    for ours, theirs in zip((fast, *fast_grads), (plain, *plain_grads)):
        assert _relative(ours, theirs) < 1e-12


def _gradcheck_inputs(generator, n_in=3):
    """A plan of random knots (n_in inputs, k = 3), x inside them and a residual, (20, n_in) float64."""
    plan = splines.plan_knots(random_knots(n_in, 6 + 2 * 3 + 1, generator), 3)
    low, high = splines.knot_span(plan.knots, 3)
    x = (low + (high - low) * torch.rand(20, n_in, generator=generator, dtype=torch.float64)).requires_grad_(True)
    base = torch.randn(20, n_in, generator=generator, dtype=torch.float64, requires_grad=True)
    return plan, x, base


def test_first_order_gradients_pass_gradcheck():
    plan, x, base = _gradcheck_inputs(torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(lambda x, b: splines.basis_features(x, plan, base=b), (x, base))


def test_nan_inputs_stay_nan_and_far_inputs_give_zero_bases():
    plan = splines.plan_knots(splines.uniform_knots(2, 5, 3, (-1.0, 1.0), dtype=torch.float64), 3)
    x = torch.tensor([[math.nan, 0.3], [50.0, -50.0]], dtype=torch.float64, requires_grad=True)
    features = splines.basis_features(x, plan).view(2, plan.n_basis, 2).transpose(1, 2)
    assert torch.isnan(features[0, 0]).all() and not torch.isnan(features[0, 1]).any()
    assert (features[1] == 0).all()
    (grad,) = torch.autograd.grad(features.nan_to_num().sum(), x)
    assert math.isnan(grad[0, 0]) and (grad[1] == 0).all()
    with_base = splines.basis_features(x, plan, base=torch.ones_like(x)).view(2, plan.n_basis + 1, 2).transpose(1, 2)
    assert (with_base[0, 0, :-1] == 0).all() and with_base[0, 0, -1] == 1  # the residual column carries on


def test_second_derivatives_switch_to_the_differentiable_path():
    """create_graph=True must give exact second derivatives with the kernel loaded."""
    model = KAN([2, 3, 1], grid=5, seed=0, dtype=torch.float64)
    x = torch.rand(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.6 - 0.8
    model.update_grid(x)  # adapted (non-uniform) knots

    def second_derivative(points):
        points = points.clone().requires_grad_(True)
        (first,) = torch.autograd.grad(model(points).sum(), points, create_graph=True)
        (second,) = torch.autograd.grad(first[:, 0].sum(), points)
        return first.detach(), second[:, 0]

    first, second = second_derivative(x)
    with native.disabled():
        plain_first, plain_second = second_derivative(x)
    torch.testing.assert_close(first, plain_first, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(second, plain_second, rtol=1e-10, atol=1e-10)
    h = 1e-6  # central differences of the first derivative
    step = torch.tensor([h, 0.0], dtype=torch.float64)
    difference = (second_derivative(x + step)[0][:, 0] - second_derivative(x - step)[0][:, 0]) / (2 * h)
    torch.testing.assert_close(second, difference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("base_fun", ["silu", "zero"])
def test_feature_weight_and_its_gradients_equal_the_torch_path(base_fun):
    """The layer's compiled (out, width * in) weight: the same values and parameter gradients
    as the four torch operations it replaces, with a pruned edge; its backward passes gradcheck."""
    layer = KANLinear(5, 3, grid=4, k=3, base_fun=base_fun, generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64)
    with torch.no_grad():
        layer.mask[1, 2] = 0.0
    results = []
    for use_kernel in (True, False):
        with native.use(use_kernel):
            layer.zero_grad()
            weight = layer._feature_weight(base_fun != "zero")
            (weight * torch.linspace(-1, 1, weight.numel(), dtype=torch.float64).view_as(weight)).sum().backward()
            results.append([weight.detach()] + [p.grad.clone() for p in (layer.coef, layer.scale_sp, layer.scale_base)
                                                if p.grad is not None])
    assert len(results[0]) == len(results[1]) == (4 if base_fun != "zero" else 3)
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-14, atol=0)
    coef, scale, base = (torch.randn(3, 5, n, dtype=torch.float64).squeeze(-1).requires_grad_() for n in (7, 1, 1))
    assert torch.autograd.gradcheck(lambda c, s, b: _FeatureWeight.apply(c, s, b), (coef, scale, base))
    assert torch.autograd.gradgradcheck(lambda c, s, b: _FeatureWeight.apply(c, s, b), (coef, scale, base))


def test_training_follows_the_same_path_with_and_without_the_kernel():
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(200, 2, generator=generator, dtype=torch.float64) * 2 - 1
    data = {"train_input": x, "train_label": torch.sin(3 * x[:, :1]) * x[:, 1:]}
    losses = []
    for use_kernel in (True, False):
        with native.use(use_kernel):
            model = KAN([2, 3, 1], grid=5, seed=0, dtype=torch.float64)
            losses.append(model.fit(data, steps=4, log=1, progress=False)["train_loss"])
    # rounding-level differences, which LBFGS line searches amplify a little over the steps
    torch.testing.assert_close(torch.tensor(losses[0], dtype=torch.float64), torch.tensor(losses[1], dtype=torch.float64),
                               rtol=1e-5, atol=0)


def test_torch_compile_traces_the_torch_path():
    model = KAN([2, 3, 1], grid=5, seed=0)
    x = torch.rand(16, 2) * 2 - 1
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))


def test_onnx_export_with_the_kernel_loaded_takes_the_torch_path(tmp_path):
    """The exporter traces the torch path (no kanlab_native operators in the graph)."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from kanlab.export import to_onnx

    model = KAN([2, 3, 1], grid=5, seed=0)
    model.update_grid(torch.rand(64, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    to_onnx(model, tmp_path / "m.onnx")
    onnx = pytest.importorskip("onnx")
    assert not [node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node if "kanlab" in node.domain]
    x = torch.rand(33, 2) * 2 - 1
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), model(x).detach(), atol=1e-5, rtol=1e-5)


def test_the_kernel_is_used_only_where_it_is_exact_to_use():
    x = torch.zeros(2, 2)
    assert native.usable(x, 3)
    assert not native.usable(x, 17)  # beyond the kernel's table width
    assert not native.usable(x.to(torch.float16), 3)
    with native.disabled():
        assert not native.usable(x, 3)


def _graph_names(tensor: torch.Tensor) -> set[str]:
    """The names of every autograd node behind tensor."""
    names, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and type(node).__name__ not in names:
            names.add(type(node).__name__)
            stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def _random_layer(n_in, n_out, k, kind, base_fun, dtype, generator):
    """A layer with random parameters and a pruned edge, on uniform or adapted knots (k = 3: more
    knots than are counted, so the search bisects), and 300 inputs, some on knots, one far out."""
    grid = 45 if k == 3 else 6
    layer = KANLinear(n_in, n_out, grid=grid, k=k, base_fun=base_fun, generator=generator, dtype=dtype)
    x = torch.randn(300, n_in, generator=generator, dtype=torch.float64).to(dtype)
    if kind == "adapted":
        layer.update_grid(x)
    with torch.no_grad():
        layer.coef.normal_(generator=generator)
        layer.scale_base.normal_(generator=generator)
        layer.mask[0, n_in - 1] = 0.0
    x[0] = layer.grid[:, 0]
    x[1] = layer.grid[:, k + 2]
    x[3, 0] = 50.0
    return layer, x


def _layer_results(layer, x, grad):
    """Output and the gradients of x and every parameter, for (output * grad).sum()."""
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    out = layer(x)
    (out * grad).sum().backward()
    parameters = (layer.coef, layer.scale_sp, layer.scale_base)
    return [out.detach(), x.grad] + [p.grad if p.grad is not None else torch.zeros(()) for p in parameters]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("kind", ["uniform", "adapted"])
@pytest.mark.parametrize("base_fun", ["silu", "zero", "tanh"])  # the fused layer (silu, zero) or the product alone
# by columns (few inputs) or by rows (outputs below 16), or in blocks of samples (from 7 inputs and
# 16 outputs on: 17 outputs leave one past a whole vector, 70 a whole tile and some)
@pytest.mark.parametrize("shape", [(3, 2), (2, 20), (20, 3), (9, 17), (40, 70)])
def test_local_product_equals_the_dense_path(dtype, k, kind, base_fun, shape, monkeypatch):
    """The layer's compiled local product (no feature matrix) against the pure-torch dense path:
    output and the gradients of x and every parameter, with a pruned edge, inputs on knots,
    outside them and NaN. Silu or no residual take the fused layer (weight and residual built in
    the kernel), any other residual the product of a weight built in torch. 300 samples make two
    or three blocks on the blocked shapes; without a residual a NaN input sends them entry by
    entry, and the finite inputs keep the blocks."""
    n_in, n_out = shape
    generator = torch.Generator().manual_seed(k + 10 * n_in)
    layer, x = _random_layer(n_in, n_out, k, kind, base_fun, dtype, generator)
    x[2] = layer.grid[:, -1]
    x[4, -1] = math.nan
    grad = torch.randn(300, n_out, generator=generator, dtype=torch.float64).to(dtype)
    finite = x.nan_to_num(0.5)
    monkeypatch.setattr(layer_module, "_local_product_pays", lambda *shape, **options: True)
    local, local_finite = _layer_results(layer, x, grad), _layer_results(layer, finite, grad)
    fused = base_fun in ("silu", "zero")
    assert ("_KANLayerBackward" if fused else "_LocalProductBackward") in _graph_names(layer(x))
    monkeypatch.setattr(layer_module, "_local_product_pays", lambda *shape, **options: False)
    dense = _layer_results(layer, x, grad)  # the compiled features: NaN inputs exactly as the local product
    with native.disabled():
        plain = _layer_results(layer, finite, grad)  # the torch path (its x-gradient is 0, not NaN, at NaN)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5  # float32: sums in another order
    for ours, theirs in [*zip(local, dense), *zip(local_finite, plain)]:
        assert torch.equal(ours.isnan(), theirs.isnan())
        ours, theirs = ours.nan_to_num(), theirs.nan_to_num()
        assert (ours - theirs).abs().max() <= tolerance * theirs.abs().max().clamp_min(1)


def _assert_coarse_blocks_equal_the_dense_path(n_in, n_out, batch, k, kind, base_fun, dtype, seed, monkeypatch,
                                               parameters_too=True):
    """A layer on a coarse grid (G = 5) with random parameters and a pruned edge, on uniform or
    adapted knots, and batch samples, some on knots and one outside the grid: output and the
    gradients of x and (where parameters_too) every parameter in blocks, against the compiled
    features."""
    generator = torch.Generator().manual_seed(seed)
    layer = KANLinear(n_in, n_out, grid=5, k=k, base_fun=base_fun, generator=generator, dtype=dtype)
    x = torch.randn(batch, n_in, generator=generator, dtype=torch.float64).to(dtype)
    if kind == "adapted":
        layer.update_grid(x)
    with torch.no_grad():
        layer.coef.normal_(generator=generator)
        layer.scale_base.normal_(generator=generator)
        layer.mask[3, 7] = 0.0
    x[0] = layer.grid[:, 0]
    x[1] = layer.grid[:, k + 2]
    x[5, 2] = -40.0
    layer.requires_grad_(parameters_too)
    grad = torch.randn(batch, n_out, generator=generator, dtype=torch.float64).to(dtype)
    monkeypatch.setattr(layer_module, "_local_product_pays", lambda *shape, **options: True)
    local = _layer_results(layer, x, grad)
    assert "_KANLayerBackward" in _graph_names(layer(x.clone().requires_grad_(True)))
    monkeypatch.setattr(layer_module, "_local_product_pays", lambda *shape, **options: False)
    dense = _layer_results(layer, x, grad)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for ours, theirs in zip(local, dense):
        assert (ours - theirs).abs().max() <= tolerance * theirs.abs().max().clamp_min(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("base_fun", ["silu", "zero"])
@pytest.mark.parametrize("kind", ["uniform", "adapted"])
# outputs: whole tiles only; whole tiles, a tile of whole vectors and a few more; one past a tile;
# more tiles than x's gradient takes tile by tile on AVX2 (then by derivative rows)
@pytest.mark.parametrize("n_out", [32, 30, 17, 137])
def test_coarse_grid_blocks_equal_the_dense_path(dtype, base_fun, kind, n_out, monkeypatch):
    """The fused layer in blocks on a coarse grid (G = 5, k = 3: the weight the kernel keeps for
    the backward pass is tile by tile on AVX2), 130 inputs and 600 samples: five blocks in the
    backward pass (three of AVX2's larger forward blocks), and with 137 outputs several groups of
    inputs per thread in the backward pass. Output and every gradient against the compiled
    features, with a pruned edge and inputs outside the grid."""
    _assert_coarse_blocks_equal_the_dense_path(130, n_out, 600, 3, kind, base_fun, dtype, n_out, monkeypatch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("kind", ["uniform", "adapted"])
@pytest.mark.parametrize("asked", ["all", "x alone"])
def test_derivative_rows_equal_the_dense_path(dtype, k, kind, asked, monkeypatch):
    """x's gradient from derivative rows (AVX2's tiled layout with more than eight tiles of
    outputs: each entry's slopes as a polynomial in its local coordinate times its interval's k
    rows), at every degree: 150 outputs leave a few past the last whole tile, 70 inputs make more
    than one group of inputs per thread at most degrees, with or without the parameters'
    gradients; 400 samples four blocks. Against the compiled features, as the other gradients."""
    _assert_coarse_blocks_equal_the_dense_path(70, 150, 400, k, kind, "silu", dtype, k, monkeypatch,
                                               parameters_too=asked == "all")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("needs", ["all", "parameters", "x and coef", "scale_base"])
@pytest.mark.parametrize("n_in", [300, 60])
def test_fine_grid_blocks_equal_the_dense_path(dtype, needs, n_in, monkeypatch):
    """Fine grids (G + 2k + 1 >= 32) on a wide layer: no padded weight; the forward pass splits
    inputs between threads and builds each few inputs' padded rows of a tile in cache, and the
    backward goes through groups of inputs and takes coef's and scale_sp's gradients from each
    group's rows, with no padded gradient. 300 inputs make several groups and a coef (4.4 MB in
    float32) whose gradient an AVX-512 build writes by non-temporal stores (over 4 MiB), 60 inputs
    one that it copies; 1100 samples two blocks, 86 outputs tiles of 4, 2, 1 and no whole
    vectors; against the dense path, with some gradients not asked for."""
    generator = torch.Generator().manual_seed(7)
    layer = KANLinear(n_in, 86, grid=40, k=3, generator=generator, dtype=dtype)
    x = torch.randn(1100, n_in, generator=generator, dtype=torch.float64).to(dtype)
    layer.update_grid(x)
    with torch.no_grad():
        layer.coef.normal_(generator=generator)
        layer.scale_base.normal_(generator=generator)
        layer.scale_sp.normal_(generator=generator)
        layer.mask[3, 7] = 0.0
    x[5, 2] = 50.0
    layer.coef.requires_grad_(needs != "scale_base")
    layer.scale_sp.requires_grad_(needs not in ("x and coef", "scale_base"))
    layer.scale_base.requires_grad_(needs != "x and coef")
    grad = torch.randn(1100, 86, generator=generator, dtype=torch.float64).to(dtype)

    def results():
        layer.zero_grad()
        inputs = x.clone().requires_grad_(needs not in ("parameters", "scale_base"))
        out = layer(inputs)
        (out * grad).sum().backward()
        found = [out.detach(), inputs.grad]
        return found + [p.grad for p in (layer.coef, layer.scale_sp, layer.scale_base)]

    monkeypatch.setattr(layer_module, "_local_product_pays", lambda *shape, **options: True)
    local = results()
    out = layer(x.clone().requires_grad_())
    assert "_KANLayerBackward" in _graph_names(out)
    node = out.grad_fn
    while type(node).__name__ != "_KANLayerBackward":
        node = node.next_functions[0][0]
    assert node.saved_tensors[-1].numel() == 0  # no padded weight kept for the backward pass
    monkeypatch.setattr(layer_module, "_local_product_pays", lambda *shape, **options: False)
    dense = results()
    tolerance = 1e-12 if dtype == torch.float64 else 2e-5
    for ours, theirs in zip(local, dense):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert (ours - theirs).abs().max() <= tolerance * theirs.abs().max().clamp_min(1)


def test_local_product_passes_gradcheck_and_gradgradcheck():
    """First order through the kernel; second order (a backward that builds a graph) through the
    differentiable feature path it switches to."""
    generator = torch.Generator().manual_seed(0)
    plan, x, base = _gradcheck_inputs(generator)
    weight = torch.randn(3, plan.n_basis + 1, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    function = lambda x, b, w: _LocalProduct.apply(x, b, w, plan)  # noqa: E731
    assert torch.autograd.gradcheck(function, (x, base, weight))
    assert torch.autograd.gradgradcheck(function, (x, base, weight))


def _regularised_results(layer, x, grad, grad_norms):
    """Output, edge norms and the gradients of x and every parameter for (out * grad).sum() +
    (norms * grad_norms).sum(), as a regularised training step takes them."""
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    out, norms = layer.forward_with_edge_norms(x)
    ((out * grad).sum() + (norms * grad_norms).sum()).backward()
    return [out.detach(), norms.detach(), x.grad, layer.coef.grad, layer.scale_sp.grad,
            layer.scale_base.grad if layer.scale_base.grad is not None else torch.zeros(())]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("kind", ["uniform", "adapted"])
@pytest.mark.parametrize("base_fun", ["silu", "zero"])
@pytest.mark.parametrize("shape", [(3, 2), (5, 1), (20, 3), (9, 17)])
def test_fused_layer_with_edge_norms_equals_the_dense_path(dtype, k, kind, base_fun, shape, monkeypatch):
    """Regularised training's fused layer (output and per-edge mean |phi| from the local values)
    against the torch path's features and edge_mean_abs: values and every gradient, with a pruned
    edge and inputs on knots and far outside them."""
    n_in, n_out = shape
    generator = torch.Generator().manual_seed(k + 10 * n_in + 1)
    layer, x = _random_layer(n_in, n_out, k, kind, base_fun, dtype, generator)
    grad = torch.randn(300, n_out, generator=generator, dtype=torch.float64).to(dtype)
    grad_norms = torch.randn(n_out, n_in, generator=generator, dtype=torch.float64).to(dtype)
    monkeypatch.setattr(layer_module, "_local_product_pays", lambda *shape, **options: True)
    fused = _regularised_results(layer, x, grad, grad_norms)
    assert "_KANLayerBackward" in _graph_names(layer.forward_with_edge_norms(x)[1])
    with native.disabled():
        plain = _regularised_results(layer, x, grad, grad_norms)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for ours, theirs in zip(fused, plain):
        assert (ours - theirs).abs().max() <= tolerance * theirs.abs().max().clamp_min(1)
    explicit = layer.edge_activations(x, part="numeric").detach().abs().mean(0)  # (batch, out, in) kept here
    assert (fused[1] - explicit).abs().max() <= tolerance * explicit.abs().max().clamp_min(1)


@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("edge_norms", [False, True])
@pytest.mark.parametrize("shape", [(2, 3), (16, 7)])  # (out, in): by columns, or in blocks of samples
def test_fused_layer_passes_gradcheck_and_gradgradcheck(with_base, edge_norms, shape):
    """The fused layer's first order through the kernel (x, coef and both scales, a pruned edge;
    with the edge norms too); second order through the differentiable recomputation it switches
    to (the norms' mean |phi| is differentiable once, as on the dense path)."""
    generator = torch.Generator().manual_seed(1)
    n_out, n_in = shape
    plan, x, _ = _gradcheck_inputs(generator, n_in)
    parameters = [torch.randn(n_out, n_in, *size, generator=generator, dtype=torch.float64, requires_grad=True)
                  for size in ((plan.n_basis,), (), ())]
    mask = torch.ones(n_out, n_in, dtype=torch.float64)
    mask[1, 0] = 0.0
    if not with_base:
        parameters = parameters[:2]

    def function(x, *p):
        return _KANLayer.apply(x, p[0], p[1], p[2] if with_base else None, mask, plan, edge_norms)

    assert torch.autograd.gradcheck(function, (x, *parameters))
    if not edge_norms:
        assert torch.autograd.gradgradcheck(function, (x, *parameters))


@pytest.mark.parametrize("shape", [(2, 3), (16, 7), (40, 70)])  # (out, in): by columns, by rows, in blocks
@pytest.mark.parametrize("edge_norms", [False, True])
def test_fused_backward_reuses_the_forward_weight(shape, edge_norms):
    """The fused layer's backward given the forward pass's padded weight equals the one that
    builds it again, and a padded weight of another shape is refused."""
    generator = torch.Generator().manual_seed(3)
    n_out, n_in = shape
    plan, x, _ = _gradcheck_inputs(generator, n_in)
    coef = torch.randn(n_out, n_in, plan.n_basis, generator=generator, dtype=torch.float64)
    scale_sp, scale_base = (torch.randn(n_out, n_in, generator=generator, dtype=torch.float64) for _ in range(2))
    mask = torch.ones(n_out, n_in, dtype=torch.float64)
    parameters = (x.detach(), plan, coef, scale_sp, scale_base, mask)
    grads = [torch.randn(20, n_out, generator=generator, dtype=torch.float64)]
    if edge_norms:
        *_, padded = native.kan_layer_norms(*parameters)
        grads.append(torch.randn(n_out, n_in, generator=generator, dtype=torch.float64))
        backward = native.kan_layer_norms_backward
    else:
        _, padded = native.kan_layer(*parameters)
        backward = native.kan_layer_backward
    reused = backward(*grads, *parameters, (True,) * 4, padded)
    rebuilt = backward(*grads, *parameters, (True,) * 4)
    for ours, theirs in zip(reused, rebuilt):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="padded"):
        backward(*grads, *parameters, (True,) * 4, padded[:, 1:])


def test_local_product_is_taken_where_it_pays():
    """Narrow layers always; layers the kernel takes in blocks of samples from a batch of 256 on
    (small ones from any batch); the others once the grid makes the dense product the larger."""
    def pays(*shape, **options):
        answers = {layer_module._local_product_pays(*shape, **options, wide_vectors=wide) for wide in (True, False)}
        assert len(answers) == 1, shape  # the same with and without AVX-512
        return answers.pop()

    wide = functools.partial(layer_module._local_product_pays, wide_vectors=True)
    narrow = functools.partial(layer_module._local_product_pays, wide_vectors=False)
    assert pays(2, 5, 8) and pays(5, 1, 8)
    assert wide(256, 256, 8) and wide(784, 64, 8, batch=256) and wide(64, 64, 8) and wide(16, 128, 8)
    assert wide(128, 128, 13, batch=64) and not pays(256, 256, 8, batch=192) and not pays(784, 64, 13, batch=32)
    # without AVX-512 the blocks wait for 8 bases per input in float32 and 9 in float64 (the
    # dense product below), except on layers of up to 128 x 128 edges
    assert not narrow(256, 256, 7) and not narrow(784, 64, 7, batch=256) and not narrow(129, 128, 7)
    assert narrow(256, 256, 8) and narrow(784, 64, 8, batch=256) and not narrow(256, 256, 8, float64=True)
    assert narrow(256, 256, 9, float64=True) and narrow(784, 64, 13, batch=256) and narrow(128, 128, 7, batch=64)
    assert narrow(128, 128, 7, batch=64, float64=True)
    assert not pays(64, 64, 13, edge_norms=True) and not pays(64, 10, 13)  # entry by entry: later
    assert pays(64, 64, 53, edge_norms=True) and pays(256, 256, 103, edge_norms=True)
    model = KAN([2, 3, 1], grid=5, seed=0, dtype=torch.float64)
    names = _graph_names(model(torch.zeros(4, 2, dtype=torch.float64, requires_grad=True)))
    assert names == {"_FusedNetworkBackward", "AccumulateGrad"}  # one node for the network
    assert "_KANLayerBackward" in _graph_names(model.layers[0](torch.zeros(4, 2, dtype=torch.float64)))
    names = _graph_names(KANLinear(256, 256, grid=5)(torch.zeros(4, 256)))  # a wide layer, a small batch
    assert "_KANLayerBackward" not in names and "_FeatureWeightBackward" in names
    with native.disabled():
        assert "_KANLayerBackward" not in _graph_names(model(torch.zeros(4, 2, dtype=torch.float64)))


def _network_results(model, x, grad, grad_norms, edge_norms):
    """Output (and edge norms), and the gradients of x and every layer's parameters, for
    (output * grad).sum() (+ (norms * grad_norms).sum())."""
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    if edge_norms:
        out, norms = model.forward_with_edge_norms(x)
        total = (out * grad).sum() + sum((n * g).sum() for n, g in zip(norms, grad_norms))
    else:
        out, norms = model(x), []
        total = (out * grad).sum()
    total.backward()
    parameters = [p for layer in model.layers for p in (layer.coef, layer.scale_sp, layer.scale_base)]
    grads = [p.grad if p.grad is not None else torch.zeros(()) for p in parameters]
    return [out.detach(), *(n.detach() for n in norms), x.grad, *grads], _graph_names(out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("edge_norms", [False, True])
@pytest.mark.parametrize("base_fun", ["silu", "zero"])
@pytest.mark.parametrize("kind", ["uniform", "adapted"])
def test_fused_network_equals_its_layers_to_the_bit(dtype, edge_norms, base_fun, kind, monkeypatch):
    """The whole network as one node: outputs, edge norms and every gradient are the per-layer
    path's to the last bit (the same kernel calls on the same arguments), with a pruned edge,
    a frozen scale and inputs outside the grid."""
    generator = torch.Generator().manual_seed(4)
    model = KAN([3, 4, 2, 1], grid=7, k=3, base_fun=base_fun, seed=0, dtype=dtype, sb_trainable=False)
    x = (torch.randn(150, 3, generator=generator, dtype=torch.float64) * 0.8).to(dtype)
    x[0, 0] = 9.0
    if kind == "adapted":
        model.update_grid(x)
    with torch.no_grad():
        for layer in model.layers:
            layer.coef.normal_(generator=generator)
        model.layers[1].mask[1, 2] = 0.0
    grad = torch.randn(150, 1, generator=generator, dtype=torch.float64).to(dtype)
    grad_norms = [torch.randn(layer.out_features, layer.in_features, generator=generator, dtype=torch.float64).to(dtype)
                  for layer in model.layers]
    fused, names = _network_results(model, x, grad, grad_norms, edge_norms)
    assert "_FusedNetworkBackward" in names and "_KANLayerBackward" not in names
    monkeypatch.setattr(model, "_fuses", lambda x, edge_norms: False)
    layered, names = _network_results(model, x, grad, grad_norms, edge_norms)
    assert "_FusedNetworkBackward" not in names and "_KANLayerBackward" in names
    assert len(fused) == len(layered)
    for ours, theirs in zip(fused, layered):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("edge_norms", [False, True])
def test_fused_network_gives_second_derivatives(edge_norms):
    """A PINN's loss on d output / d x, differentiated again for the parameters (a backward that
    builds a graph): the fused network recomputes itself in torch operations, and agrees with
    the pure-torch path."""
    generator = torch.Generator().manual_seed(5)
    model = KAN([2, 3, 1], grid=6, seed=1, dtype=torch.float64)
    x = torch.rand(60, 2, generator=generator, dtype=torch.float64) * 2 - 1
    model.update_grid(x)
    results = []
    for use_kernel in (True, False):
        with native.use(use_kernel):
            model.zero_grad()
            inputs = x.clone().requires_grad_(True)
            out, norms = model.forward_with_edge_norms(inputs) if edge_norms else (model(inputs), [])
            assert ("_FusedNetworkBackward" in _graph_names(out)) == use_kernel
            (slope,) = torch.autograd.grad(out.sum() + sum(n.sum() for n in norms), inputs, create_graph=True)
            (slope**2).sum().backward()
            results.append([slope.detach()] + [layer.coef.grad.clone() for layer in model.layers])
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_fused_network_gradcheck():
    """The fused network's first-order gradients (x and every parameter) against finite differences."""
    from kanlab.fused import _FusedNetwork

    generator = torch.Generator().manual_seed(6)
    model = KAN([2, 3, 2], grid=4, seed=2, dtype=torch.float64)
    x = (torch.rand(25, 2, generator=generator, dtype=torch.float64) * 2.2 - 1.1).requires_grad_(True)
    plans = tuple(layer.plan for layer in model.layers)
    masks = tuple(layer.mask for layer in model.layers)
    parameters = [p.detach().clone().requires_grad_(True) for layer in model.layers
                  for p in (layer.coef, layer.scale_sp, layer.scale_base)]
    for edge_norms in (False, True):
        assert torch.autograd.gradcheck(lambda x, *p: _FusedNetwork.apply(x, plans, masks, edge_norms, *p),
                                        (x, *parameters))


def test_fused_network_only_where_every_layer_fuses():
    """Multiplication nodes, a symbolic edge, a layer hook or a residual other than silu keep
    the per-layer path (and the hook runs)."""
    x = torch.rand(8, 2, dtype=torch.float64)
    plain = KAN([2, 3, 1], seed=0, dtype=torch.float64)
    assert "_FusedNetworkBackward" in _graph_names(plain(x))
    assert "_FusedNetworkBackward" not in _graph_names(KAN([2, [2, 1], 1], seed=0, dtype=torch.float64)(x))
    assert "_FusedNetworkBackward" not in _graph_names(KAN([2, 3, 1], base_fun="tanh", seed=0, dtype=torch.float64)(x))
    symbolic = KAN([2, 3, 1], seed=0, dtype=torch.float64)
    symbolic.fix_symbolic(0, 0, 0, "sin", fit_params=False)
    assert "_FusedNetworkBackward" not in _graph_names(symbolic(x))
    calls = []
    plain.layers[1].register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    assert "_FusedNetworkBackward" not in _graph_names(plain(x)) and calls == [(8, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("opt", ["LBFGS", "Adam"])
@pytest.mark.parametrize("lamb", [0.0, 1e-2])
def test_fit_without_autograd_takes_the_same_steps_to_the_bit(dtype, opt, lamb, monkeypatch):
    """fit's direct step (the kernels' passes and the loss's and regulariser's gradients written
    out, no graph) against the same fit through autograd (a loss_fn that is the default's
    formula): every logged value and every final parameter equal, with a frozen scale and
    pruned inputs."""
    from kanlab import train

    generator = torch.Generator().manual_seed(7)
    x = (torch.rand(300, 3, generator=generator, dtype=torch.float64) * 2 - 1).to(dtype)
    data = {"train_input": x, "train_label": torch.sin(3 * x[:, :1]) * x[:, 1:2]}
    calls = []
    monkeypatch.setattr(train, "SquaredErrorObjective",
                        lambda *a: calls.append(1) or kanlab_fused.SquaredErrorObjective(*a))
    results = []
    for loss_fn in (None, train._mse):
        model = KAN([3, 4, 1], grid=5, seed=0, dtype=dtype, sp_trainable=False).prune_input(active=[0, 1])
        history = model.fit(data, opt=opt, steps=6, lr=0.01 if opt == "Adam" else 1.0,
                            lamb=lamb, log=1, progress=False, loss_fn=loss_fn)
        results.append((history, model.state_dict()))
        assert bool(calls) == (loss_fn is None)
        calls.clear()
    (ours, our_state), (theirs, their_state) = results
    for key in ("train_rmse", "reg", "objective"):  # (with a loss_fn, train_loss is its own value)
        assert ours[key] == theirs[key]
    for name, value in our_state.items():
        assert torch.equal(value, their_state[name]), name


def test_fit_takes_autograd_where_the_direct_step_does_not_apply(monkeypatch):
    """Coefficient penalties, a custom loss or a layer off the fused path use the graph."""
    from kanlab import train

    monkeypatch.setattr(train, "SquaredErrorObjective", lambda *a: pytest.fail("the direct step was taken"))
    x = torch.rand(50, 2, dtype=torch.float64)
    data = {"train_input": x, "train_label": x[:, :1] * x[:, 1:]}
    KAN([2, 3, 1], seed=0, dtype=torch.float64).fit(data, steps=2, lamb=1e-2, lamb_coef=1.0, progress=False)
    KAN([2, 3, 1], seed=0, dtype=torch.float64).fit(data, steps=2, loss_fn=lambda p, y: ((p - y) ** 4).mean(),
                                                     progress=False)
    KAN([2, 3, 1], base_fun="tanh", seed=0, dtype=torch.float64).fit(data, steps=2, progress=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pairs", [0, 1, 10])
def test_compiled_lbfgs_direction_equals_the_python_recursion_to_the_bit(dtype, pairs):
    """csrc/lbfgs.cpp makes the Python loop's calls: the same direction, bit for bit; switched
    off, there is none and LBFGS runs its own loop."""
    from kanlab.optim import LBFGS

    generator = torch.Generator().manual_seed(pairs)
    n = 37
    grad = torch.randn(n, generator=generator, dtype=torch.float64).to(dtype)
    dirs = [torch.randn(n, generator=generator, dtype=torch.float64).to(dtype) for _ in range(pairs)]
    steps = [d + 0.3 * torch.randn(n, generator=generator, dtype=torch.float64).to(dtype) for d in dirs]
    ro = [1.0 / float(y.dot(s)) for y, s in zip(dirs, steps)]
    compiled = native.lbfgs_direction(grad, dirs, steps, ro, 0.7)
    with native.disabled():
        assert native.lbfgs_direction(grad, dirs, steps, ro, 0.7) is None
        plain = LBFGS._two_loop(grad, dirs, steps, ro, 0.7)
    assert compiled.dtype == dtype and torch.equal(compiled, plain)
    with pytest.raises(RuntimeError, match="same length"):
        native.lbfgs_direction(grad, dirs, steps[:-1] if pairs else [grad], ro, 0.7)


def test_lbfgs_with_the_compiled_direction_takes_torchs_steps():
    """The optimizer with the kernel loaded still takes torch.optim.LBFGS's iterates to the bit."""
    from test_optim import _run

    from kanlab.optim import LBFGS

    options = dict(lr=1.0, history_size=10, line_search_fn="strong_wolfe", tolerance_grad=1e-32, tolerance_change=1e-32)
    ours = _run(LBFGS, 15, **options)
    theirs = _run(torch.optim.LBFGS, 15, **options)
    assert torch.equal(ours[0], theirs[0])
    assert ours[1:] == theirs[1:]
