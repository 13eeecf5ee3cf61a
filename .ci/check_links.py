#!/usr/bin/env python3
"""Check the relative links and #anchors of README.md and docs/*.md.

Every `[text](target)` outside code blocks whose target is not a URL must name an existing file
or folder (relative to the linking file), and a `#anchor` must be a heading's GitHub slug or an
`<a id="...">` in the target Markdown file. Prints each broken link and exits 1 if there is one.
Usage: python .ci/check_links.py [--allow-missing docs/x.md ...]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!\!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
ANCHOR_TAG = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code (links inside them are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    for line in text.splitlines():
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(2))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    found.update(ANCHOR_TAG.findall(text))
    return found


def check(files: list[Path], allow_missing: set[str]) -> tuple[int, list[str], list[str]]:
    checked, broken, pending = 0, [], []
    for f in files:
        for target in LINK.findall(prose(f.read_text())) + IMAGE.findall(prose(f.read_text())):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            checked += 1
            path, _, anchor = target.partition("#")
            dest = (f.parent / path).resolve() if path else f
            rel = f.relative_to(ROOT)
            if not dest.exists():
                name = str(dest.relative_to(ROOT)) if dest.is_relative_to(ROOT) else str(dest)
                (pending if name in allow_missing else broken).append(f"{rel}: {target} (no such file)")
                continue
            if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{rel}: {target} (no anchor #{anchor} in {dest.relative_to(ROOT)})")
    return checked, broken, pending


def main(argv: list[str]) -> int:
    allow = set()
    if argv[:1] == ["--allow-missing"]:
        allow = set(argv[1:])
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked, broken, pending = check(files, allow)
    print(f"{len(files)} files, {checked} relative links checked, {len(broken)} broken")
    for line in pending:
        print(f"  allowed missing (written elsewhere): {line}")
    for line in broken:
        print(f"  BROKEN {line}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
