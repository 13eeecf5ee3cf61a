"""House rules that code review would otherwise have to catch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_runtime_imports_ray():
    offenders = [
        str(p.relative_to(ROOT))
        for base in ("streamvl", "plugins", "jobs")
        for p in (ROOT / base).rglob("*.py")
        if "ray" in imported_modules(p) and "streamvl/runtime" not in p.as_posix()
    ]
    assert not offenders, f"only streamvl/runtime may import Ray: {offenders}"


def test_import_is_light():
    """Importing the package and its plain modules loads no torch, Ray or LanceDB."""
    code = (
        "import sys, streamvl, streamvl.api, streamvl.config, streamvl.sources, streamvl.storage.store, streamvl.search.query, streamvl.cli\n"
        "print(sorted(m for m in ('torch', 'ray', 'lancedb', 'open_clip') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_product_never_imports_the_lab_at_import_time():
    """Outside streamvl/lab, a module may import the lab only inside a function (the demo, shapes data)."""
    offenders = []
    for p in (ROOT / "streamvl").rglob("*.py"):
        if "streamvl/lab" in p.as_posix():
            continue
        tree = ast.parse(p.read_text())
        for node in tree.body:  # top-level statements only
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("streamvl.lab"):
                offenders.append(str(p.relative_to(ROOT)))
            elif isinstance(node, ast.Import) and any(a.name.startswith("streamvl.lab") for a in node.names):
                offenders.append(str(p.relative_to(ROOT)))
    assert not offenders, f"product modules import streamvl.lab at import time: {offenders}"
    code = "import sys, streamvl.api, streamvl.cli; print([m for m in sys.modules if m.startswith('streamvl.lab')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
