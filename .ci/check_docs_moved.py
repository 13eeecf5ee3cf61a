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
    ("the blend zeroshot.clip_exposure makes", "the blend streamvl.lab.zeroshot.clip_exposure makes"),
    ("(training.feature_copies;", "(streamvl.training.train.feature_copies;"),
    ("see plugins/meanpool for", "see streamvl/plugins/meanpool.py (built in) for"),
    ("logic lives in streamvl/training.py, evaluation.py,", "logic lives in streamvl/training/train.py, training/evaluate.py,"),
    ("rescore.py, localisation.py; jobs/train.py", "pipeline/rescore.py, search/localisation.py; jobs/train.py"),
]
# Old lines deliberately rewritten, with the reason (printed, so the check shows what changed on purpose).
EXPLAINED = [
    ("README.md", "## Install, run, test", "split into README sections Install, Quickstart and Tests"),
    ("README.md", "the embedded default, `streamvl-shapes@v1` (below)", "docs/models.md: 'below' is now a link to the model card in docs/shapes-world.md"),
    ("README.md", "the gap the video adapters (below) are there", "docs/shapes-world.md: 'below' is now a link to docs/adapters.md"),
    ("README.md", "every other figure in this README was measured", "docs/shapes-world.md: 'this README' -> 'these docs'"),
    ("README.md", "Five first-party adapter plugins, each its own", "docs/adapters.md: meanpool/exposure are built in now, four plugin distributions"),
    ("README.md", "the `streamvl` entry-point group (the prompt plugin offers", "docs/adapters.md: meanpool/exposure are built in now"),
    ("README.md", "v2 (this README's \"Shapes world and the default model\")", "docs/results.md: now a link to docs/shapes-world.md#v2"),
    ("README.md", "| `streamvl/", "Layout table rewritten for the layered packages (docs/architecture.md#layout)"),
    ("README.md", "| `plugins/meanpool/` |", "Layout: meanpool is built in (streamvl/plugins/meanpool.py), row rewritten"),
    ("README.md", "| `bench/RESULTS.md` |", "Layout: now the docs/ row naming docs/results-detail.md"),
    ("README.md", "| `plugins/prompt/`, `alpro/`", "Layout row reworded: the seed adapters, one distribution each, entry-point group"),
    ("README.md", "| `bench/bench_", "Layout: merged into the bench/ row of docs/architecture.md#layout"),
    ("bench/RESULTS.md", "the default model\", \"Benchmarks\")", "docs/results-detail.md intro: the README sections it named are now docs files"),
    ("bench/RESULTS.md", "README", "docs/results-detail.md: a reference to a README section now names and links the docs file it moved to"),
]



def normal(text: str) -> str:
    text = re.sub(r"(?m)^#{1,6} ", "", text)  # a heading may change level when its section moves
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
    total = missing = explained = 0
    for name in OLD:
        old = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        for no, line in enumerate(old.splitlines(), 1):
            if trivial(line):
                continue
            total += 1
            if renamed(normal(line)) in corpus:
                continue
            why = next((w for f, part, w in EXPLAINED if f == name and part in line), None)
            if why:
                explained += 1
                print(f"changed on purpose  {name}:{no}: {line.strip()[:90]}  -- {why}")
            else:
                missing += 1
                print(f"NOT FOUND  {name}:{no}: {line.strip()[:160]}")
    print(f"{total} non-trivial old lines: {total - missing - explained} found in README.md + docs/*.md, "
          f"{explained} changed on purpose (listed), {missing} not found")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "00cfbc8"))
