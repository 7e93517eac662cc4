"""The CPU a benchmark ran on and the instruction sets its kernels could use, for the table's
heading: oneDNN's convolutions (most of a Mask R-CNN's time) pick their kernels by ISA, and
channels_last pays on AVX-512 / AMX but not on every AVX2-only CPU, so a table without them
cannot be compared with another machine's.

    python benchmarks/cpu_features.py    # prints the line report.py prints
"""
import os
import platform

__all__ = ["cpu_flags", "cpu_model", "features", "describe"]

# (shown as, /proc/cpuinfo flag), the ones that change which oneDNN / ATen kernels run
EXTENSIONS = [
    ("AVX2", "avx2"),
    ("AVX-512", "avx512f"),
    ("AVX512-VNNI", "avx512_vnni"),
    ("AVX512-BF16", "avx512_bf16"),
    ("AVX512-FP16", "avx512_fp16"),
    ("AMX-BF16", "amx_bf16"),
    ("AMX-INT8", "amx_int8"),
]
# environment variables that limit the ISA below what the CPU has
LIMITS = ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"]


def _cpuinfo_field(name):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:  # not Linux
        pass
    return None


def cpu_flags():
    """The first CPU's flags from /proc/cpuinfo (an empty set where there is none)."""
    return set((_cpuinfo_field("flags") or "").split())


def cpu_model():
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def features():
    """dict: model, cores, extensions (those of EXTENSIONS the CPU has), torch_capability
    (the vector ISA of ATen's own kernels, after ATEN_CPU_CAPABILITY), limits (the ISA
    environment variables that are set)."""
    flags = cpu_flags()
    try:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # torch missing or too old: the report still prints
        capability = "?"
    return {
        "model": cpu_model(),
        "cores": os.cpu_count(),
        "extensions": [name for name, flag in EXTENSIONS if flag in flags],
        "torch_capability": capability,
        "limits": {k: os.environ[k] for k in LIMITS if os.environ.get(k)},
    }


def describe(f=None):
    """One line: 'Intel(R) Xeon(R) Processor, 2 cores; ISA: AVX2 AVX-512 ... AMX-INT8; ATen
    kernels: AVX512; ONEDNN_MAX_CPU_ISA=AVX2' (``f``: a :func:`features` dict, e.g. one recorded
    in a benchmark JSON; default: this machine now)."""
    f = f or features()
    line = f"{f['model']}, {f['cores']} cores; ISA: {' '.join(f['extensions']) or 'none of AVX2/AVX-512/AMX'}"
    line += f"; ATen kernels: {f['torch_capability']}"
    if f.get("limits"):
        line += "; " + " ".join(f"{k}={v}" for k, v in f["limits"].items())
    return line


if __name__ == "__main__":
    print(describe())
