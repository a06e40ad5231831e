"""Tajbakhsh splits and reductions: by group, seeded, nested, saved and read back."""

from __future__ import annotations

import numpy as np
import pytest

from medtl.datasets.splits import (
    SINGLE,
    Member,
    SplitError,
    read_splits,
    reduce,
    reduction_name,
    train_test,
    train_val,
    write_reductions,
    write_splits,
)
from medtl.studies.tajbakhsh2016.dataset import stratified


def _members(groups: int = 10, per: tuple[int, ...] = (3, 1, 5, 2), **kw) -> list[Member]:
    out = []
    for g in range(groups):
        for k in range(per[g % len(per)]):
            out.append(Member(f"g{g}_c{k}", f"g{g}", label=k % 2, **kw))
    return out


def _groups(members, ids) -> set[str]:
    of = {m.candidate_id: m.group for m in members}
    return {of[i] for i in ids}


def test_manifest_split_is_kept_and_a_group_on_both_sides_is_an_error():
    ms = [Member("a", "g1", "train", "m.csv:2"), Member("b", "g2", "test", "m.csv:3")]
    assert train_test(ms, 0.5, 0) == {"a": "train", "b": "test"}
    bad = [*ms, Member("c", "g1", "test", "m.csv:4")]
    with pytest.raises(SplitError, match=r"m\.csv:4: group 'g1' is in test here and in train "
                                         r"at m\.csv:2"):
        train_test(bad, 0.5, 0)


def test_drawn_splits_are_by_group_and_seeded():
    ms = _members()
    side = train_test(ms, 0.3, seed=4)
    assert side == train_test(ms, 0.3, seed=4)
    assert side != train_test(ms, 0.3, seed=5)
    test_groups = _groups(ms, [i for i, r in side.items() if r == "test"])
    train_groups = _groups(ms, [i for i, r in side.items() if r == "train"])
    assert not test_groups & train_groups and len(test_groups) == 3
    training = [m for m in ms if side[m.candidate_id] == "train"]
    role = train_val(training, 0.2, seed=4)
    val = [i for i, r in role.items() if r == "val"]
    trn = [i for i, r in role.items() if r == "train"]
    assert not _groups(ms, val) & _groups(ms, trn)
    assert 0.1 <= len(val) / len(training) <= 0.45


def test_one_group_cannot_be_split():
    with pytest.raises(SplitError, match="one group"):
        train_test([Member("a", "g"), Member("b", "g")], 0.5, 0)
    with pytest.raises(SplitError, match="hold one group"):
        train_val([Member("a", "g"), Member("b", "g")], 0.2, 0)


def test_reductions_keep_whole_groups_nested_and_deterministic():
    ms = _members(groups=20)
    group_size = {}
    for m in ms:
        group_size[m.group] = group_size.get(m.group, 0) + 1
    kept = {f: reduce(ms, f, seed=2) for f in (0.5, 0.25, 0.1)}
    for f, ids in kept.items():
        groups = _groups(ms, ids)
        assert len(ids) == sum(group_size[g] for g in groups)      # no group split
        assert len(ids) >= f * len(ms)                              # at least the share
        assert ids == reduce(ms, f, seed=2)
    assert set(kept[0.1]) <= set(kept[0.25]) <= set(kept[0.5])
    assert reduce(ms, 0.5, seed=3) != kept[0.5]
    single = reduce(ms, SINGLE, seed=2)
    assert len(_groups(ms, single)) == 1 and set(single) <= set(kept[0.1])


def test_by_candidate_splits_keep_each_class():
    ms = _members(groups=2, per=(10,))
    role = train_val(ms, 0.2, seed=0, by="candidate")
    val = [m for m in ms if role[m.candidate_id] == "val"]
    assert {m.label for m in val} == {0, 1} and len(val) == 4
    kept = reduce(ms, 0.01, seed=0, by="candidate")
    assert sorted(m.label for m in ms if m.candidate_id in kept) == [0, 1]


def test_reduction_names():
    assert [reduction_name(f) for f in (0.5, 0.25, 0.1, 0.05, 0.01, SINGLE)] == [
        "reduced_50pct", "reduced_25pct", "reduced_10pct", "reduced_5pct", "reduced_1pct",
        "single_group"]


def test_split_files_round_trip_and_are_checked(tmp_path):
    ms = _members()
    role = train_test(ms, 0.3, 0)
    role.update(train_val([m for m in ms if role[m.candidate_id] == "train"], 0.2, 0))
    path = write_splits(tmp_path / "splits.csv", ms, role)
    back, group = read_splits(path)
    assert back == role and group == {m.candidate_id: m.group for m in ms}
    write_reductions(tmp_path / "r.csv", {"reduced_50pct": reduce(ms, 0.5, 0)},
                     {m.candidate_id: m.group for m in ms})
    assert (tmp_path / "r.csv").read_text().startswith("reduction,candidate_id,group\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("candidate_id,group,role\na,g1,train\nb,g1,test\n")
    with pytest.raises(SplitError, match=r"bad\.csv:3: group 'g1' is in the test set here"):
        read_splits(bad)
    bad.write_text("candidate_id,group,role\na,g1,holdout\n")
    with pytest.raises(SplitError, match="role 'holdout'"):
        read_splits(bad)


def test_stratified_sampling_balances_caps_and_repeats():
    pools = np.array([[100, 0], [50, 0], [0, 30]])
    idx = np.arange(3)
    classes = ("neg", "pos")
    p = stratified(pools, idx, 100, np.random.default_rng(0), "cap", classes, "db")
    assert np.bincount(p.cls).tolist() == [30, 30]                 # capped at the minority
    assert len({(c, lo) for c, lo in zip(p.cand, p.local, strict=True)}) == 60  # no repeats
    assert all(lo < pools[c, k] for c, k, lo in zip(p.cand, p.cls, p.local, strict=True))
    assert sorted(p.rank.tolist()) == list(range(60))
    r = stratified(pools, idx, 100, np.random.default_rng(0), "repeat", classes, "db")
    assert np.bincount(r.cls).tolist() == [50, 50]
    q = stratified(pools, idx, 100, np.random.default_rng(0), "cap", classes, "db")
    assert (q.cand == p.cand).all() and (q.local == p.local).all()
    with pytest.raises(SplitError, match="db: no 'pos' patches"):
        stratified(pools, np.array([0, 1]), 10, np.random.default_rng(0), "cap", classes, "db")
