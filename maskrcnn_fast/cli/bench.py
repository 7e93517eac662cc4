"""``maskrcnn-fast bench``: the benchmarks and their report (``make bench`` runs this command)."""
import os
import subprocess
import sys
from typing import List, Sequence

from .errors import UsageError, print_error

__all__ = ["add_parser", "pytest_command", "run"]


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="the benchmarks and their report, as `make bench`")
    b.add_argument("--out", help="report folder (default benchmarks/out)")
    b.set_defaults(func=run, pytest_args=[])
    b.epilog = "Other arguments go to pytest (as PYTEST_ARGS does for make bench)."


def pytest_command(out: str, extra: Sequence[str] = ()) -> List[str]:
    """The benchmarks' pytest run, writing ``out``/bench.json."""
    return [sys.executable, "-m", "pytest", "benchmarks", "-q", "-o", "python_files=bench_*.py",
            "-o", "python_functions=bench_*", "--benchmark-only", f"--benchmark-json={out}/bench.json",
            "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name", *extra]


def run(args) -> int:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(root, "benchmarks", "report.py")):
        raise UsageError("bench runs from a source checkout (benchmarks/ not found next to the package)")
    out = os.path.abspath(args.out or os.path.join(root, "benchmarks", "out"))
    os.makedirs(out, exist_ok=True)
    rc = subprocess.call(pytest_command(out, [a for a in args.pytest_args if a != "--"]), cwd=root)
    if rc != 0:
        print_error(f"the benchmarks failed (pytest exit status {rc})")
        return rc
    return subprocess.call([sys.executable, "benchmarks/report.py", f"{out}/bench.json", "--out", out], cwd=root)
