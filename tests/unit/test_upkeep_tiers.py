"""Size-tiered compaction policy (streamvl.storage.compaction) on fake fragment sizes and a fake
Lance dataset: which fragments a tier merge takes, and that a full fragment is never rewritten."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from streamvl.storage.compaction import Tiers, compact, tier_merge


def frags(*rows: int) -> list[tuple[int, int]]:
    return [(i, r) for i, r in enumerate(rows)]


def test_no_tiers_means_no_merge_above_the_base():
    assert tier_merge(frags(100, 100, 100, 100), Tiers(base=100, factor=2, tiers=0)) is None


def test_factor_adjacent_full_fragments_merge_into_the_next_level():
    assert tier_merge(frags(100, 120, 100, 7), Tiers(base=100, factor=2, tiers=1)) == (200, [0, 1])


def test_fewer_than_factor_full_fragments_wait():
    assert tier_merge(frags(100, 100, 100, 40), Tiers(base=100, factor=4, tiers=1)) is None


def test_a_run_must_be_adjacent_and_of_one_level():
    # 100 | 400 (level 1) | 100, 100: only the last two are a run of level 0
    assert tier_merge(frags(100, 400, 100, 100), Tiers(base=100, factor=2, tiers=2)) == (200, [2, 3])


def test_the_lowest_level_merges_first_and_the_top_level_never():
    t = Tiers(base=10, factor=2, tiers=2)
    assert tier_merge(frags(20, 25, 10, 10), t) == (20, [2, 3])  # level 0 before level 1
    assert tier_merge(frags(20, 25, 5), t) == (40, [0, 1])
    assert tier_merge(frags(40, 45, 50, 5), t) is None  # level 2 = the top: rewritten never again


def test_fragments_below_the_base_are_left_to_the_base_pass():
    assert tier_merge(frags(99, 99, 99), Tiers(base=100, factor=2, tiers=1)) is None


class FakeDataset:
    """A Lance dataset's fragments and compact_files as Lance plans it: candidates are fragments
    below the target, adjacent candidates are bundled until a bundle reaches the target, a bundle
    of one is left alone; excluded fragments are never candidates."""

    def __init__(self, rows: list[int]) -> None:
        self.rows = {i: r for i, r in enumerate(rows)}
        self.next_id, self.latest_version, self.calls, self.modes = len(rows), 1, [], []
        self.optimize = SimpleNamespace(compact_files=self.compact_files)

    def get_fragments(self):
        return [SimpleNamespace(fragment_id=f, count_rows=lambda r=r: r) for f, r in self.rows.items()]

    def checkout_version(self, version: int) -> "FakeDataset":
        return self

    def compact_files(self, *, target_rows_per_fragment: int, num_threads: int, excluded_fragment_ids=(),
                      compaction_mode: str = "reencode"):
        self.calls.append((target_rows_per_fragment, sorted(excluded_fragment_ids)))
        self.modes.append(compaction_mode)
        bundles, run = [], []
        for f, r in list(self.rows.items()):
            if r >= target_rows_per_fragment or f in set(excluded_fragment_ids):
                bundles.append(run)
                run = []
                continue
            run.append(f)
            if sum(self.rows[x] for x in run) >= target_rows_per_fragment:
                bundles.append(run)
                run = []
        bundles.append(run)
        removed = added = 0
        order = list(self.rows)
        for bundle in (b for b in bundles if len(b) > 1):
            at = order.index(bundle[0])
            total = sum(self.rows.pop(x) for x in bundle)
            order = [x for x in order if x not in bundle]
            order.insert(at, self.next_id)
            self.rows[self.next_id] = total
            self.rows = {x: self.rows[x] for x in order}
            self.next_id, removed, added = self.next_id + 1, removed + len(bundle), added + 1
        self.latest_version += 1
        return SimpleNamespace(fragments_removed=removed, fragments_added=added)


def test_compaction_never_rewrites_a_fragment_at_the_top_tier():
    ds, t = FakeDataset([]), Tiers(base=100, factor=4, tiers=1)
    rewritten_top = 0
    for _ in range(200):  # 200 appends of 40 rows, compaction after each
        ds.rows[ds.next_id] = 40
        ds.next_id += 1
        top_before = {f for f, r in ds.rows.items() if r >= t.target(1)}
        compact(ds, t)
        rewritten_top += len(top_before - set(ds.rows))
        assert max(ds.rows.values()) < 2 * t.factor * t.target(0) + t.target(1)  # every rewrite is bounded
    assert rewritten_top == 0
    assert sum(ds.rows.values()) == 8000
    assert len(ds.rows) <= 8000 // t.target(1) + 2 * t.factor  # few fragments: the tier merged them


def test_compact_asks_lance_for_the_base_then_one_tier_merge_excluding_the_rest():
    ds = FakeDataset([100, 100, 30, 30])
    got = compact(ds, Tiers(base=100, factor=2, tiers=1))
    assert ds.calls[0] == (100, [])  # the base pass: Lance leaves full fragments alone
    target, excluded = ds.calls[1]
    assert target == 200 and 0 not in excluded and 1 not in excluded and len(excluded) == 1
    assert got == {"removed": 4, "added": 2} and sorted(ds.rows.values()) == [60, 200]
    assert ds.modes == ["reencode", "try_binary_copy"]  # tier merges copy already-encoded pages


@pytest.mark.parametrize("factor", [0, 1])
def test_a_factor_below_two_merges_nothing(factor):
    assert tier_merge(frags(10, 10, 10), Tiers(base=10, factor=factor, tiers=1)) is None
