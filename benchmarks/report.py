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

The ``dense`` group (bench_dense.py: one child process per case, its memory watched) has a table
of its own, from each case's ``extra_info['dense']``: the child's time and peak resident set,
the growth per instance against K=10, and the ratios to torchvision, computed from
torchvision's growth per instance where torchvision ran out of memory (the row says so).
"""
import argparse
import json
import os
import platform
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cpu_features  # noqa: E402

__all__ = ["load", "table", "load_dense", "dense_table", "main"]

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


# ---- the dense group (bench_dense.py) ----------------------------------------------------------

def load_dense(*paths):
    """{group: {impl: extra_info['dense']}} of the dense group's cases, in the order they ran."""
    out = OrderedDict()
    for path in paths:
        for b in _records(path)[1]:
            extra = b.get("extra_info") or {}
            if "dense" in extra:
                out.setdefault(b["group"] or b["name"], {})[extra.get("impl", b["name"])] = extra["dense"]
    return out


def _fmt_bytes(n):
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def _dense_peak(case):
    """The case's peak resident set in bytes (the child's VmHWM, else wait4's maximum)."""
    res = case.get("result") or {}
    return res.get("vmhwm") or case.get("peak_rss")


def dense_table(records):
    """(head, rows, notes) of the dense group: one row per case, ours (``fused``) beside
    torchvision. ``records``: benchmark dicts (or load_dense's mapping). The growth per instance
    is (peak at K - peak at K=10) / (K - 10); where torchvision ran out of memory its peak is
    computed as its K=10 peak plus its growth per instance at the largest K it ran, times
    (K - 10), and the row says so."""
    cases = records if isinstance(records, dict) else OrderedDict()
    if not isinstance(records, dict):
        for b in records:
            extra = b.get("extra_info") or {}
            if "dense" in extra:
                cases.setdefault(b["group"] or b["name"], {})[extra.get("impl", b["name"])] = extra["dense"]
    head = ["benchmark", "fused time", "tv time", "tv/fused time", "fused peak RSS", "tv peak RSS",
            "tv/fused peak", "fused growth/inst", "tv growth/inst", "losses max rel diff", "notes"]
    train = {c["k"]: by for by in cases.values() for c in by.values() if c.get("mode") == "train"}
    base = {impl: _dense_peak(train[min(train)][impl]) for impl in ("fused", "torchvision")
            if train and impl in train[min(train)] and train[min(train)][impl]["status"] == "ok"}
    k0 = min(train) if train else None

    def growth(impl, k):
        c = train.get(k, {}).get(impl)
        if c is None or c["status"] != "ok" or impl not in base or k == k0:
            return None
        return (_dense_peak(c) - base[impl]) / (k - k0)

    rows, notes = [], []
    for group, by in cases.items():
        f, t = by.get("fused"), by.get("torchvision")
        any_case = f or t
        k, mode = any_case.get("k"), any_case.get("mode")
        cell, peak, note = {}, {}, []
        for impl, c in (("fused", f), ("torchvision", t)):
            if c is None:
                cell[impl], peak[impl] = ("-", "-"), None
                continue
            res = c.get("result") or {}
            if c["status"] == "ok":
                peak[impl] = _dense_peak(c)
                cell[impl] = (_fmt_time(res.get("time_s")), _fmt_bytes(peak[impl]))
            else:
                peak[impl] = None
                at = c.get("rss_at_kill")
                cell[impl] = (c["status"], f"{c['status']} ({_fmt_bytes(at)} at kill)" if at else c["status"])
                note.append(f"{'ours' if impl == 'fused' else 'tv'}: {c['status']}: {c.get('reason') or c.get('returncode')}")
        tv_peak, computed = peak["torchvision"], False
        if tv_peak is None and t is not None and t["status"] == "out of memory" and mode == "train" and k != k0:
            ran = [kk for kk in train if kk != k0 and kk < k and growth("torchvision", kk) is not None]
            if ran:
                g = growth("torchvision", max(ran))
                tv_peak, computed = base["torchvision"] + g * (k - k0), True
                note.append(f"tv peak computed from its growth per instance at K={max(ran)} "
                            f"({_fmt_bytes(g)}): {_fmt_bytes(tv_peak)}")
        tf = (f or {}).get("result") or {}
        tt = (t or {}).get("result") or {}
        mem_ratio = "-" if tv_peak is None or not peak["fused"] else \
            f"{tv_peak / peak['fused']:.2f}x" + (" (computed)" if computed else "")
        diff = "-"
        if tf.get("losses") and tt.get("losses"):
            d, name = max((abs(tf["losses"][n] - tt["losses"][n]) / max(abs(tt["losses"][n]), 1e-30), n)
                          for n in tt["losses"] if n in tf["losses"])
            diff = f"{d:.1e} ({name})"
        if mode == "infer":
            dets = [f"{name}: {r.get('detections')} dets, {r.get('masks')}" for name, r in (("ours", tf), ("tv", tt)) if r]
            note = dets + note
        elif tf.get("mask_format"):
            note.insert(0, f"ours: {tf['mask_format']} masks, {tf.get('instances')} instances")
        gf, gt = (growth("fused", k), growth("torchvision", k)) if mode == "train" else (None, None)
        prev = max((kk for kk in train if kk < k and kk != k0), default=None) if mode == "train" else None
        if prev is not None:  # from the K before: past the sampler's cap on positives, the instances' own cost
            step = []
            for name, impl in (("ours", "fused"), ("tv", "torchvision")):
                a, b = train.get(prev, {}).get(impl), train.get(k, {}).get(impl)
                if a and b and a["status"] == b["status"] == "ok":
                    step.append(f"{name} {_fmt_bytes((_dense_peak(b) - _dense_peak(a)) / (k - prev))}")
            if step:
                note.append(f"growth/inst from K={prev}: " + ", ".join(step))
        rows.append([group, cell["fused"][0], cell["torchvision"][0], _ratio(tt.get("time_s"), tf.get("time_s")),
                     cell["fused"][1], cell["torchvision"][1], mem_ratio,
                     _fmt_bytes(gf) if gf is not None else "-", _fmt_bytes(gt) if gt is not None else "-", diff,
                     "; ".join(note)])
    cap = next((c.get("cap") for by in cases.values() for c in by.values() if c.get("cap")), None)
    if cap:
        notes.append(f"Each case in its own process, killed at a resident set of {cap / (1 << 30):.1f} GiB "
                     "(MF_DENSE_RSS_CAP_GB) or when the machine ran low: 'out of memory'. Peak RSS: the child's VmHWM "
                     "(model, data and a small warm-up included); growth/inst: (peak - peak at K=10) / (K - 10).")
    return head, rows, notes


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
    dense = load_dense(*found)  # its own table: a child's measurements, not pytest-benchmark's medians
    groups = OrderedDict((g, m) for g, m in groups.items() if g not in dense)
    if not groups and not dense:
        raise SystemExit(f"{', '.join(a.json)}: no benchmarks recorded")
    head, rows = table(groups)
    out = a.out or os.path.dirname(os.path.abspath(found[0]))
    os.makedirs(out, exist_ok=True)
    machine = _machine(info, devices)
    print(f"\nmaskrcnn_fast benchmarks on {', '.join(sorted(devices))}: {machine}")
    print("median times; torch/fused and tv/fused are speed-ups of fused in this run\n")
    print(_render(head, rows) if rows else "(no timed groups besides the dense one)")
    notes = layout_notes(layouts)
    if notes:
        print("\nbackbone memory format chosen by timing both:\n  " + "\n  ".join(notes))
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(f"Machine: {machine}\n\n" + (_render(head, rows, md=True) + "\n" if rows else ""))
        if notes:
            f.write("\nBackbone memory format chosen by timing both:\n\n" + "".join(f"- {n}\n" for n in notes))
    if dense:
        dhead, drows, dnotes = dense_table(dense)
        print("\ndense scenes (bench_dense.py): one training iteration / inference per child process\n")
        print(_render(dhead, drows))
        print("\n".join(dnotes))
        with open(os.path.join(out, "results.md"), "a") as f:
            f.write("\nDense scenes (bench_dense.py):\n\n" + _render(dhead, drows, md=True) + "\n\n"
                    + "".join(f"{n}\n" for n in dnotes))
    if not groups:  # the dense group alone: no medians to chart
        print(f"\nwrote {os.path.join(out, 'results.md')} from {', '.join(found)}")
        return
    _plot(groups, os.path.join(out, "bench.png"))
    print(f"\nwrote {os.path.join(out, 'results.md')}, {os.path.join(out, 'bench.png')} from {', '.join(found)}")


if __name__ == "__main__":
    main()
