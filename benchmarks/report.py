"""Turns pytest-benchmark results into the table that `make bench` prints, a Markdown copy of
it and a PNG bar chart.

    python benchmarks/report.py benchmarks/out/bench.json [--out benchmarks/out]
    python benchmarks/report.py OUT/bench_ops.jsonl OUT/bench_model.jsonl --out OUT

Each input is a pytest-benchmark JSON file (--benchmark-json) or the JSON lines that
MF_BENCH_STREAM writes as benchmarks finish (benchmarks/conftest.py); several are merged in the
order given, and a missing one is skipped with a note (a step that timed out before writing it).

Ratios are speed-ups of ``fused`` measured in the same run: ``torch/fused`` is how many times
faster our kernels are than our pure-PyTorch path, ``tv/fused`` than torchvision. The heading
names the CPU and the instruction sets its kernels could use (cpu_features.py); below the
table, the memory format our backbone ran in where it chose it by timing (``*_nchw`` /
``*_channels_last`` groups fix it).
"""
import argparse
import json
import os
import platform
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cpu_features  # noqa: E402

__all__ = ["load", "table", "main"]

IMPLS = ["fused", "torch", "torchvision"]
# the deployment benchmark's (bench_deploy.py) and accelerate_torchvision(exact=False)
# (bench_torchvision_models.py): columns only when a group has them
DEPLOY = [("pt2", "tv/pt2"), ("onnxruntime", "tv/ort"), ("rounding", "tv/rounding")]


def _records(path):
    """(machine_info, benchmark dicts) of a pytest-benchmark JSON file or of JSON lines."""
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "benchmarks" in data:
        return data.get("machine_info", {}), data["benchmarks"]
    return {}, [json.loads(line) for line in text.splitlines() if line.strip()]


def load(*paths, layouts=None):
    """Returns (machine_info, {group: {impl: median_seconds}}, devices) in the order benchmarks
    ran, over every file in ``paths``. ``layouts`` (a dict), when given, receives {group:
    extra_info['layout'] of its fused row} (bench_train.record_layout)."""
    info, groups, devices = {}, OrderedDict(), set()
    for path in paths:
        machine, records = _records(path)
        info = info or machine
        for b in records:
            extra = b.get("extra_info") or {}
            impl = extra.get("impl", b["name"])
            groups.setdefault(b["group"] or b["name"], {})[impl] = b["stats"]["median"]
            devices.add(extra.get("device", "cpu"))
            if layouts is not None and impl == "fused" and extra.get("layout"):
                layouts[b["group"] or b["name"]] = extra["layout"]
    return info, groups, devices


def _fmt_time(s):
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def _ratio(other, fused):
    if other is None or fused is None or fused <= 0:
        return "-"
    return f"{other / fused:.2f}x"


def table(groups):
    """Rows of the result table: group, the three medians, and the two speed-ups."""
    head = ["benchmark", "fused", "torch", "torchvision", "torch/fused", "tv/fused"]
    extra = [(impl, name) for impl, name in DEPLOY if any(impl in m for m in groups.values())]
    head += [c for impl, name in extra for c in (impl, name)]
    rows = []
    for g, m in groups.items():
        f = m.get("fused")
        row = [g, _fmt_time(f), _fmt_time(m.get("torch")), _fmt_time(m.get("torchvision")),
               _ratio(m.get("torch"), f), _ratio(m.get("torchvision"), f)]
        for impl, _ in extra:
            row += [_fmt_time(m.get(impl)) if impl in m else "-", _ratio(m.get("torchvision"), m.get(impl))]
        rows.append(row)
    return head, rows


def _render(head, rows, md=False):
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    if md:
        line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(head), sep] + [line(r) for r in rows])
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))
    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def layout_notes(layouts):
    """Lines saying which memory format each automatically laid-out group ran in."""
    lines = []
    for group, lay in layouts.items():
        if lay.get("setting") in (True, False) or lay.get("chosen") is None:
            continue  # fixed by the group, or NCHW by rule (torchvision's rounding)
        timed = "; ".join(f"NCHW {_fmt_time(a)}, channels_last {_fmt_time(b)}" for a, b in lay.get("timed_s", []))
        lines.append(f"{group}: {lay.get('chosen') or 'nchw (not chosen: torchvision rounding)'}"
                     + (f" (timed on the first image: {timed})" if timed else " (decided earlier in this process)"))
    return lines


def _machine(info, devices):
    import torch

    # recorded by benchmarks/conftest.py when the run started (its ISA limits), else this machine
    desc = cpu_features.describe(info.get("cpu_features"))
    if "cuda" in devices and torch.cuda.is_available():
        desc = f"{torch.cuda.get_device_name()} (host: {desc})"
    return f"{desc}; torch {torch.__version__}; python {platform.python_version()}"


def _plot(groups, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(names) + 2), 4.5))
    width = 0.27
    for i, impl in enumerate(IMPLS):
        ys = [groups[g].get(impl, float("nan")) * 1e3 for g in names]
        ax.bar([x + (i - 1) * width for x in range(len(names))], ys, width, label=impl)
    ax.set_yscale("log")
    ax.set_ylabel("median time (ms, log scale)")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("maskrcnn_fast: fused vs torch vs torchvision (lower is faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", nargs="+", help="pytest-benchmark JSON or MF_BENCH_STREAM JSON lines")
    p.add_argument("--out", default=None, help="folder for results.md and bench.png")
    a = p.parse_args(argv)
    found = [f for f in a.json if os.path.isfile(f)]
    for f in a.json:
        if f not in found:
            print(f"{f}: not written (its step failed or timed out); the table leaves it out")
    layouts = {}
    info, groups, devices = load(*found, layouts=layouts)
    if not groups:
        raise SystemExit(f"{', '.join(a.json)}: no benchmarks recorded")
    head, rows = table(groups)
    out = a.out or os.path.dirname(os.path.abspath(found[0]))
    os.makedirs(out, exist_ok=True)
    machine = _machine(info, devices)
    print(f"\nmaskrcnn_fast benchmarks on {', '.join(sorted(devices))}: {machine}")
    print("median times; torch/fused and tv/fused are speed-ups of fused in this run\n")
    print(_render(head, rows))
    notes = layout_notes(layouts)
    if notes:
        print("\nbackbone memory format chosen by timing both:\n  " + "\n  ".join(notes))
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(f"Machine: {machine}\n\n" + _render(head, rows, md=True) + "\n")
        if notes:
            f.write("\nBackbone memory format chosen by timing both:\n\n" + "".join(f"- {n}\n" for n in notes))
    _plot(groups, os.path.join(out, "bench.png"))
    print(f"\nwrote {os.path.join(out, 'results.md')}, {os.path.join(out, 'bench.png')} from {', '.join(found)}")


if __name__ == "__main__":
    main()
