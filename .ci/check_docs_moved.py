#!/usr/bin/env python3
"""Check that nothing of the old README (and bench/RESULTS.md) was lost when they moved into docs/.

Every non-trivial line of the old files (at git revision REV) must appear, after normalising
(Markdown links reduced to their text, emphasis, code marks and quotes dropped, white space
collapsed, lower case, old module paths mapped to the new layout), somewhere in README.md or
docs/*.md. Prints the lines that do not, with their old line numbers.
Usage: python .ci/check_docs_moved.py [REV]   (default 00cfbc8, the README before the rewrite)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD = ["README.md", "bench/RESULTS.md"]
# Old names in the text -> their place in the layered layout (and the moved results file).
RENAMES = [
    ("bench/results.md", "docs/results-detail.md"),
    ("streamvl/synthetic/", "streamvl/lab/synthetic/"),
    ("streamvl/model_configs/", "streamvl/models/model_configs/"),
    ("streamvl/assets/", "streamvl/models/assets/"),
    ("streamvl/assets", "streamvl/models/assets"),
    ("streamvl/training.py, evaluation.py, rescore.py, localisation.py",
     "streamvl/training/train.py, training/evaluate.py, pipeline/rescore.py, search/localisation.py"),
    ("tests/test_faults.py", "tests/integration/test_faults.py"),
    ("tests/test_upkeep.py", "tests/integration/test_upkeep.py"),
    ("tests/test_live_kill9.py", "tests/e2e/test_live_kill9.py"),
    ("tests/test_demo.py", "tests/lab/test_demo.py"),
    ("streamvl.models.weights", "streamvl.weights"),
    ("see plugins/meanpool for", "see streamvl/plugins/meanpool.py for"),
]


def normal(text: str) -> str:
    text = re.sub(r"<a\s+(?:id|name)=\"[^\"]*\"></a>", "", text)
    text = re.sub(r"\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)\s]*\)", r"\1", text)  # [text](url) -> text
    text = re.sub(r"[*`\"]", "", text)
    text = re.sub(r"\s+", " ", text).strip().lower()
    return text


def renamed(text: str) -> str:
    for old, new in RENAMES:
        text = text.replace(old, new)
    return text


def trivial(line: str) -> bool:
    n = normal(line)
    return len(n) < 12 or re.fullmatch(r"[|\-: ]*", n) is not None or n.startswith("```")


def main(rev: str) -> int:
    corpus = normal(" ".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]))
    total = missing = 0
    for name in OLD:
        old = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        for no, line in enumerate(old.splitlines(), 1):
            if trivial(line):
                continue
            total += 1
            if renamed(normal(line)) not in corpus:
                missing += 1
                print(f"{name}:{no}: {line.strip()[:160]}")
    print(f"{total} non-trivial old lines, {total - missing} found in README.md + docs/*.md, {missing} not found verbatim")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "00cfbc8"))
