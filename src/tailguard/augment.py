"""Offline text augmentation of (query, title) rows: EDA operations, mined synonyms, back-translation hook."""

from __future__ import annotations

import itertools
import logging
import random
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

# Wei & Zou 2019 (EDA): synonym replacement, random insertion, random swap, random deletion.
OPERATIONS = ("synonym", "insert", "swap", "delete")
BACK_TRANSLATION = "back_translation"

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_ASCII_WORD = re.compile(r"^[0-9A-Za-z]")
# Terms worth mining: letters only (digits make sizes and models, "55"~"65" are not synonyms), or CJK.
_MINABLE = re.compile(r"^(?:[^\W\d_]{2,}|[\u3400-\u4dbf\u4e00-\u9fff]+)$")

# Small curated fallback; the batch itself is the better source for product vocabulary.
CURATED_SYNONYMS: dict[str, tuple[str, ...]] = {
    "couch": ("sofa",),
    "sofa": ("couch",),
    "tv": ("television",),
    "television": ("tv",),
    "fridge": ("refrigerator",),
    "refrigerator": ("fridge",),
    "laptop": ("notebook",),
    "notebook": ("laptop",),
    "phone": ("smartphone", "mobile"),
    "smartphone": ("phone",),
    "sneakers": ("trainers",),
    "trainers": ("sneakers",),
    "faucet": ("tap",),
    "tap": ("faucet",),
    "rug": ("carpet",),
    "carpet": ("rug",),
    "bulb": ("lamp",),
    "grey": ("gray",),
    "gray": ("grey",),
    "手机": ("电话",),
    "电话": ("手机",),
    "电脑": ("计算机",),
    "计算机": ("电脑",),
    "衣服": ("服装",),
    "服装": ("衣服",),
    "鞋": ("鞋子",),
    "鞋子": ("鞋",),
}


def is_cjk(text: str) -> bool:
    """Whether the text holds Chinese characters (then it is segmented with jieba)."""
    return bool(_CJK.search(text))


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


@lru_cache(maxsize=262_144)
def tokenize(text: str) -> tuple[str, ...]:
    """Words of a text: jieba segmentation for Chinese, whitespace-separated words otherwise."""
    if is_cjk(text):
        return tuple(t for t in _jieba().lcut(text) if t.strip())
    return tuple(text.split())


def join_tokens(tokens: Sequence[str], cjk: bool) -> str:
    """Inverse of tokenize: Chinese joins without spaces (a space only between two latin words)."""
    if not cjk:
        return " ".join(tokens)
    out: list[str] = []
    for tok in tokens:
        if out and _ASCII_WORD.match(tok) and _ASCII_WORD.match(out[-1][-1:]):
            out.append(" ")
        out.append(tok)
    return "".join(out)


def merge_synonyms(*maps: Mapping[str, Sequence[str]], max_per_term: int = 5) -> dict[str, tuple[str, ...]]:
    """Union of synonym maps (earlier first), keys lower-cased, no self-synonyms, at most max_per_term."""
    merged: dict[str, list[str]] = {}
    for mapping in maps:
        for term, syns in mapping.items():
            key = term.lower()
            bucket = merged.setdefault(key, [])
            for syn in syns:
                s = syn.lower()
                if s != key and s not in bucket and len(bucket) < max_per_term:
                    bucket.append(s)
    return {k: tuple(v) for k, v in merged.items() if v}


def _query_pair_synonyms(pairs: pd.DataFrame, min_support: int) -> pd.DataFrame:
    """Terms that swap between two queries leading to the same item ("grey couch" / "grey sofa")."""
    sigs: list[str] = []
    toks: list[str] = []
    items: list[str] = []
    for query, item in zip(pairs["query"].to_numpy(), pairs["item_id"].to_numpy(), strict=True):
        words = [w.lower() for w in tokenize(str(query))]
        if not 1 <= len(words) <= 8:
            continue
        for i, w in enumerate(words):
            if _MINABLE.match(w):
                sigs.append(f"{item}\x1f{i}\x1f" + " ".join(words[:i] + ["\x00"] + words[i + 1 :]))
                toks.append(w)
                items.append(str(item))
    if not sigs:
        return pd.DataFrame(columns=["a", "b", "support"])
    rec = pd.DataFrame({"sig": sigs, "tok": toks, "item": items}).drop_duplicates(["sig", "tok"])
    size = rec.groupby("sig")["tok"].transform("size")
    # A slot with many fillers is an enumeration (colours, brands), not a synonym set.
    rec = rec[(size >= 2) & (size <= 6)]
    joined = rec.merge(rec, on=["sig", "item"], suffixes=("_a", "_b"))
    joined = joined[joined["tok_a"] != joined["tok_b"]]
    support = joined.groupby(["tok_a", "tok_b"])["item"].nunique().reset_index(name="support")
    support = support.rename(columns={"tok_a": "a", "tok_b": "b"})
    return support[support["support"] >= min_support]


