"""maskrcnn_fast without its compiled extension, and beside another torch release.

- Every schema is written once, in the op registry maskrcnn_fast/_ext/schemas.py; _C defines
  exactly those (setup.py compiles them in), and so does the fallback when _C is absent.
- Without _C (MASKRCNN_FAST_NO_EXT=1, or a copy of the package that lacks the .so), the import
  warns once and every op and the model give _C's results (tests/support/fallback_cases.py, run in a
  subprocess and compared with the same cases run here).
- A build for another torch release stops the import with one ImportError that names the torch
  it needs, before the .so is loaded.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import maskrcnn_fast
from maskrcnn_fast._ext.schemas import SCHEMAS, op_name

from support.fallback_cases import run_cases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = os.path.join(ROOT, "tests", "support", "fallback_cases.py")
HAVE_EXT = maskrcnn_fast.build_info()["extension"]
needs_ext = pytest.mark.skipif(not HAVE_EXT, reason="the compiled extension is not built")


def _env(pythonpath, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MASKRCNN_FAST_NO_EXT")}
    env.update(PYTHONPATH=pythonpath, **extra)
    return env


def _run(args, cwd, env):
    p = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=600)
    return p


@pytest.fixture(scope="module")
def expected():
    """The cases with the compiled extension, in this process."""
    if not HAVE_EXT:
        pytest.skip("the compiled extension is not built")
    return run_cases()


def _copy_package(dest, with_so):
    ignore = ["__pycache__"] + ([] if with_so else ["*.so"])
    shutil.copytree(os.path.join(ROOT, "maskrcnn_fast"), os.path.join(dest, "maskrcnn_fast"),
                    ignore=shutil.ignore_patterns(*ignore))


def _check_fallback_run(out_file, expected, reason):
    got = torch.load(out_file, weights_only=False)
    assert len(got["import_warnings"]) == 1, got["import_warnings"]
    assert "compiled extension is not loaded" in got["import_warnings"][0]
    assert reason in got["import_warnings"][0]
    assert not any("maskrcnn_fast" in w for w in got["call_warnings"]), got["call_warnings"]
    info = got["build_info"]
    assert info["extension"] is False and info["cuda_kernels"] is False
    assert reason in info["extension_error"]
    results = got["results"]
    assert list(results) == list(expected)
    for name, want in expected.items():
        have = results[name]
        assert have.dtype == want.dtype, name
        if name.startswith("model."):
            # Different summation orders (embedding_bag vs the kernel) through a whole network.
            torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4, msg=name)
        else:
            torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6, msg=name)
    return got


def test_the_test_run_has_the_extension():
    """Everything else in tests/ would pass on the fallback too: a broken build must not."""
    if os.environ.get("MASKRCNN_FAST_NO_EXT", "").strip() not in ("", "0"):
        pytest.skip("MASKRCNN_FAST_NO_EXT is set")
    info = maskrcnn_fast.build_info()
    assert info["extension"], info["extension_error"]


@needs_ext
def test_schemas_match_the_extension():
    registered = {
        name.split("::", 1)[1]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("maskrcnn_fast::")
    }
    ours = {}
    for schema in SCHEMAS:
        parsed = torch._C.parse_schema(f"maskrcnn_fast::{schema}")
        ours[parsed.name.split("::", 1)[1]] = str(parsed)
    assert set(ours) == registered, "_C is stale: rebuild it (make build)"
    for name, schema in ours.items():
        assert schema == str(getattr(torch.ops.maskrcnn_fast, name).default._schema), name


def test_each_schema_is_written_once():
    """No second copy of a schema anywhere in the package or csrc/ (string literals joined across
    lines first), and no m.def of a literal schema in the kernels' C++: a copy could drift from
    the registry."""
    patterns = {}
    for schema in SCHEMAS:
        name, args = schema.split("(", 1)
        first_arg = args.split(",", 1)[0].split(")", 1)[0]
        patterns[op_name(schema)] = re.compile(r"(?<![\w])" + re.escape(f"{name}({first_arg}"))
    registry = os.path.join(ROOT, "maskrcnn_fast", "_ext", "schemas.py")
    copies = []
    for top in ("csrc", "maskrcnn_fast"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                path = os.path.join(folder, f)
                if path == registry or not f.endswith((".py", ".cpp", ".h", ".cu", ".cuh")):
                    continue
                text = re.sub(r'"\s*\n\s*"', "", open(path, encoding="utf-8").read())
                copies += [(path, n) for n, p in patterns.items() if p.search(text)]
                # csrc/emu defines its own test-only op (_emu_selftest), not one of the registry.
                emu = os.path.join(ROOT, "csrc", "emu")
                if f.endswith((".cpp", ".cu")) and not path.startswith(emu) and \
                        re.search(r'\.def\(\s*"', text):
                    copies.append((path, "m.def of a literal schema"))
    assert not copies, f"schemas belong in maskrcnn_fast/_ext/schemas.py only: {copies}"


def test_no_ext_env_runs_every_op_on_the_reference(tmp_path, expected):
    out = tmp_path / "out.pt"
    p = _run([CASES, str(out)], ROOT, _env(ROOT, MASKRCNN_FAST_NO_EXT="1"))
    assert p.returncode == 0, p.stderr
    got = _check_fallback_run(out, expected, "MASKRCNN_FAST_NO_EXT is set")
    assert got["file"].startswith(os.path.join(ROOT, "maskrcnn_fast"))


def test_missing_extension_runs_every_op_on_the_reference(tmp_path, expected):
    _copy_package(tmp_path / "site", with_so=False)
    out = tmp_path / "out.pt"
    p = _run([CASES, str(out)], tmp_path, _env(str(tmp_path / "site")))
    assert p.returncode == 0, p.stderr
    got = _check_fallback_run(out, expected, "No module named 'maskrcnn_fast._C'")
    assert got["file"].startswith(str(tmp_path / "site"))


_IMPORT = """
import sys
try:
    import maskrcnn_fast
except ImportError as e:
    print("IMPORT ERROR:", e)
    print("context:", e.__cause__, e.__context__)
    print("_C loaded:", "maskrcnn_fast._C" in sys.modules)
else:
    print("imported", maskrcnn_fast.build_info())
"""


@needs_ext
def test_other_torch_release_is_one_clear_import_error(tmp_path):
    _copy_package(tmp_path / "site", with_so=True)
    cfg = tmp_path / "site" / "maskrcnn_fast" / "_build_config.py"
    text = cfg.read_text().replace(f"torch_version = {maskrcnn_fast.build_info()['torch']!r}",
                                   "torch_version = '2.13.0'")
    assert "'2.13.0'" in text
    cfg.write_text(text)
    p = _run(["-c", _IMPORT], tmp_path, _env(str(tmp_path / "site")))
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "IMPORT ERROR:" in out, out
    assert "built against torch 2.13.0" in out and f"torch {torch.__version__} is installed" in out
    assert "pip install torch==2.13.0" in out and "--no-build-isolation" in out, out
    assert "context: None None" in out and "_C loaded: False" in out, out
    # The escape hatch: without the extension the version does not matter.
    p = _run(["-W", "ignore", "-c", _IMPORT], tmp_path,
             _env(str(tmp_path / "site"), MASKRCNN_FAST_NO_EXT="1"))
    assert "imported" in p.stdout and "'extension': False" in p.stdout, p.stdout + p.stderr
