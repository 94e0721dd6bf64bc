"""Collect the full-run tables in docs/results/ (written by `kanlab reproduce NAME --out docs/results`)
into docs/RESULTS.md, in the order of kanlab.experiments.NAMES, listing the ones not yet run;
docs/results/summary.md (written by hand) goes on top.

    .venv/bin/python docs/collect_results.py
"""

from pathlib import Path

from kanlab.experiments import NAMES

HERE = Path(__file__).parent
parts, missing = [], []
for name in NAMES:
    table = HERE / "results" / f"{name}.md"
    if table.is_file():
        parts.append(table.read_text().replace("## ", f"## `{name}`: ", 1) + f"\n![{name}](results/{name}.png)\n")
    else:
        missing.append(name)
header = [
    "# The paper's experiments: full runs on this machine",
    "",
    "Each section is `kanlab reproduce NAME --out docs/results` (2 cores, CPU, torch 2.13.0, float64), "
    "with its run time; CSVs and plots beside it in `results/`. Regenerate this file with "
    "`.venv/bin/python docs/collect_results.py`.",
    "",
    "Run times are wall times on a shared machine: `scaling`, `grid_extension`, `special`, `feynman`, "
    "`poisson` and `symbolic` ran two or three at a time with one thread each (`OMP_NUM_THREADS=1`), so "
    "they are one-core times, slowed by the neighbour. Full runs give fewer LBFGS steps per grid than "
    "the paper's 200 (each table says its budget); the MLPs always get the same total.",
    "",
]
summary = HERE / "results" / "summary.md"  # hand-written: where our numbers differ from the paper's, and why
if summary.is_file():
    header += [summary.read_text().strip(), ""]
if missing:
    header += [f"Not yet run in full here: {', '.join(f'`{n}`' for n in missing)} (their `--quick` runs are in the test suite).", ""]
(HERE / "RESULTS.md").write_text("\n".join(header) + "\n".join(parts))
print(f"wrote {HERE / 'RESULTS.md'}: {len(parts)} of {len(NAMES)} experiments")