def _title_cooccurrence_synonyms(
    pairs: pd.DataFrame, min_support: int, min_confidence: float, min_lift: float
) -> pd.DataFrame:
    """Query terms missing from a positive's title, paired with the title terms that stand in for them.

    Counts are distinct items, not rows: on the demo batch, row counts let one item's brand and colour
    ("orbit", "pink") pass as synonyms of the query term that led to it.
    """
    vocab: dict[str, int] = {}
    item_codes = pd.factorize(pairs["item_id"])[0]
    a_codes: list[int] = []
    b_codes: list[int] = []
    pair_items: list[int] = []
    u_codes: list[int] = []
    u_items: list[int] = []
    title_codes: list[int] = []
    title_items: list[int] = []
    rows = zip(pairs["query"].to_numpy(), pairs["item_title"].to_numpy(), item_codes, strict=True)
    for query, title, item in rows:
        q = {w.lower() for w in tokenize(str(query)) if _MINABLE.match(w.lower())}
        t = {w.lower() for w in tokenize(str(title)) if _MINABLE.match(w.lower())}
        for w in t:
            title_codes.append(vocab.setdefault(w, len(vocab)))
            title_items.append(item)
        missing = q - t
        for u in missing:
            u_codes.append(vocab.setdefault(u, len(vocab)))
            u_items.append(item)
        for u, v in itertools.product(missing, t - q):
            a_codes.append(vocab[u])
            b_codes.append(vocab[v])
            pair_items.append(item)
    if not a_codes:
        return pd.DataFrame(columns=["a", "b", "support"])
    n_vocab, n_items = len(vocab), int(item_codes.max()) + 1

    def distinct_items(codes: list[int], items: list[int]) -> np.ndarray:
        """Per code: number of distinct items it occurs with."""
        keys = np.unique(np.asarray(codes, np.int64) * n_items + np.asarray(items, np.int64))
        return keys // n_items

    pair_codes, support = np.unique(
        distinct_items([a * n_vocab + b for a, b in zip(a_codes, b_codes, strict=True)], pair_items),
        return_counts=True,
    )
    a, b = pair_codes // n_vocab, pair_codes % n_vocab
    u_count = np.bincount(distinct_items(u_codes, u_items), minlength=n_vocab)
    title_share = np.bincount(distinct_items(title_codes, title_items), minlength=n_vocab) / n_items
    confidence = support / u_count[a]
    lift = confidence / np.maximum(title_share[b], 1e-12)
    keep = (support >= min_support) & (confidence >= min_confidence) & (lift >= min_lift)
    words = np.array(list(vocab), dtype=object)
    return pd.DataFrame({"a": words[a[keep]], "b": words[b[keep]], "support": support[keep]})


def mine_synonyms(
    df: pd.DataFrame,
    *,
    min_support: int = 2,
    title_min_confidence: float = 0.5,
    title_min_lift: float = 3.0,
    max_pairs: int = 50_000,
    max_per_term: int = 5,
    seed: int = 0,
) -> dict[str, tuple[str, ...]]:
    """Synonyms mined from a batch's positives: queries leading to one item, title terms that stand in."""
    positives = df.loc[df["label"].to_numpy() == 1, ["query", "item_id", "item_title"]]
    positives = positives.drop_duplicates(["query", "item_id"])
    # Mining is quadratic-ish in tokens; a 50k-pair sample keeps it to about a second on one core.
    if len(positives) > max_pairs:
        positives = positives.sample(max_pairs, random_state=seed)
    found = pd.concat(
        [
            _query_pair_synonyms(positives, min_support),
            _title_cooccurrence_synonyms(positives, min_support, title_min_confidence, title_min_lift),
        ],
        ignore_index=True,
    )
    if found.empty:
        return {}
    found = found.sort_values(["a", "support", "b"], ascending=[True, False, True])
    mined: dict[str, list[str]] = {}
    for a, b in zip(found["a"], found["b"], strict=True):
        mined.setdefault(a, []).append(b)
        mined.setdefault(b, [])
        if a not in mined[b]:
            mined[b].append(a)  # symmetric: a title term can be replaced by the query term too
    return merge_synonyms(mined, max_per_term=max_per_term)


def _n_changes(alpha: float, n_words: int) -> int:
    return max(1, int(alpha * n_words))


def eda_operation(
    op: str, words: list[str], alpha: float, synonyms: Mapping[str, Sequence[str]], rng: random.Random
) -> list[str]:
    """Apply one EDA operation to a word list (Wei & Zou 2019); returns a new list."""
    words = list(words)
    n = _n_changes(alpha, len(words))
    if op == "synonym":
        candidates = sorted({w.lower() for w in words if w.lower() in synonyms})
        rng.shuffle(candidates)
        for term in candidates[:n]:
            replacement = rng.choice(list(synonyms[term]))
            words = [replacement if w.lower() == term else w for w in words]
    elif op == "insert":
        for _ in range(n):
            candidates = [w for w in words if w.lower() in synonyms]
            if not candidates:
                break
            words.insert(
                rng.randrange(len(words) + 1), rng.choice(list(synonyms[rng.choice(candidates).lower()]))
            )
    elif op == "swap":
        for _ in range(n):
            if len(words) < 2:
                break
            i, j = rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
    elif op == "delete":
        if len(words) > 1:
            kept = [w for w in words if rng.random() > alpha]
            words = kept or [rng.choice(words)]
    else:
        raise ValueError(f"unknown EDA operation {op!r}; known: {', '.join(OPERATIONS)}")
    return words


