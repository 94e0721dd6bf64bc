"""The compiled kernel's builds: one library per vector level, chosen at run time.

Shared by ``setup.py`` (which builds every variant of this platform when the package is
installed) and ``native`` (which loads the one that fits this CPU, or compiles it on
``native.load()`` where none was shipped). Imports nothing, so ``setup.py`` can read it by path.

On x86-64 there are three: ``avx512`` and ``avx2`` for the levels torch's own dispatch reports
(``torch.backends.cpu.get_cpu_capability()``: AVX512 needs F, BW, DQ and VL; AVX2 needs FMA
too), and ``baseline`` for any x86-64 CPU (SSE2). The flags name the instruction sets
themselves, never ``-march=native``, so a library runs on every CPU of its level whichever
machine built it. Other platforms get one ``generic`` build with the compiler's defaults.
"""

from __future__ import annotations

SOURCES = ("kernel.cpp", "lbfgs.cpp")  # what native.load() compiles
HEADERS = ("intervals.h", "chunks.h", "features.h", "local_product.h", "blocks.h", "fine_blocks.h", "product.h",
           "layer.h", "norms.h")
# -fno-trapping-math lets floor() vectorize; no flag here changes NaN or rounding. -fopenmp: torch's
# at::parallel_for is inlined into the kernel and runs on OpenMP threads as torch's own operators do.
COMMON_FLAGS = ("-O3", "-fno-trapping-math", "-fopenmp")
LINK_FLAGS = ("-fopenmp",)
# setup.py's compiler line starts with Python's own CFLAGS; these undo its debug information
# (minutes of build time and tens of MB) and its -fwrapv (torch's own builds have neither)
INSTALL_FLAGS = ("-g0", "-fno-wrapv")
X86_VARIANTS = {
    "avx512": ("-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma", "-mprefer-vector-width=512"),
    "avx2": ("-mavx2", "-mfma"),
    "baseline": ("-march=x86-64", "-mtune=generic"),
}
GENERIC_VARIANTS = {"generic": ()}
LIBRARY_PREFIX = "_kernel_"
BUILD_INFO = "_kernel_build.json"


def variant_source(variant: str) -> str:
    """What setup.py compiles for a variant: kernel.cpp and lbfgs.cpp under a file name of the
    variant's own (csrc/variant_*.cpp), so variants built side by side never share an object."""
    return f"variant_{variant}.cpp"


def is_x86_64(machine: str) -> bool:
    return machine.lower() in ("x86_64", "amd64")


def variants(machine: str) -> dict[str, tuple[str, ...]]:
    """Variant name -> its instruction-set flags, for a platform (``platform.machine()``)."""
    return X86_VARIANTS if is_x86_64(machine) else GENERIC_VARIANTS


def variant_for(machine: str, capability: str) -> str:
    """The variant that runs fastest on this CPU, from torch's capability string."""
    if not is_x86_64(machine):
        return "generic"
    capability = capability.upper()
    if capability.startswith("AVX512"):
        return "avx512"
    if capability.startswith("AVX2"):
        return "avx2"
    return "baseline"


def compile_flags(variant: str, machine: str) -> tuple[str, ...]:
    """Every compiler flag of a variant's build."""
    return (*COMMON_FLAGS, *variants(machine)[variant])
