"""The compiled CPU kernel for a layer's basis features (``csrc/``), on by default.

Small KANs spend most of a training step in the dozen small torch operations that build the
basis features and the layer's weight matrix; the kernel does the same arithmetic (the closed
form on evenly spaced knots, Horner's rule on the same per-interval tables on others,
clamping, the slot-major layout) in vectorized passes, forward and first-order backward.
Where the dense product would be mostly zeros (narrow layers, large grids), ``local_product``
skips the feature matrix and multiplies each entry's ``k + 1`` bases into the output directly
(wide layers in blocks of samples sorted by interval, each interval's weight rows loaded once);
``kan_layer`` (and ``kan_layer_norms``, which adds the regulariser's per-edge norms) does that
for a whole layer with the silu residual, its weight built from the parameters inside.

**Shipped and loaded by itself.** Installing the package (``pip install .``, a wheel, the
README's ``make``) builds one library per vector level (``_kernel_variants``: AVX-512, AVX2 and
baseline x86-64), and the first CPU forward pass loads the one that fits this CPU, with no
call. Where none fits (no build shipped, another platform, another torch than the one it was
built against) the torch path runs and one log line says why; ``load()`` then compiles the
variant for this CPU from the package's source (g++ and ninja, minutes; cached in
``build_directory`` or torch's extension folder). ``KANLAB_NATIVE=0`` in the environment keeps
the kernel from loading by itself. From then on, CPU layers use it wherever it is exact to use:

- a backward pass that builds a graph (``create_graph=True``, second derivatives for PINNs)
  switches to the differentiable torch path by itself, and so do ``torch.func`` transforms;
- ``torch.compile``, ``torch.export`` / ONNX tracing and other devices use the torch path.

It also holds ``optim.LBFGS``'s two-loop recursion (``csrc/lbfgs.cpp``), whose per-pair
interpreter round trips cost a small KAN's training as much as a function evaluation.

``disabled()`` (or ``use(False)``) turns it off for a block, so benchmarks compare both in one
process. The switch is process-wide, as torch's own backend flags are, because the compiled
operators are.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
from pathlib import Path

import torch

from . import _kernel_variants as variants

__all__ = ["load", "is_loaded", "use", "disabled", "usable", "variant", "status"]

logger = logging.getLogger(__name__)

_PACKAGE = Path(__file__).parent
_SOURCES = tuple(_PACKAGE / "csrc" / name for name in variants.SOURCES)
_OPERATORS = "kanlab_native"
# the flags of this CPU's variant (every variant's: _kernel_variants.compile_flags)
COMPILE_FLAGS = variants.compile_flags(
    variants.variant_for(platform.machine(), torch.backends.cpu.get_cpu_capability()), platform.machine())
# loaded: the operators are registered; tried: the shipped libraries were looked at (once);
# variant: which build is loaded; reason: why none is (for status())
_switch = {"loaded": False, "enabled": True, "tried": False, "variant": None, "reason": "not looked for yet",
           "told_device": False}


def _wanted_variant() -> str:
    return variants.variant_for(platform.machine(), torch.backends.cpu.get_cpu_capability())


def _shipped_library(variant_name: str) -> tuple[Path | None, str]:
    """The installed library of a variant, or None and why it does not fit this process."""
    info_path = _PACKAGE / variants.BUILD_INFO
    if not info_path.exists():
        return None, "this install has no compiled kernel (it was installed without a C++ build)"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as error:
        return None, f"{info_path.name} is unreadable ({error})"
    if info.get("torch") != torch.__version__:
        return None, (f"the shipped kernel was built for torch {info.get('torch')}, "
                      f"this process runs torch {torch.__version__}")
    if info.get("machine", "").lower() != platform.machine().lower():
        return None, f"the shipped kernel was built for {info.get('machine')}, this is {platform.machine()}"
    name = info.get("libraries", {}).get(variant_name)
    if name is None:
        return None, f"the shipped kernel has no {variant_name} build (it has {', '.join(info.get('variants', []))})"
    path = _PACKAGE / name
    if not path.exists():
        return None, f"the shipped kernel's {path.name} is missing"
    return path, ""


def _load_shipped() -> bool:
    """Register the installed library that fits this CPU; False (reason kept) where none does."""
    wanted = _wanted_variant()
    path, reason = _shipped_library(wanted)
    if path is None:
        _switch["reason"] = reason
        return False
    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError) as error:
        _switch["reason"] = f"the shipped kernel {path.name} did not load ({error})"
        return False
    _switch.update(loaded=True, variant=wanted, reason="")
    return True


def _autoload() -> None:
    """On the first CPU call: load the shipped kernel, or log once why the torch path stays."""
    _switch["tried"] = True
    if os.environ.get("KANLAB_NATIVE", "1") == "0":
        _switch["reason"] = "KANLAB_NATIVE=0 in the environment"
        logger.info("kanlab's compiled kernel is off (KANLAB_NATIVE=0); the torch path is used")
        return
    if _load_shipped():
        logger.debug("kanlab's compiled kernel loaded (%s build)", _switch["variant"])
        return
    logger.warning("kanlab's compiled kernel is not in use, so the slower torch path runs: %s. "
                   "kanlab.native.load() compiles it for this machine.", _switch["reason"])


def load(build_directory: str | os.PathLike | None = None, verbose: bool = False) -> bool:
    """Register the kernel; True when it is ready. The installed library that fits this CPU is
    used where there is one; otherwise the variant for this CPU is compiled (once) from the
    package's source, which needs g++ and ninja. False (with a logged warning saying why) when
    neither works. ``build_directory`` defaults to torch's extension folder
    (``TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``)."""
    if _switch["loaded"]:
        return True
    _switch["tried"] = True
    if _load_shipped():
        return True
    from torch.utils import cpp_extension

    wanted = _wanted_variant()
    options = {}
    if build_directory is not None:
        Path(build_directory).mkdir(parents=True, exist_ok=True)
        options["build_directory"] = str(build_directory)
    try:
        with _ninja_on_path():
            cpp_extension.load(
                name=f"{_OPERATORS}_{wanted}",
                sources=[str(source) for source in _SOURCES],
                extra_cflags=list(variants.compile_flags(wanted, platform.machine())),
                extra_ldflags=list(variants.LINK_FLAGS),
                is_python_module=False,
                verbose=verbose,
                **options,
            )
    except (RuntimeError, OSError, ImportError, ValueError) as error:
        message = str(error)
        _switch["reason"] = "the compiled kernel could not be built"
        logger.warning("kanlab's compiled kernel could not be built; the torch path stays in use. %s",
                       message if len(message) < 2000 else "..." + message[-2000:])
        return False
    _switch.update(loaded=True, variant=wanted, reason="")
    return True


@contextlib.contextmanager
def _ninja_on_path():
    """torch builds with the ``ninja`` program it finds on PATH; the ``ninja`` package from
    the package index (our ``native`` extra) puts one beside the interpreter, which is not on
    PATH when a virtual environment's python runs without being activated."""
    folders = [str(Path(sys.executable).parent)]
    try:
        import ninja

        folders.insert(0, ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    previous = os.environ.get("PATH")
    os.environ["PATH"] = os.pathsep.join([*folders, previous or ""])
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = previous


def is_loaded() -> bool:
    """Whether the kernel is registered in this process (after the first CPU forward pass on an
    install that ships it, or after ``load()``)."""
    return _switch["loaded"]


def variant() -> str | None:
    """Which build is loaded (``"avx512"``, ``"avx2"``, ``"baseline"``, ``"generic"``), or None."""
    return _switch["variant"]


def status() -> str:
    """One line: which build is in use, or why none is."""
    if _switch["loaded"]:
        state = "on" if _switch["enabled"] else "loaded but switched off"
        return f"compiled kernel {state} ({_switch['variant']} build)"
    return f"compiled kernel not in use: {_switch['reason']}"


@contextlib.contextmanager
def use(enabled: bool):
    """Inside this block, use the kernel (if loaded) or not; the previous choice returns after."""
    previous = _switch["enabled"]
    _switch["enabled"] = bool(enabled)
    try:
        yield
    finally:
        _switch["enabled"] = previous


def disabled():
    """Use the pure-torch path inside this block even when the kernel is loaded."""
    return use(False)


def transforming() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``, ...) is running: the
    kernel's operators and the custom autograd functions around them step aside for plain,
    differentiable torch operations, which every transform can see through."""
    return torch._C._are_functorch_transforms_active()


def eager() -> bool:
    """Whether torch runs eagerly: not under ``torch.compile``, tracing, export or a
    ``torch.func`` transform (where a custom operator or an in-place update would be traced)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing() or transforming()
                or (is_exporting is not None and is_exporting()))


