"""DDP throughput: the same training with 1 and 2 processes (torchrun, gloo, this machine).

Full-batch Adam on KAN([16, 32, 1]) with 40,000 rows; each process uses 1 thread, so 2
processes use the machine's 2 cores (1 process with 2 threads is shown too). Interleaved
repetitions; medians; rows per second and the speed-up over 1 process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import markdown_table, write_section  # noqa: E402

HERE = Path(__file__).parent


def run(processes: int, threads: int, request: dict) -> float:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               str(HERE / "ddp_worker.py"), json.dumps({**request, "threads": threads})]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    line = [row for row in done.stdout.splitlines() if row.startswith("{")][-1]
    return json.loads(line)["rows_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    request = {"rows": 40000, "inputs": 16, "hidden": 32, "grid": 5, "steps": 30}
    settings = {"1 process x 1 thread": (1, 1), "1 process x 2 threads": (1, 2), "2 processes x 1 thread": (2, 1)}
    samples: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.repeats):
        for name, (processes, threads) in settings.items():
            samples[name].append(run(processes, threads, request))
    base = statistics.median(samples["1 process x 1 thread"])
    rows = [[name, f"{statistics.median(v):,.0f}", f"{statistics.median(v) / base:.2f}x"] for name, v in samples.items()]
    text = (
        "## Multi-process training (torch DDP, gloo) on this machine's 2 cores\n\n"
        f"`.venv/bin/python benchmarks/bench_ddp.py`: full-batch Adam, KAN([16, 32, 1]), G=5, "
        f"{request['rows']:,} rows, {request['steps']} steps, float32; medians of {args.repeats} interleaved runs.\n\n"
        + markdown_table(["setting", "rows / s", "vs 1 process x 1 thread"], rows)
    )
    print(text)
    write_section("ddp", text)


if __name__ == "__main__":
    main()
