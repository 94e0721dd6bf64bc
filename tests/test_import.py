"""``import kanlab`` stays light: the optional heavy libraries load only when a feature uses them."""

import json
import subprocess
import sys

# sympy (formulas), matplotlib (pictures), scikit-learn (estimators), scipy, tqdm (progress bars),
# safetensors (checkpoints), onnx (export), tensorboard (its logger callback), pandas
HEAVY = ("sympy", "matplotlib", "sklearn", "scipy", "pandas", "tqdm", "safetensors", "onnx", "onnxruntime",
         "tensorboard")

PROBE = f"""
import json, sys
import torch
before = set(sys.modules)
import kanlab
from kanlab import KAN, KANLinear, fit, native
added = set(sys.modules) - before
print(json.dumps(sorted({{name.split(".")[0] for name in added}} & set({HEAVY!r}))))
"""


def test_import_kanlab_loads_none_of_the_heavy_libraries():
    """Whatever torch itself loads, ``import kanlab`` (and its core names) adds none of them."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_probe_sees_a_heavy_library_when_one_is_used():
    """The check above can fail: building a formula loads sympy."""
    probe = PROBE.replace("from kanlab import KAN, KANLinear, fit, native",
                          "model = kanlab.KAN([1, 1], grid=3, seed=0); "
                          "model.fix_symbolic(0, 0, 0, 'x', fit_params=False); model.symbolic_formula()")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sympy" in json.loads(done.stdout.strip().splitlines()[-1])