def usable(x: torch.Tensor, k: int) -> bool:
    """Whether the kernel may compute the features of ``x`` (loaded, enabled, a CPU float
    tensor, eager mode, degree within the kernel's limit). Called on every layer call, so the
    cheap checks go first; the first CPU call loads the shipped kernel. ONNX export runs under
    ``torch.export`` (or, with the older exporter, under ``torch.jit`` tracing), so those
    checks cover it."""
    if not _switch["enabled"]:
        return False
    if not x.is_cpu:
        if not _switch["told_device"]:
            _switch["told_device"] = True
            logger.info("kanlab's compiled kernel runs on CPU tensors; %s tensors take the torch path", x.device.type)
        return False
    if x.dtype not in _KERNEL_DTYPES or k > 16:
        return False
    if not eager():
        return False
    if not _switch["loaded"]:  # loaded in eager mode only, never while tracing
        if _switch["tried"]:
            return False
        _autoload()
    return _switch["loaded"]


_KERNEL_DTYPES = (torch.float32, torch.float64)


def lbfgs_direction(grad: torch.Tensor, dirs: list[torch.Tensor], steps: list[torch.Tensor], ro: list[float],
                    h_diag: float) -> torch.Tensor | None:
    """L-BFGS's direction ``-H grad`` (flat, like ``grad``) from the curvature pairs, by the
    compiled two-loop recursion (``csrc/lbfgs.cpp``: the same ATen calls as ``optim.LBFGS``'s
    Python loop, on any device); None when the kernel is not loaded or is switched off."""
    if not (_switch["loaded"] and _switch["enabled"]) or transforming():
        return None
    return torch.ops.kanlab_native.lbfgs_direction(grad, dirs, steps, ro, h_diag)


