"""Benchmark 11: start-up of the command line. Wall time of fresh processes: `e2-hf --help`,
`e2-hf --version` and each subcommand's `--help`, against the bare interpreter (`python -c pass`,
the named baseline), medians of interleaved repeats; and whether each imported torch.

    python benchmarks/startup.py [--toy]
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, write_result  # noqa: E402
from report import table  # noqa: E402

from e2_hf.cli import COMMANDS  # noqa: E402

REPEATS = 5
# runs the command line in this process, then says whether torch was imported
PROBE = """
import sys
from e2_hf.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("torch" in sys.modules, file=sys.stderr)
"""


def wall_seconds(arguments: list[str]) -> tuple[float, bool]:
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", PROBE, *arguments], capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    return elapsed, completed.stderr.strip().splitlines()[-1] == "True"


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    repeats = 2 if args.toy else REPEATS
    sides = {"python -c pass (baseline)": None, "e2-hf --help": ["--help"], "e2-hf --version": ["--version"]}
    if not args.toy:
        sides.update({f"e2-hf {name} --help": [name, "--help"] for name in COMMANDS})
    times: dict[str, list[float]] = {name: [] for name in sides}
    torch_imported: dict[str, bool] = {}
    for _ in range(repeats):
        for name, arguments in sides.items():
            if arguments is None:
                start = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], check=True)
                times[name].append(time.perf_counter() - start)
            else:
                seconds, torch_imported[name] = wall_seconds(arguments)
                times[name].append(seconds)
    baseline = statistics.median(times["python -c pass (baseline)"])
    results = {name: {"median_s": statistics.median(values), "runs": values,
                      "over_baseline_s": statistics.median(values) - baseline,
                      "imports_torch": torch_imported.get(name, False)}
               for name, values in times.items()}  # fmt: skip
    for name, values in results.items():
        print(f"{name}: {values['median_s']:.2f} s (+{values['over_baseline_s']:.2f} s over the bare interpreter)"
              + (", imports torch" if values["imports_torch"] else ""))  # fmt: skip
    setting = f"fresh processes, median of {repeats} interleaved runs; goal: each under 0.5 s"
    write_result("startup", {"setting": setting, "goal_s": 0.5, "commands": results}, args.output)


# ---------------------------------------------------------------- its section of BENCHMARKS.md
def render(result: dict) -> list[str]:
    goal = result["goal_s"]
    rows = [[name, f"{values['median_s']:.2f}", f"{values['over_baseline_s']:+.2f}",
             "yes" if values["imports_torch"] else "no",
             "" if name.endswith("(baseline)") else ("met" if values["median_s"] < goal else "missed")]
            for name, values in result["commands"].items()]  # fmt: skip
    return [
        "## 11. Start-up of the command line",
        "",
        f"Setting: {result['setting']}.",
        "",
        *table(["command", "wall s", "over the bare interpreter, s", "imports torch", f"under {goal} s"], rows),
        "",
    ]


if __name__ == "__main__":
    main()
