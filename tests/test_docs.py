"""The README and docs/*.md: every relative link resolves, the Python examples run as written,
and the command lines they show use options the commands have.

- Links: every relative `[text](target)` / `![alt](target)` outside code resolves to a file of
  the repository, and its `#anchor`, if any, to a heading of that file (GitHub's slugs).
- Python: every ```python block runs, in a fresh namespace and a temporary working folder, and
  imports only the public API (maskrcnn_fast, .ops, .models, .data, .deploy, .emulated, .accelerate: no
  underscore name). A block whose previous line is `<!-- docs-test: skip (reason) -->` is
  only compiled and checked for its imports, and the run is skipped with that reason (it needs
  the network, pretrained weights, a GPU or minutes of compiling).
- Paths: a path of the repository named in inline code (`tests/test_nms.py`, `csrc/emu/`,
  `tests/test_export*.py`) exists, so that a file moved or renamed is not left behind in the
  docs (placeholders such as `<op>`, build outputs and `benchmarks/out/` are not checked).
- Command lines: every `--option` given to `python -m maskrcnn_fast <command>` in a ```sh block
  is one that `<command> --help` lists.
"""
import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 200  # issue 17: a front door read in five minutes

PUBLIC_MODULES = {
    "maskrcnn_fast",
    "maskrcnn_fast.ops",
    "maskrcnn_fast.ops.reference",
    "maskrcnn_fast.models",
    "maskrcnn_fast.data",
    "maskrcnn_fast.deploy",
    "maskrcnn_fast.deploy.onnx",
    "maskrcnn_fast.emulated",
    "maskrcnn_fast.accelerate",
}
COMMANDS = ("train", "eval", "predict", "export", "bench")

FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\s*\((.+)\)\s*-->\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _blocks(path: Path):
    """(language, first line number of the code, code, skip reason or None) per fenced block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.match(prev.strip())
        j = i + 1
        while j < len(lines) and not lines[j].startswith(fence[:3]):
            j += 1
        out.append((lang, i + 2, "\n".join(lines[i + 1:j]) + "\n", skip.group(1) if skip else None))
        i = j + 1
    return out


def _prose(path: Path) -> str:
    """The file without its fenced code blocks and inline code spans (line count kept)."""
    text, out, fence = path.read_text(encoding="utf-8"), [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[:3]
            out.append("")
        elif fence is not None:
            if line.startswith(fence):
                fence = None
            out.append("")
        else:
            out.append(re.sub(r"(`+)(?:(?!\1).)+?\1", "``", line))
    return "\n".join(out)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links -> their text
    text = re.sub(r"[`*]|<[^>]+>", "", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set:
    seen, anchors = {}, set()
    for line in _prose(path).splitlines():
        m = HEADING.match(line)
        if not m:
            continue
        slug = _slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(path: Path):
    for lineno, line in enumerate(_prose(path).splitlines(), 1):
        for target in LINK.findall(line):
            yield lineno, target
        m = REF_DEF.match(line)
        if m:
            yield lineno, m.group(1)


PY_BLOCKS = [
    pytest.param(path, line, code, skip, id=f"{_rel(path)}:{line}")
    for path in DOC_FILES
    for lang, line, code, skip in _blocks(path)
    if lang in ("python", "py")
]


def test_doc_files_exist():
    assert (ROOT / "README.md").is_file()
    assert len(DOC_FILES) > 1, "docs/*.md: the deep sections the README links to"
    assert PY_BLOCKS, "the README's examples"


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, (
        f"README.md has {n} lines, more than {README_MAX_LINES}: move the detail to docs/*.md "
        f"and link it")


@pytest.mark.parametrize("path", DOC_FILES, ids=_rel)
def test_relative_links_resolve(path):
    bad = []
    for lineno, target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # http(s):, mailto: ...: not checked here (no network in tests)
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{_rel(path)}:{lineno}: {target}"
        try:
            dest.relative_to(ROOT)
        except ValueError:
            bad.append(f"{where} leaves the repository")
            continue
        if not dest.exists():
            bad.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{where}: no heading with anchor #{anchor} in {_rel(dest)}")
    assert not bad, "broken links:\n" + "\n".join(bad)


TRACKED_ROOTS = (".ci/", "csrc/", "maskrcnn_fast/", "tests/", "scripts/", "benchmarks/", "examples/", "docs/")
GENERATED = ("benchmarks/out/",)


@pytest.mark.parametrize("path", DOC_FILES, ids=_rel)
def test_named_paths_exist(path):
    text = path.read_text(encoding="utf-8")
    prose = _prose(path)  # fenced blocks blanked; inline code is read from the original lines
    bad = []
    for lineno, (line, kept) in enumerate(zip(text.splitlines(), prose.splitlines()), 1):
        if not kept.strip() and line.strip():
            continue  # inside a fenced block
        for name in re.findall(r"`([^`\s]+)`", line):
            if not name.startswith(TRACKED_ROOTS) or name.startswith(GENERATED):
                continue
            if re.search(r"[<>{}]", name) or name.endswith(".so"):
                continue  # a placeholder, or a build output
            found = list(ROOT.glob(name.rstrip("/"))) if "*" in name else (ROOT / name).exists()
            if not found:
                bad.append(f"{_rel(path)}:{lineno}: `{name}`")
    assert not bad, "paths named in the docs that do not exist (moved? renamed?):\n" + "\n".join(bad)


def _public_api_problems(code: str, where: str):
    problems = []
    for node in ast.walk(ast.parse(code, filename=where)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "maskrcnn_fast":
            if node.module not in PUBLIC_MODULES:
                problems.append(f"from {node.module} import ...: not a public module")
            problems += [f"from {node.module} import {a.name}: a private name"
                         for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            problems += [f"import {a.name}: not a public module" for a in node.names
                         if a.name.split(".")[0] == "maskrcnn_fast" and a.name not in PUBLIC_MODULES]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id == "maskrcnn_fast":
                problems.append(f"maskrcnn_fast...{node.attr}: a private name")
    return problems


@pytest.mark.parametrize("path,line,code,skip", PY_BLOCKS)
def test_python_example_runs(path, line, code, skip, tmp_path, monkeypatch):
    where = f"{_rel(path)}:{line}"
    compiled = compile(code, where, "exec")  # a syntax error fails even a skipped example
    problems = _public_api_problems(code, where)
    assert not problems, f"{where} uses more than the public API:\n" + "\n".join(problems)
    if skip:
        pytest.skip(skip)
    monkeypatch.chdir(tmp_path)  # whatever an example writes lands here
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compiled, {"__name__": "__docs__"})


def _command_lines(path: Path):
    """(line number, command, options) for each `maskrcnn_fast <command>` line of a sh block."""
    for lang, first, code, _ in _blocks(path):
        if lang not in ("sh", "bash", "shell", "console"):
            continue
        joined, start = [], None
        for k, raw in enumerate(code.splitlines()):
            start = first + k if start is None else start
            joined.append(raw.rstrip("\\").strip())
            if raw.rstrip().endswith("\\"):
                continue
            text = re.sub(r"\s#\s.*$", "", " ".join(joined))
            m = re.search(r"(?:-m maskrcnn_fast|maskrcnn-fast)\s+(\w+)(.*)", text)
            if m and m.group(1) in COMMANDS:
                yield start, m.group(1), re.findall(r"(?<!\S)(--[a-z][\w-]*)", m.group(2))
            joined, start = [], None


CMD_LINES = [(path, line, cmd, opts) for path in DOC_FILES for line, cmd, opts in _command_lines(path)]


def _help(command: str) -> str:
    from maskrcnn_fast.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([command, "--help"])  # argparse's --help: printed, then exit 0 (or main returns 0)
    assert "--help" in out.getvalue(), f"{command} --help printed no usage"
    return out.getvalue()


def test_command_lines_use_real_options():
    assert CMD_LINES, "the README shows the command line"
    helps, bad = {}, []
    for path, line, command, options in CMD_LINES:
        if command == "bench":
            continue  # its extra arguments go to pytest
        if command not in helps:
            helps[command] = _help(command)
        bad += [f"{_rel(path)}:{line}: {command} {o}" for o in options
                if not re.search(re.escape(o) + r"(?![\w-])", helps[command])]
    assert not bad, "options that `<command> --help` does not list:\n" + "\n".join(bad)