def eda(
    text: str,
    *,
    alpha: float,
    n: int,
    synonyms: Mapping[str, Sequence[str]],
    rng: random.Random,
    operations: Sequence[str] = OPERATIONS,
) -> list[tuple[str, str]]:
    """Up to n distinct variants as (operation, text); a no-op operation yields to the next."""
    words = list(tokenize(text))
    cjk = is_cjk(text)
    ops = list(operations)
    start = rng.randrange(len(ops))
    seen = {text}
    out: list[tuple[str, str]] = []
    for copy in range(n):
        for attempt in range(len(ops)):
            op = ops[(start + copy + attempt) % len(ops)]
            variant = join_tokens(eda_operation(op, words, alpha, synonyms, rng), cjk)
            if variant not in seen:
                seen.add(variant)
                out.append((op, variant))
                break
    return out


def augment_rows(
    rows: pd.DataFrame,
    *,
    alpha: float = 0.1,
    copies: int = 2,
    fields: Sequence[str] = ("query", "item_title"),
    operations: Sequence[str] = OPERATIONS,
    synonyms: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    back_translate: Callable[[list[str]], list[str]] | None = None,
    return_positions: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, np.ndarray]:
    """Augmented copies of rows: marker `augmented=True`, `source_row_id`, `aug_op`, negative `row_id`.

    Each copy applies one EDA operation to every field in `fields`; copies identical to their source or to
    an earlier copy are dropped. `back_translate(texts) -> texts` (any callable, e.g. a translation model
    round trip; none is shipped) adds one more copy per row. `return_positions` also returns each copy's
    source position in `rows`. Randomness is seeded per (seed, row_id), so a
    row's copies do not depend on which other rows are augmented.
    """
    synonyms = CURATED_SYNONYMS if synonyms is None else synonyms
    unknown = [op for op in operations if op not in OPERATIONS]
    if unknown:
        raise ValueError(f"aug_ops: unknown operation(s) {unknown}; known: {', '.join(OPERATIONS)}")
    if rows.empty:
        empty = _empty_augmented(rows)
        return (empty, np.empty(0, np.int64)) if return_positions else empty
    row_ids = rows["row_id"].to_numpy()
    texts = {f: rows[f].astype(str).to_numpy() for f in fields}
    src_pos: list[int] = []
    new_values: dict[str, list[str]] = {f: [] for f in fields}
    ops_used: list[str] = []
    for pos, row_id in enumerate(row_ids):
        rng = random.Random(int(seed) * 1_000_003 + int(row_id))
        per_field = {
            f: eda(texts[f][pos], alpha=alpha, n=copies, synonyms=synonyms, rng=rng, operations=operations)
            for f in fields
        }
        originals = tuple(texts[f][pos] for f in fields)
        seen = {originals}
        for copy in range(copies):
            variant = tuple(
                per_field[f][copy][1] if copy < len(per_field[f]) else texts[f][pos] for f in fields
            )
            if variant in seen:
                continue
            seen.add(variant)
            src_pos.append(pos)
            for f, value in zip(fields, variant, strict=True):
                new_values[f].append(value)
            ops_used.append(
                "+".join(sorted({per_field[f][copy][0] for f in fields if copy < len(per_field[f])}))
            )
    if back_translate is not None:
        translated = {}
        for f in fields:
            result = back_translate([str(t) for t in texts[f]])
            if not isinstance(result, list | tuple) or len(result) != len(rows):
                raise ValueError(
                    f"back_translate hook returned {type(result).__name__} of length "
                    f"{len(result) if hasattr(result, '__len__') else '?'} for {len(rows)} {f!r} texts; "
                    "it must return one string per input"
                )
            translated[f] = [str(t) for t in result]
        for pos in range(len(rows)):
            variant = tuple(translated[f][pos] for f in fields)
            if variant != tuple(texts[f][pos] for f in fields):
                src_pos.append(pos)
                for f, value in zip(fields, variant, strict=True):
                    new_values[f].append(value)
                ops_used.append(BACK_TRANSLATION)
    out = rows.iloc[np.asarray(src_pos, dtype=np.int64)].reset_index(drop=True)
    for f in fields:
        out[f] = pd.Series(new_values[f], dtype=rows[f].dtype)
    out["source_row_id"] = row_ids[np.asarray(src_pos, dtype=np.int64)].astype(np.int64)
    # Negative ids can never collide with a batch's row ids (0..n-1), evaluation rows included.
    out["row_id"] = -np.arange(1, len(out) + 1, dtype=np.int64)
    out["augmented"] = True
    out["aug_op"] = pd.Series(ops_used, dtype=object)
    return (out, np.asarray(src_pos, dtype=np.int64)) if return_positions else out


def _empty_augmented(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.iloc[:0].copy()
    out["source_row_id"] = pd.Series(dtype=np.int64)
    out["augmented"] = pd.Series(dtype=bool)
    out["aug_op"] = pd.Series(dtype=object)
    return out
