"""The compiled kernel's source compiles for every vector level it is shipped for, whatever
this machine has: a build for AVX-512 (or for no AVX at all) that does not compile would
otherwise go unseen until a user with such a CPU installs the package."""

import platform
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
from torch.utils import cpp_extension

from kanlab import _kernel_variants as variants

CSRC = Path(variants.__file__).parent / "csrc"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or shutil.which("c++") is None,
                    reason="checks the x86-64 builds with the system's C++ compiler")
def test_the_kernel_compiles_for_each_x86_64_variant():
    includes = [f"-I{path}" for path in (*cpp_extension.include_paths(), sysconfig.get_paths()["include"])]
    jobs = {
        name: subprocess.Popen(
            ["c++", "-std=c++20", *variants.compile_flags(name, "x86_64"), *includes, "-fsyntax-only",
             str(CSRC / variants.variant_source(name))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name in variants.X86_VARIANTS
    }
    failures = {}
    for name, job in jobs.items():
        output, _ = job.communicate(timeout=300)
        if job.returncode != 0:
            failures[name] = output[-3000:]
    assert not failures, "\n\n".join(f"{name}:\n{output}" for name, output in failures.items())


def test_every_variant_has_its_source_and_every_part_is_shipped():
    for name in (*variants.X86_VARIANTS, *variants.GENERIC_VARIANTS):
        assert (CSRC / variants.variant_source(name)).is_file()
    for name in (*variants.SOURCES, *variants.HEADERS):
        assert (CSRC / name).is_file()
    included = (CSRC / "kernel.cpp").read_text()
    assert all(f'#include "{header}"' in included for header in variants.HEADERS)
    # no part of the kernel is over about 800 lines
    assert max(len((CSRC / name).read_text().splitlines()) for name in (*variants.SOURCES, *variants.HEADERS)) <= 820


def test_variant_choice_follows_torch_capability():
    assert variants.variant_for("x86_64", "AVX512") == "avx512"
    assert variants.variant_for("x86_64", "AVX2") == "avx2"
    assert variants.variant_for("x86_64", "DEFAULT") == "baseline"
    assert variants.variant_for("aarch64", "SVE256") == "generic"
    assert "-march=native" not in " ".join(f for name in variants.X86_VARIANTS
                                           for f in variants.compile_flags(name, "x86_64"))