def _closed_form(plan, matrix: torch.Tensor) -> tuple:
    """Evenly spaced knots go to the kernel's closed form (as in the torch path), others to the tables."""
    return (matrix, plan.start, plan.step.contiguous()) if plan.uniform else (None, None, None)


def basis_features(x: torch.Tensor, base: torch.Tensor | None, plan) -> torch.Tensor:
    """``(N, in * width)`` features, as ``splines.basis_features`` builds them from the ``KnotPlan``."""
    return torch.ops.kanlab_native.basis_features(
        x.contiguous(), None if base is None else base.contiguous(), plan.knots.contiguous(), plan.value_table,
        plan.k, *_closed_form(plan, plan.cardinal),
    )


def basis_features_backward(grad: torch.Tensor, x: torch.Tensor, plan, width: int) -> torch.Tensor:
    """First-order ``d/dx`` ``(N, in)`` of the features, given their gradient ``(N, in * width)``."""
    return torch.ops.kanlab_native.basis_features_backward(
        grad, x.contiguous(), plan.knots.contiguous(), plan.derivative_table, plan.k, width,
        *_closed_form(plan, plan.cardinal_derivative),
    )


def feature_weight(coef: torch.Tensor, spline_scale: torch.Tensor, base_scale: torch.Tensor | None) -> torch.Tensor:
    """A layer's ``(out, width * in)`` slot-major feature weight (see ``layer._FeatureWeight``)."""
    return torch.ops.kanlab_native.feature_weight(
        coef.contiguous(), spline_scale.contiguous(), None if base_scale is None else base_scale.contiguous()
    )


def local_product(x: torch.Tensor, base: torch.Tensor | None, plan, weight: torch.Tensor) -> torch.Tensor:
    """A layer's ``(N, out)`` output straight from the local bases, for ``weight`` ``(in, width, out)``
    (see ``layer._LocalProduct``); degrees 1..5."""
    return torch.ops.kanlab_native.local_product(
        x.contiguous(), None if base is None else base.contiguous(), plan.knots.contiguous(), plan.value_table,
        plan.k, *_closed_form(plan, plan.cardinal), weight.contiguous(),
    )


def local_product_backward(grad: torch.Tensor, x: torch.Tensor, base: torch.Tensor | None, plan, weight: torch.Tensor,
                           needs: tuple[bool, bool, bool]) -> tuple:
    """``local_product``'s first-order gradients for ``x``, ``base`` and ``weight``, each ``None``
    where ``needs`` says it is not wanted."""
    grads = torch.ops.kanlab_native.local_product_backward(
        grad, x.contiguous(), None if base is None else base.contiguous(), plan.knots.contiguous(),
        *_backward_tables(plan), weight.contiguous(), needs[0], needs[1] and base is not None, needs[2],
    )
    return tuple(g if need else None for g, need in zip(grads, needs))


