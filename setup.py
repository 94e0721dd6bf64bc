"""Builds kanlab's compiled CPU kernel when the package is installed (metadata: pyproject.toml).

Every vector level of this platform gets its own library (``src/kanlab/_kernel_variants.py``:
AVX-512, AVX2 and baseline on x86-64), all from the same source, so one install or wheel runs
the fastest fitting build on any CPU; ``kanlab.native`` picks it at run time. The libraries
are built against the torch found at build time and record its version in
``_kernel_build.json``: a different torch at run time takes the torch path (with a log line).

Where torch or a C++ compiler is missing the install still succeeds, without the kernel; set
``KANLAB_REQUIRE_KERNEL=1`` to make that an error, ``KANLAB_BUILD_KERNEL=0`` to skip it.
"""

from __future__ import annotations

import json
import os
import platform
import runpy
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
VARIANTS = runpy.run_path(str(HERE / "src" / "kanlab" / "_kernel_variants.py"))
CSRC = Path("src") / "kanlab" / "csrc"


def _warn(message: str) -> None:
    if os.environ.get("KANLAB_REQUIRE_KERNEL") == "1":
        raise SystemExit(f"kanlab: {message}")
    sys.stderr.write(f"kanlab: {message}; installing without the compiled kernel (the torch path is used)\n")


def _kernel_build():
    """``(ext_modules, cmdclass)`` for the kernel's variants, or empty ones where it cannot be built."""
    if os.environ.get("KANLAB_BUILD_KERNEL") == "0":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError as error:
        _warn(f"torch is not importable at build time ({error})")
        return [], {}

    machine = platform.machine()
    depends = [str(CSRC / name) for name in (*VARIANTS["SOURCES"], *VARIANTS["HEADERS"])]
    extensions = [
        CppExtension(
            f"kanlab.{VARIANTS['LIBRARY_PREFIX']}{variant}",
            sources=[str(CSRC / VARIANTS["variant_source"](variant))],
            depends=depends,
            extra_compile_args=[*VARIANTS["compile_flags"](variant, machine), *VARIANTS["INSTALL_FLAGS"]],
            extra_link_args=list(VARIANTS["LINK_FLAGS"]),
        )
        for variant in VARIANTS["variants"](machine)
    ]

    class KernelBuild(BuildExtension):
        """Builds the variants (in parallel, one per core), tolerates a missing compiler, and
        writes which torch they were built against beside them."""

        def initialize_options(self):
            super().initialize_options()
            self.parallel = os.cpu_count() or 1

        def run(self):
            self.built_variants = []
            try:
                super().run()
            except Exception as error:  # noqa: BLE001 -- any compiler failure leaves the torch path
                _warn(f"the compiled kernel did not build ({type(error).__name__}: {error})")
                return
            self._write_build_info()

        def build_extension(self, ext):
            super().build_extension(ext)
            self.built_variants.append(ext.name.rsplit(".", 1)[1][len(VARIANTS["LIBRARY_PREFIX"]):])

        def _write_build_info(self):
            if not self.built_variants:
                return
            target = Path(self.get_ext_fullpath(self.extensions[0].name)).parent
            target.mkdir(parents=True, exist_ok=True)
            info = {
                "torch": torch.__version__,
                "machine": machine,
                "variants": sorted(self.built_variants),
                "libraries": {variant: Path(self.get_ext_filename(f"{VARIANTS['LIBRARY_PREFIX']}{variant}")).name
                              for variant in self.built_variants},
            }
            (target / VARIANTS["BUILD_INFO"]).write_text(json.dumps(info, indent=1) + "\n")

        def get_outputs(self):
            outputs = super().get_outputs()
            if getattr(self, "built_variants", None):
                target = Path(self.get_ext_fullpath(self.extensions[0].name)).parent
                outputs.append(str(target / VARIANTS["BUILD_INFO"]))
            return outputs

    return extensions, {"build_ext": KernelBuild.with_options(use_ninja=False, no_python_abi_suffix=True)}


ext_modules, cmdclass = _kernel_build()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
