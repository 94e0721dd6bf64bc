"""The compiled kernel's source compiles for every x86-64 instruction set it has code for, not
only for the machine that runs the tests: ``load()`` builds with ``-march=native``, so a path
for AVX-512 (or for no AVX at all) that does not compile would otherwise go unseen until a user
with such a CPU has the kernel fail to build."""

import platform
import shutil
import subprocess
import sysconfig

import pytest
from torch.utils import cpp_extension

from kanlab import native

# baseline x86-64 (SSE2: the plain loops), AVX2 (the tiled layout) and AVX-512
TARGETS = ("x86-64", "x86-64-v3", "x86-64-v4")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or shutil.which("c++") is None,
                    reason="checks the x86-64 builds with the system's C++ compiler")
def test_the_kernel_compiles_for_each_x86_64_instruction_set():
    flags = [flag for flag in native.COMPILE_FLAGS if flag != "-march=native"]
    includes = [f"-I{path}" for path in (*cpp_extension.include_paths(), sysconfig.get_paths()["include"])]
    jobs = {
        target: subprocess.Popen(
            ["c++", "-std=c++20", *flags, f"-march={target}", *includes, "-fsyntax-only",
             *map(str, native._SOURCES)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for target in TARGETS
    }
    failures = {}
    for target, job in jobs.items():
        output, _ = job.communicate(timeout=300)
        if job.returncode != 0:
            failures[target] = output[-3000:]
    assert not failures, "\n\n".join(f"-march={target}:\n{output}" for target, output in failures.items())