def _layer_parameters(coef, scale_sp, scale_base, mask) -> tuple:
    """The fused layer's parameter arguments, contiguous (``scale_base`` None: no residual)."""
    return coef.contiguous(), scale_sp.contiguous(), None if scale_base is None else scale_base.contiguous(), mask.contiguous()


def _backward_tables(plan) -> tuple:
    """A backward pass's knot arguments: values and slopes (tables or closed form), start and step."""
    matrix, start, step = _closed_form(plan, plan.cardinal)
    derivative = _closed_form(plan, plan.cardinal_derivative)[0]
    return plan.value_table, plan.derivative_table, plan.k, matrix, derivative, start, step


def kan_layer(x: torch.Tensor, plan, coef: torch.Tensor, scale_sp: torch.Tensor, scale_base: torch.Tensor | None,
              mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's ``(N, out)`` output from its parameters in one call (see ``layer._KANLayer``): the
    local product with the weight ``mask * scale_sp * coef`` and, when ``scale_base`` is given, the
    residual ``mask * scale_base * silu(x)``; degrees 1..5. Also the padded weight the kernel built
    from the parameters, which the backward pass can take instead of building it again (empty on
    a wide layer's fine grid, where the kernels build no padded weight)."""
    return torch.ops.kanlab_native.kan_layer(
        x.contiguous(), plan.knots.contiguous(), plan.value_table, plan.k, *_closed_form(plan, plan.cardinal),
        *_layer_parameters(coef, scale_sp, scale_base, mask),
    )


def kan_layer_norms(x: torch.Tensor, plan, coef: torch.Tensor, scale_sp: torch.Tensor,
                    scale_base: torch.Tensor | None, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``kan_layer``'s output, each edge's ``mean_b |phi(x)|`` ``(out, in)`` (the regulariser's
    norms, residual included, as ``splines.edge_mean_abs`` of the features) and the padded weight,
    in one call."""
    return torch.ops.kanlab_native.kan_layer_norms(
        x.contiguous(), plan.knots.contiguous(), plan.value_table, plan.k, *_closed_form(plan, plan.cardinal),
        *_layer_parameters(coef, scale_sp, scale_base, mask),
    )


def kan_layer_backward(grad: torch.Tensor, x: torch.Tensor, plan, coef: torch.Tensor, scale_sp: torch.Tensor,
                       scale_base: torch.Tensor | None, mask: torch.Tensor,
                       needs: tuple[bool, bool, bool, bool], padded: torch.Tensor | None = None) -> tuple:
    """``kan_layer``'s first-order gradients for ``x``, ``coef``, ``scale_sp`` and ``scale_base``,
    each ``None`` where ``needs`` says it is not wanted; ``padded`` is the forward pass's padded
    weight (None: built again)."""
    return kan_layer_norms_backward(grad, None, x, plan, coef, scale_sp, scale_base, mask, needs, padded)


def kan_layer_norms_backward(grad: torch.Tensor, grad_norms: torch.Tensor | None, x: torch.Tensor, plan,
                             coef: torch.Tensor, scale_sp: torch.Tensor, scale_base: torch.Tensor | None,
                             mask: torch.Tensor, needs: tuple[bool, bool, bool, bool],
                             padded: torch.Tensor | None = None) -> tuple:
    """The first-order gradients for ``x``, ``coef``, ``scale_sp`` and ``scale_base`` of
    ``kan_layer_norms`` from the output's and the norms' gradients, or of ``kan_layer`` (without
    ``grad_norms``), each ``None`` where ``needs`` says it is not wanted; ``padded`` as for
    ``kan_layer_backward``."""
    needs = (needs[0], needs[1], needs[2], needs[3] and scale_base is not None)
    arguments = (x.contiguous(), plan.knots.contiguous(), *_backward_tables(plan),
                 *_layer_parameters(coef, scale_sp, scale_base, mask), *needs, padded)
    if grad_norms is None:
        grads = torch.ops.kanlab_native.kan_layer_backward(grad, *arguments)
    else:
        grads = torch.ops.kanlab_native.kan_layer_norms_backward(grad, grad_norms, *arguments)
    return tuple(g if need else None for g, need in zip(grads, needs))
