"""``import kanlab`` against ``import torch`` (and pykan 0.2.8's ``import kan``), each in a fresh interpreter.

Each round starts one interpreter per candidate, in turn, and times the import statement inside
it (interpreter start-up is not counted). kanlab's and pykan's cost over torch is paired per
round: the same round's ``import torch`` in a fresh interpreter of the same environment.
Medians over ``--rounds``; also lists which of the heavy libraries each import loads.

    .venv/bin/python benchmarks/bench_import.py --pykan-python .venv-pykan/bin/python
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import subprocess
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from common import markdown_table, write_section  # noqa: E402

# imported only where used (the list and the other optional dependencies)
HEAVY = ("sympy", "matplotlib", "sklearn", "scipy", "pandas", "tqdm", "safetensors", "onnx", "onnxruntime",
         "tensorboard")

PROBE = """
import json, sys, time
start = time.perf_counter()
import {module}
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def timed_import(python: str, module: str) -> dict:
    """Seconds to import ``module`` (a comma-separated list) in a fresh ``python``, and the heavy
    libraries loaded after it."""
    done = subprocess.run([python, "-c", PROBE.format(module=module, heavy=HEAVY)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{python} could not import {module}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pykan-python", help="python of an environment with pykan==0.2.8")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    candidates = {"torch": (sys.executable, "torch"), "kanlab": (sys.executable, "kanlab")}
    if args.pykan_python:
        pykan_python = str(pathlib.Path(args.pykan_python).absolute())
        candidates.update({"pykan_torch": (pykan_python, "torch"), "pykan": (pykan_python, "kan")})
    for python, module in candidates.values():  # warm the file cache
        timed_import(python, module)
    runs = {name: [] for name in candidates}
    for _ in range(args.rounds):
        for name, (python, module) in candidates.items():
            runs[name].append(timed_import(python, module))

    def seconds(name):
        return [run["seconds"] for run in runs[name]]

    def over(name, base):
        return statistics.median(a - b for a, b in zip(seconds(name), seconds(base)))

    rows = [["import torch", f"{statistics.median(seconds('torch')):.2f}", "", ", ".join(runs["torch"][0]["heavy"]) or "none"],
            ["import kanlab", f"{statistics.median(seconds('kanlab')):.2f}", f"{over('kanlab', 'torch'):+.2f}",
             ", ".join(runs["kanlab"][0]["heavy"]) or "none"]]
    if "pykan" in runs:
        rows.append(["import kan (pykan 0.2.8)", f"{statistics.median(seconds('pykan')):.2f}",
                     f"{over('pykan', 'pykan_torch'):+.2f}", ", ".join(runs["pykan"][0]["heavy"]) or "none"])
    text = "\n".join([
        "## import time",
        "",
        f"`.venv/bin/python benchmarks/bench_import.py{' --pykan-python .venv-pykan/bin/python' if args.pykan_python else ''}`: "
        f"each import in a fresh interpreter, the import statement timed inside it; medians over {args.rounds} interleaved "
        f"rounds; \"over torch\" is the median over rounds of the difference to the same round's `import torch` in the "
        f"same environment (torch {torch.__version__}, Python {platform.python_version()}).",
        "",
        markdown_table(["import", "seconds", "over torch", f"heavy libraries loaded (of {', '.join(HEAVY)})"], rows),
    ])
    print(text)
    write_section("import", text)


if __name__ == "__main__":
    main()
