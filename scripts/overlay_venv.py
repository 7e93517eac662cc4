"""A fresh virtual environment that sees this interpreter's packages (torch), even when this
interpreter is itself in a virtual environment.

    python scripts/overlay_venv.py DIR      # prints DIR/bin/python

``python -m venv --system-site-packages`` reaches the base interpreter's site-packages only: made
from inside a virtual environment (make test's .venv, the GPU machine's Python), it does not see
that environment's torch. A .pth file in the new environment adds this interpreter's
site-packages after its own, so what is installed there (a wheel under test) comes first. No pip
of its own: ``DIR/bin/python -m pip`` runs this interpreter's pip, installing into DIR.
Used by scripts/gpu_check.sh --wheel and tests/test_wheel.py.
"""
import os
import site
import subprocess
import sys
import venv

__all__ = ["create"]


def create(env_dir: str) -> str:
    """Creates the environment in ``env_dir``; returns its python."""
    venv.EnvBuilder(system_site_packages=True, with_pip=False, clear=True).create(env_dir)
    python = os.path.join(env_dir, "bin", "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(purelib, "outer-site-packages.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    return python


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} DIR")
    print(create(sys.argv[1]))
