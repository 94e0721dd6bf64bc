"""The kernel shipped with the package: built at install for every vector level, loaded by the
first CPU forward pass with no call, and the torch path (with one log line) where no build fits."""

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from kanlab import _kernel_variants as variants
from kanlab import native

SHIPPED = (native._PACKAGE / variants.BUILD_INFO).exists()
BUILT_HERE = os.environ.get("KANLAB_BUILD_KERNEL") != "0" and platform.machine() in ("x86_64", "AMD64")

# a fresh interpreter: a layer's first CPU forward, then what native says; and the layer's
# output with the kernel against the torch path
PROBE = """
import json, torch, kanlab
from kanlab import native
before = native.is_loaded()  # importing loads nothing
layer = kanlab.KANLinear(6, 20, grid=7, dtype=torch.float64, grid_update=None, generator=torch.Generator().manual_seed(0))
x = torch.randn(300, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
x.requires_grad_()
out = layer(x)
grad, = torch.autograd.grad(out.square().sum(), x)
with native.disabled():
    plain = layer(x)
    plain_grad, = torch.autograd.grad(plain.square().sum(), x)
print(json.dumps({"before": before, "loaded": native.is_loaded(), "variant": native.variant(),
                  "status": native.status(), "capability": torch.backends.cpu.get_cpu_capability(),
                  "error": (out - plain).abs().max().item(), "grad_error": (grad - plain_grad).abs().max().item()}))
"""


def _probe(**environment):
    env = {**os.environ, **environment}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_the_install_built_every_variant():
    if not BUILT_HERE:
        pytest.skip("the kernel is built at install on x86-64 (KANLAB_BUILD_KERNEL=0 skips it)")
    assert SHIPPED, "this install has no compiled kernel: `pip install .` (or make) should have built it"
    info = json.loads((native._PACKAGE / variants.BUILD_INFO).read_text())
    assert sorted(info["variants"]) == sorted(variants.X86_VARIANTS)
    assert info["torch"] == torch.__version__


@pytest.mark.skipif(not SHIPPED, reason="no kernel was built at install")
def test_first_cpu_forward_loads_the_kernel_for_this_cpu():
    result, log = _probe()
    assert not result["before"] and result["loaded"], result
    assert result["variant"] == variants.variant_for(platform.machine(), result["capability"])
    assert result["error"] < 1e-12 and result["grad_error"] < 1e-10
    assert log == ""  # nothing said when all is well


@pytest.mark.skipif(not SHIPPED or platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 variants")
@pytest.mark.parametrize("capability, variant", [("avx2", "avx2"), ("default", "baseline"), ("avx512", "avx512")])
def test_each_vector_level_loads_and_equals_the_torch_path(capability, variant):
    if capability == "avx512" and not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        pytest.skip("this CPU has no AVX-512")
    if capability == "avx2" and torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("this CPU has no AVX2")
    result, _ = _probe(ATEN_CPU_CAPABILITY=capability)  # torch's own switch for its dispatch level
    assert result["variant"] == variant, result
    assert result["error"] < 1e-12 and result["grad_error"] < 1e-10


def test_switched_off_by_the_environment():
    result, _ = _probe(KANLAB_NATIVE="0")
    assert not result["loaded"] and "KANLAB_NATIVE=0" in result["status"]
    assert result["error"] == 0


def test_a_build_for_another_torch_is_not_loaded(tmp_path, monkeypatch):
    info = {"torch": "0.0.1", "machine": platform.machine(), "variants": ["baseline"],
            "libraries": {"baseline": "_kernel_baseline.so"}}
    (tmp_path / variants.BUILD_INFO).write_text(json.dumps(info))
    monkeypatch.setattr(native, "_PACKAGE", tmp_path)
    path, reason = native._shipped_library("baseline")
    assert path is None and "built for torch 0.0.1" in reason and torch.__version__ in reason
    monkeypatch.setattr(native, "_PACKAGE", tmp_path / "empty")
    path, reason = native._shipped_library("baseline")
    assert path is None and "no compiled kernel" in reason


def test_gpu_tensors_take_the_torch_path_with_one_log_line(caplog):
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    import logging

    import kanlab

    layer = kanlab.KANLinear(3, 4).cuda()
    with caplog.at_level(logging.INFO, logger="kanlab.native"):
        layer(torch.randn(5, 3, device="cuda"))
        layer(torch.randn(5, 3, device="cuda"))
    assert sum("CPU tensors" in record.getMessage() for record in caplog.records) <= 1
    assert not native.usable(torch.randn(2, 3, device="cuda"), 3)
