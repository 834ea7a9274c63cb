"""Offline EDA augmentation: tokenisation (jieba for Chinese), operations, mined synonyms, markers."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from tailguard import augment, balance
from tailguard.augment import augment_rows, eda_operation, join_tokens, mine_synonyms, tokenize


def rows(texts: list[tuple[str, str]], start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "query": [q for q, _ in texts],
            "item_id": [f"I{i}" for i in range(len(texts))],
            "item_title": [t for _, t in texts],
            "label": np.ones(len(texts), np.int8),
            "row_id": np.arange(start, start + len(texts), dtype=np.int64),
            "augmented": False,
        }
    )


def test_tokenize_english_by_words_and_chinese_with_jieba():
    assert tokenize("grey corner sofa") == ("grey", "corner", "sofa")
    assert tokenize("无线蓝牙耳机") == ("无线", "蓝牙", "耳机")  # jieba words, not characters
    assert join_tokens(tokenize("无线蓝牙耳机"), cjk=True) == "无线蓝牙耳机"
    assert join_tokens(("iphone", "15", "手机壳"), cjk=True) == "iphone 15手机壳"


@pytest.mark.parametrize("seed", range(5))
def test_eda_operations(seed):
    words = ["grey", "corner", "sofa", "with", "storage", "box", "and", "cushions", "for", "lounge"]
    synonyms = {"sofa": ("couch",), "grey": ("gray",)}
    rng = random.Random(seed)
    swapped = eda_operation("swap", words, 0.1, synonyms, rng)
    assert Counter(swapped) == Counter(words) and swapped != words
    deleted = eda_operation("delete", words, 0.3, synonyms, rng)
    assert 1 <= len(deleted) <= len(words) and set(deleted) <= set(words)
    replaced = eda_operation("synonym", words, 0.1, synonyms, rng)  # n = max(1, 0.1 * 10) = 1 word
    assert len(replaced) == len(words) and sum(a != b for a, b in zip(replaced, words, strict=True)) == 1
    assert set(replaced) - set(words) <= {"couch", "gray"}
    inserted = eda_operation("insert", words, 0.1, synonyms, rng)
    assert len(inserted) == len(words) + 1 and (Counter(inserted) - Counter(words)).keys() <= {
        "couch",
        "gray",
    }


def test_deletion_never_empties_a_text():
    rng = random.Random(0)
    for _ in range(50):
        assert len(eda_operation("delete", ["sofa", "grey"], 0.5, {}, rng)) >= 1


def test_augment_rows_markers_and_determinism():
    source = rows([("grey sofa", "acme grey corner sofa"), ("red boots", "vela red leather boots")], start=10)
    first = augment_rows(source, alpha=0.2, copies=3, synonyms={"sofa": ("couch",)}, seed=3)
    again = augment_rows(source, alpha=0.2, copies=3, synonyms={"sofa": ("couch",)}, seed=3)
    pd.testing.assert_frame_equal(first, again)
    assert first["augmented"].all()
    assert set(first["source_row_id"]) == {10, 11}
    assert first["row_id"].is_unique and (first["row_id"] < 0).all()
    assert (first["label"] == 1).all()
    # copies keep the source's item and differ from the source text
    merged = first.merge(source, left_on="source_row_id", right_on="row_id", suffixes=("", "_src"))
    assert (merged["item_id"] == merged["item_id_src"]).all()
    assert (
        (merged["query"] != merged["query_src"]) | (merged["item_title"] != merged["item_title_src"])
    ).all()
    assert not first.duplicated(["source_row_id", "query", "item_title"]).any()
    assert set(first["aug_op"].str.split("+").explode()) <= set(augment.OPERATIONS)
    other_seed = augment_rows(source, alpha=0.2, copies=3, synonyms={"sofa": ("couch",)}, seed=4)
    assert not other_seed.equals(first)


def test_a_rows_copies_do_not_depend_on_the_other_rows():
    both = rows([("grey sofa", "acme grey corner sofa"), ("red boots", "vela red leather boots")])
    alone = augment_rows(both.iloc[[1]], copies=2, seed=0)
    together = augment_rows(both, copies=2, seed=0)
    pick = together[together["source_row_id"] == 1].reset_index(drop=True)
    assert pick[["query", "item_title"]].equals(alone[["query", "item_title"]].reset_index(drop=True))


def test_chinese_rows_are_augmented_by_jieba_words():
    source = rows([("无线蓝牙耳机", "无线蓝牙耳机 黑色 降噪")])
    out = augment_rows(source, copies=4, operations=("swap",), fields=("query",), seed=1)
    assert len(out) >= 1
    for query in out["query"]:
        assert " " not in query
        assert query != "无线蓝牙耳机" and sorted(query) == sorted("无线蓝牙耳机")  # words moved, none lost


def test_synonyms_mined_from_queries_sharing_items_and_from_titles():
    pairs = [
        ("grey couch", "I1", "acme grey corner sofa"),
        ("grey sofa", "I1", "acme grey corner sofa"),
        ("leather couch", "I2", "vela leather sofa bed"),
        ("leather sofa", "I2", "vela leather sofa bed"),
        ("红色连衣裙", "I3", "red summer dress"),
        ("红色长裙", "I3", "red summer dress"),
        ("黑色连衣裙", "I7", "black evening dress"),
        ("黑色长裙", "I7", "black evening dress"),
        ("tv 55 inch", "I4", "sora 55 inch television"),
        ("tv wall mount", "I5", "lumen television wall mount"),
        ("tv stand", "I6", "oak television stand"),
    ] + [
        (f"{w} lamp", f"L{i}", f"{w} desk lamp")
        for i, w in enumerate(["red", "blue", "green", "black", "white"])
    ]
    df = pd.DataFrame(pairs, columns=["query", "item_id", "item_title"]).assign(label=1)
    df = pd.concat([df, df.assign(label=0, item_id="X", item_title="unrelated kettle")], ignore_index=True)
    mined = mine_synonyms(df, min_support=2)
    assert "sofa" in mined["couch"] and "couch" in mined["sofa"]  # two items share the swap
    assert "television" in mined["tv"]  # tv is missing from 3 titles that all say television
    assert "55" not in mined.get("65", ()) and all(not w.isdigit() for w in mined)
    assert "长裙" in mined["连衣裙"]  # jieba words: 红色|连衣裙 vs 红色|长裙 on two items


def test_back_translation_hook_adds_one_copy_per_row_and_checks_its_output():
    source = rows([("grey sofa", "acme grey corner sofa"), ("red boots", "vela red leather boots")])
    calls: list[list[str]] = []

    def fake_round_trip(texts: list[str]) -> list[str]:
        calls.append(texts)
        return [t.upper() for t in texts]

    out = augment_rows(source, copies=1, back_translate=fake_round_trip, seed=0)
    bt = out[out["aug_op"] == augment.BACK_TRANSLATION]
    assert len(bt) == 2 and (bt["query"] == ["GREY SOFA", "RED BOOTS"]).all()
    assert calls[0] == ["grey sofa", "red boots"]
    with pytest.raises(ValueError, match="back_translate hook returned list of length 1 for 2"):
        augment_rows(source, back_translate=lambda texts: texts[:1])


def test_rebalance_augments_tail_query_positives_by_default():
    from tests.unit.test_balance import make_frame

    frame = make_frame(n=1500)
    out, report = balance.rebalance(frame, balance.BalanceConfig.from_spec("augment", aug_copies=2, seed=1))
    augmented = out[out["augmented"]]
    assert report["augmented_rows"] == len(augmented) > 0
    query_bucket, _ = balance._popularity_bucket(frame["query"])
    sources = frame.set_index("row_id").loc[augmented["source_row_id"]]
    assert (sources["label"] == 1).all()
    assert (query_bucket[augmented["source_row_id"].to_numpy()] == 2).all()
    assert report["after"]["query_buckets"]["tail"]["rows"] == report["before"]["query_buckets"]["tail"][
        "rows"
    ] + len(augmented)
    assert len(out) == len(frame) + len(augmented)


def test_unknown_operation_is_named():
    with pytest.raises(ValueError, match="unknown operation"):
        augment_rows(rows([("a b", "c d")]), operations=("shuffle",))
