"""Per-kernel resources of the CUDA build, as ptxas left them in the fatbin: registers, stack
frame, local memory and static shared memory, read with ``cuobjdump --dump-resource-usage``
from the compiled extension; with ``--ptxas-log``, the spill bytes ptxas printed for a build
made with MASKRCNN_FAST_PTXAS_VERBOSE=1.

    python scripts/kernel_resources.py [path/to/_C*.so] [--arch sm_90] [--markdown] [--ptxas-log F]

Prints one row per kernel and exits 1 when a kernel has local memory, spills (when known) or
more than 48 KB of static shared memory (the most a block gets without opting in). A stack
frame alone is not a spill: kernel parameters indexed at run time (the pyramid levels) are
copied there. Spills fail CI's build (MASKRCNN_FAST_STRICT_PTXAS=1);
tests/test_kernel_resources.py checks the rest on every CUDA build.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

STATIC_SMEM_LIMIT = 48 * 1024
_FUNCTION = re.compile(r"^\s*Function (\S+):\s*$")
_FIELDS = re.compile(r"(REG|STACK|SHARED|LOCAL):(\d+)")
_ARCH = re.compile(r"arch = (sm_\d+a?)")


def cuobjdump() -> Optional[str]:
    found = shutil.which("cuobjdump")
    if found:
        return found
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    path = os.path.join(home, "bin", "cuobjdump")
    if os.path.exists(path):
        return path
    # A toolkit without it (nvcc alone): torch's CUDA builds bring Triton, which ships one.
    try:
        import triton
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.path.exists(path) else None


def default_library() -> Optional[str]:
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "maskrcnn_fast")
    libs = sorted(glob.glob(os.path.join(here, "_C.*.so")))
    return libs[0] if libs else None


def _demangle(names: List[str]) -> List[str]:
    tool = shutil.which("c++filt")
    if not tool or not names:
        return names
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout
    lines = out.splitlines()
    return lines if len(lines) == len(names) else names


def _short(name: str) -> str:
    """maskrcnn_fast::(anonymous namespace)::roi_align_forward_kernel<float, float, true>(...)
    -> roi_align_forward_kernel<float, float, true>"""
    name = name.replace("maskrcnn_fast::", "").replace("(anonymous namespace)::", "")
    name = name[len("void "):] if name.startswith("void ") else name  # a kernel's return type
    depth, end = 0, len(name)
    for i, ch in enumerate(name):  # cut the parameter list: the first '(' outside <...>
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            end = i
            break
    return name[:end].replace("c10::Half", "half").replace("c10::BFloat16", "bfloat16")


def resources(library: str, arch: Optional[str] = None) -> List[Dict]:
    """One dict per kernel and architecture: name, arch, reg, stack, shared, local."""
    tool = cuobjdump()
    if tool is None:
        raise FileNotFoundError("cuobjdump not found (CUDA_HOME/bin or PATH)")
    text = subprocess.run([tool, "--dump-resource-usage", library], capture_output=True,
                          text=True, check=True).stdout
    rows, current_arch, pending = [], None, None
    for line in text.splitlines():
        m = _ARCH.search(line)
        if m:
            current_arch = m.group(1)
            continue
        m = _FUNCTION.match(line)
        if m:
            pending = m.group(1)
            continue
        if pending is not None:
            fields = {k.lower(): int(v) for k, v in _FIELDS.findall(line)}
            if "reg" in fields:
                rows.append({"mangled": pending, "arch": current_arch, **fields})
            pending = None
    if arch is not None:
        rows = [r for r in rows if r["arch"] == arch]
    for r, name in zip(rows, _demangle([r["mangled"] for r in rows])):
        r["name"] = _short(name)
    return sorted(rows, key=lambda r: (r["arch"] or "", r["name"], r["mangled"]))


_PROPS = re.compile(r"Function properties for (\S+)")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def ptxas_spills(log_text: str) -> Dict[str, int]:
    """Mangled kernel name -> spill store + load bytes, from ptxas -v output (logs of several
    incremental builds, oldest first: a recompiled kernel's latest report wins)."""
    spills, pending = {}, None
    for line in log_text.splitlines():
        m = _PROPS.search(line)
        if m:
            pending = m.group(1)
            continue
        m = _SPILLS.search(line)
        if m and pending is not None:
            spills[pending] = int(m.group(1)) + int(m.group(2))  # the latest build's
            pending = None
    return spills


def problems(rows: List[Dict]) -> List[str]:
    out = []
    for r in rows:
        if r.get("local", 0) or r.get("spills", 0):
            out.append(f"{r['name']} ({r['arch']}): {r.get('local', 0)} bytes of local memory, "
                       f"{r.get('spills', 0)} bytes of spills per thread")
        if r.get("shared", 0) > STATIC_SMEM_LIMIT:
            out.append(f"{r['name']} ({r['arch']}): {r['shared']} bytes of static shared memory, "
                       f"over {STATIC_SMEM_LIMIT}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("library", nargs="?", default=None)
    ap.add_argument("--arch", default=None, help="e.g. sm_90 (default: every one in the build)")
    ap.add_argument("--markdown", action="store_true", help="a table for benchmarks/RESULTS.md")
    ap.add_argument("--ptxas-log", action="append", default=[],
                    help="build log with ptxas -v output (spills); repeat, oldest first")
    args = ap.parse_args(argv)
    lib = args.library or default_library()
    if lib is None:
        print("no compiled extension found; pass its path", file=sys.stderr)
        return 2
    rows = resources(lib, args.arch)
    if args.ptxas_log:
        text = ""
        for path in args.ptxas_log:
            with open(path) as f:
                text += f.read() + "\n"
        spills = ptxas_spills(text)
        for r in rows:
            r["spills"] = spills.get(r["mangled"])
    if not rows:
        print(f"{lib}: no CUDA kernels in it (a CPU-only build?)", file=sys.stderr)
        return 2
    if args.markdown:
        print("| kernel | arch | registers | spills (B) | stack frame (B) | local (B) | static shared (B) |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            spill = "?" if r.get("spills") is None else r["spills"]
            print(f"| `{r['name']}` | {r['arch']} | {r['reg']} | {spill} | {r.get('stack', 0)} | "
                  f"{r.get('local', 0)} | {r.get('shared', 0)} |")
    else:
        width = max(len(r["name"]) for r in rows)
        print(f"{'kernel':<{width}}  arch    reg spills  stack  local  shared")
        for r in rows:
            spill = "?" if r.get("spills") is None else r["spills"]
            print(f"{r['name']:<{width}}  {r['arch']:<6} {r['reg']:>4} {spill:>6} {r.get('stack', 0):>6} "
                  f"{r.get('local', 0):>6} {r.get('shared', 0):>7}")
    bad = problems(rows)
    for b in bad:
        print("PROBLEM:", b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
