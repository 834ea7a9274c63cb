"""Per-query and pooled metric kernels (numpy, and numba where a loop cannot vectorise).

Tie-aware rank metrics follow McSherry & Najork, "Computing information retrieval performance measures
efficiently in the presence of tied scores" (ECIR 2008): every metric is its expected value over the orders
of each tie run. ROC AUC is the Mann-Whitney U statistic with ties counted half; average precision is
scikit-learn's step-wise definition (tied scores form one threshold).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from tailguard.metrics.definitions import (
    POPULARITY_BUCKETS,
    PROBABILITY_METRICS,
    EvalConfig,
    _undefined,
    _val,
)


def _sorted_midranks(group: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Ascending mid-ranks (ties averaged) within each group, for rows already sorted by (group, score)."""
    n = len(s)
    if n == 0:
        return np.zeros(0)
    start_of_group = np.r_[True, group[1:] != group[:-1]]
    new_run = start_of_group | np.r_[True, s[1:] != s[:-1]]
    group_start = np.maximum.accumulate(np.where(start_of_group, np.arange(n), 0))
    pos_in_group = np.arange(n) - group_start + 1
    run_id = np.cumsum(new_run) - 1
    run_len = np.bincount(run_id)
    return (pos_in_group[new_run] + (run_len - 1) / 2.0)[run_id]


def grouped_auc(group: np.ndarray, s: np.ndarray, y: np.ndarray, n_groups: int) -> np.ndarray:
    """ROC AUC per group (Mann-Whitney with tied scores counted half); NaN where a group lacks a class."""
    order = np.lexsort((s, group))
    return _auc_from_sorted(group[order], s[order], y[order], n_groups)


def _auc_from_sorted(g: np.ndarray, s: np.ndarray, y: np.ndarray, n_groups: int) -> np.ndarray:
    pos = np.bincount(g, weights=y, minlength=n_groups)
    neg = np.bincount(g, weights=1 - y, minlength=n_groups)
    r = np.bincount(g, weights=_sorted_midranks(g, s) * y, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (r - pos * (pos + 1) / 2.0) / (pos * neg)


def _pair_counts_py(g, s, level, n_levels, right, pairs) -> None:  # pragma: no cover - numba compiles it
    """Per group: pairs with different gain `level`, and those the score orders right (score ties half).

    Rows sorted by (group, ascending score). A Fenwick tree over the gain levels of the group's rows with a
    LOWER score answers "how many of them have a lower gain" in O(log L); rows of equal score are counted
    among themselves at half weight. O(n log n) in all, where all pairs would be O(sum of query sizes^2).
    """
    tree = np.zeros(n_levels + 1, np.int64)
    n = len(g)
    a = 0
    while a < n:
        b = a
        while b < n and g[b] == g[a]:
            b += 1
        grp = g[a]
        i = a
        while i < b:
            j = i
            while j < b and s[j] == s[i]:
                j += 1
            block = np.sort(level[i:j])
            for k in range(i, j):
                below, x = 0, level[k]  # rows of lower score and lower level: Fenwick prefix sum over x - 1
                while x > 0:
                    below += tree[x]
                    x -= x & -x
                ties_below = np.searchsorted(block, level[k])  # equal score, lower level: half each
                right[grp] += below + 0.5 * ties_below
            for k in range(i, j):
                x = level[k] + 1
                while x <= n_levels:
                    tree[x] += 1
                    x += x & -x
            i = j
        levels = np.sort(level[a:b])
        same, run = 0, 1
        for k in range(1, b - a + 1):
            if k < b - a and levels[k] == levels[k - 1]:
                run += 1
            else:
                same += run * (run - 1) // 2
                run = 1
        pairs[grp] = (b - a) * (b - a - 1) // 2 - same
        for k in range(a, b):  # empty the tree for the next group: only the touched entries
            x = level[k] + 1
            while x <= n_levels:
                tree[x] = 0
                x += x & -x
        a = b


_PAIR_KERNEL: list = []


def graded_pair_accuracy(group: np.ndarray, s: np.ndarray, gain: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group: the share of its item pairs with different graded relevance that the score orders
    correctly (higher relevance scored higher; equal scores count half). NaN where a group has no such pair.

    group: (n,) int codes < n_groups; s: (n,) scores; gain: (n,) graded relevance (the label without one,
    when the value equals per-query ROC AUC). Returns (n_groups,) float64. The issue's graded metric (#18):
    62% of Home Depot tail queries have two or more relevance grades, only 33% both binary classes.
    """
    group = np.asarray(group, dtype=np.int64)
    order = np.lexsort((np.asarray(s, dtype=np.float64), group))
    _, level = np.unique(np.asarray(gain, dtype=np.float64), return_inverse=True)
    right, pairs = np.zeros(n_groups), np.zeros(n_groups)
    if not _PAIR_KERNEL:
        try:
            import numba

            try:
                _PAIR_KERNEL.append(numba.njit(cache=True, nogil=True)(_pair_counts_py))
            except RuntimeError:  # no writable cache location: compile per process
                _PAIR_KERNEL.append(numba.njit(nogil=True)(_pair_counts_py))
        except ImportError:  # pragma: no cover - numba is a dependency
            _PAIR_KERNEL.append(_pair_counts_py)
    if len(order):
        g_sorted, s_sorted = group[order], np.asarray(s, dtype=np.float64)[order]
        lv = level.reshape(-1)[order].astype(np.int64)
        _PAIR_KERNEL[0](g_sorted, s_sorted, lv, int(lv.max()) + 1, right, pairs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, right / np.where(pairs > 0, pairs, 1.0), np.nan)


class _Ranked:
    """One model's scores ranked within each query (descending), as tie runs, plus sort orders that slices
    filter in O(n) instead of sorting again.

    Tied rows have no order of their own: every rank-based metric is the expected value over the orders of
    each tie run, all equally likely (McSherry & Najork, ECIR 2008). A row of a run of `ties` rows with
    `above` rows of its query scored higher sits at each rank above+1 .. above+ties with probability 1/ties.
    """

    def __init__(self, q: np.ndarray, n_queries: int, s: np.ndarray):
        # One int64 key (query, position in a stable score sort) instead of lexsort: 1M rows 1.4 s -> ~0.4 s.
        n = len(q)
        self.by_score = np.argsort(s, kind="stable")
        self.by_query_score = self._by_query(q, self.by_score, n)
        # Tie runs from the ascending (query, score, row) order instead of a second pair of sorts
        # (-0.25 s per model at 1M rows): above = rows of the query after the run's last row.
        o = self.by_query_score
        qs, ss = q[o], s[o]
        new_run = np.r_[True, (qs[1:] != qs[:-1]) | (ss[1:] != ss[:-1])] if n else np.zeros(0, dtype=bool)
        run_id = np.cumsum(new_run) - 1
        run_first = np.flatnonzero(new_run)
        run_last = np.r_[run_first[1:] - 1, n - 1]
        counts = np.bincount(q, minlength=n_queries)
        end_of_query = np.cumsum(counts)[qs] - 1
        self.above = np.empty(n, dtype=np.int64)
        self.above[o] = end_of_query - run_last[run_id]
        self.ties = np.empty(n, dtype=np.int64)
        self.ties[o] = (run_last - run_first + 1)[run_id]
        self.s = s

    def p_top(self, k: int) -> np.ndarray:
        """Per row, P(rank <= k): the share of its tie run's ranks that are <= k."""
        return np.clip(k - self.above, 0, self.ties) / self.ties

    def discount(self, k: int) -> np.ndarray:
        """Per row, E[1/log2(1 + rank) if rank <= k else 0]: the mean discount over its run's ranks."""
        cum = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64)))]
        hi = np.minimum(self.above + self.ties, k)
        lo = np.minimum(self.above, k)
        out = (cum[hi] - cum[lo]) / self.ties
        # Untied rows (almost all): the exact 1/log2(rank + 1), not a difference of two running sums.
        single = (self.ties == 1) & (self.above < k)
        out[single] = 1.0 / np.log2(self.above[single] + 2.0)
        return out

    def first_reciprocal_rank(self, g: np.ndarray, n_groups: int, y: np.ndarray) -> np.ndarray:
        """Per group, E[1 / rank of its first positive] over tie orders; NaN where the group has no positive.

        The first positive lies in the best-scored run holding one of the group's positives: `a` rows above
        it, `t` tied rows of which `m` are the group's positives. Its position X in the run is the smallest
        of m positions drawn without replacement from 1..t: P(X = j) = C(t - j, m - 1) / C(t, m), so
        E = sum_{j=1}^{t-m+1} P(X = j) / (a + j) (the expected reciprocal rank of McSherry & Najork).
        """
        pos = y > 0
        first = np.full(n_groups, np.iinfo(np.int64).max)
        np.minimum.at(first, g[pos], self.above[pos])
        in_first = pos & (self.above == first[g])
        m = np.bincount(g[in_first], minlength=n_groups)
        t = np.zeros(n_groups, dtype=np.int64)
        t[g[in_first]] = self.ties[in_first]
        out = np.full(n_groups, np.nan)
        has = m > 0
        out[has & (t == 1)] = 1.0 / (first[has & (t == 1)] + 1.0)
        tied = np.flatnonzero(has & (t > 1))
        if tied.size:
            from scipy.special import gammaln

            a, tt, mm = first[tied], t[tied], m[tied]
            terms = tt - mm + 1  # j = 1 .. t - m + 1; sum(terms) <= rows, so this stays O(rows)
            owner = np.repeat(np.arange(tied.size), terms)
            j = np.arange(owner.size) - np.repeat(np.cumsum(terms) - terms, terms) + 1
            tj, mj = tt[owner], mm[owner]
            log_p = (
                gammaln(tj - j + 1)
                - gammaln(mj)
                - gammaln(tj - j - mj + 2)
                - (gammaln(tj + 1) - gammaln(mj + 1) - gammaln(tj - mj + 1))
            )
            out[tied] = np.bincount(owner, weights=np.exp(log_p) / (a[owner] + j), minlength=tied.size)
        return out

    @staticmethod
    def _by_query(q: np.ndarray, score_order: np.ndarray, n: int) -> np.ndarray:
        position = np.empty(n, dtype=np.int64)
        position[score_order] = np.arange(n)
        return np.argsort(q.astype(np.int64) * n + position)


def _ideal_dcg(q: np.ndarray, gain: np.ndarray, n_queries: int, k: int, order: np.ndarray) -> np.ndarray:
    """Per query, DCG@k of the best possible list; order sorts the slice's rows by (q, -gain)."""
    if len(order) == 0:
        return np.zeros(n_queries)
    qs = q[order]
    start = np.r_[True, qs[1:] != qs[:-1]]
    group_start = np.maximum.accumulate(np.where(start, np.arange(len(qs)), 0))
    irank = np.arange(len(qs)) - group_start + 1
    w = np.where(irank <= k, 1.0 / np.log2(irank + 1.0), 0.0)
    return np.bincount(qs, weights=gain[order] * w, minlength=n_queries)


def per_query_values(
    q: np.ndarray,
    n_queries: int,
    y: np.ndarray,
    gain: np.ndarray,
    ranked: _Ranked,
    mask: np.ndarray,
    k: int,
    ideal_order: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-query ROC AUC, nDCG@k, MRR and recall@k counting only the masked rows as this slice's.

    Ranks come from the query's full list (what a user sees); AUC compares the slice's rows only. Rank-based
    values are expected values over the orders of tied scores (see _Ranked).
    NaN marks a query where the metric is undefined (no positive, one class, zero ideal gain).
    """
    qm, ym, gm = q[mask], y[mask], gain[mask]
    o = ranked.by_query_score[mask[ranked.by_query_score]]
    auc = _auc_from_sorted(q[o], ranked.s[o], y[o], n_queries)
    ideal_order = np.lexsort((-gain, q)) if ideal_order is None else ideal_order
    pos_q = np.bincount(qm, weights=ym, minlength=n_queries)
    dcg = np.bincount(qm, weights=gm * ranked.discount(k)[mask], minlength=n_queries)
    idcg = _ideal_dcg(q, gain, n_queries, k, ideal_order[mask[ideal_order]])
    hits = np.bincount(qm, weights=ym * ranked.p_top(k)[mask], minlength=n_queries)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "roc_auc_per_query": auc,
            "ndcg_at_k": np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), np.nan),
            "mrr": ranked.first_reciprocal_rank(q, n_queries, np.where(mask, y, 0.0)),
            "recall_at_k": np.where(pos_q > 0, hits / np.where(pos_q > 0, pos_q, 1.0), np.nan),
            "graded_pair_accuracy": graded_pair_accuracy(qm, ranked.s[mask], gm, n_queries),
        }


def _mean_of(values: np.ndarray, reason: str) -> dict:
    """Mean over the defined (finite) per-query values, with how many there were."""
    v = values[np.isfinite(values)]
    return {"value": float(v.mean()), "queries": int(v.size)} if v.size else _undefined(reason)


def _pooled_entry(
    rows: int, p: float, auc: float, ap: float, sums: dict[str, float] | None, config: EvalConfig
) -> dict:
    """One slice's pooled metrics from its ROC/PR values and row statistic sums (None: not probabilities)."""
    out: dict[str, dict] = {}
    if rows == 0:
        return {m: _undefined("empty slice") for m in ("roc_auc", "pr_auc", *PROBABILITY_METRICS)}
    one_class = "one class in slice" if p in (0, rows) else None
    out["roc_auc"] = _val(None if one_class else auc, one_class or "undefined")
    out["pr_auc"] = _val(ap if p > 0 else None, "no positives in slice")
    if sums is None:
        for m in PROBABILITY_METRICS:
            out[m] = _undefined("scores are not probabilities in [0, 1]")
        return out
    out["log_loss"] = {"value": float(sums["ll"] / rows)}
    out["ece"] = {"value": float(sums["ece"] / rows)}
    tp, fp = sums["tp"], sums["fp"]
    fn = p - tp
    out["f1"] = _val(
        2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None, "no positives and none predicted"
    )
    out["recall"] = _val(tp / p if p else None, "no positives in slice")
    out["precision"] = _val(tp / (tp + fp) if (tp + fp) else None, "no row scored above the threshold")
    return out


class _Groups:
    """A dimension's rows grouped by (query, slice): one group per query and slice it has rows in.

    Per-query metrics of a slice are per-group metrics, so a whole dimension is one grouped pass. For the
    overall slice and query-level dimensions (a query's rows share one slice) the groups are the queries.
    """

    def __init__(
        self,
        gid: np.ndarray,
        n: int,
        query: np.ndarray,
        code: np.ndarray,
        ideal_order: np.ndarray,
        is_query: bool,
    ):
        self.is_query = is_query  # the groups are the queries (gid is the query code)
        self.gid = gid  # per row, its group
        self.n = n
        self.query = query  # per group, its query
        self.code = code  # per group, its slice code
        self.ideal_order = ideal_order  # rows by (group, -gain, row)
        self.rows = np.bincount(gid, minlength=n).astype(np.float64)
        self.cache: dict[str, Any] = {}

    @classmethod
    def of_rows(cls, q: np.ndarray, code: np.ndarray, n_codes: int, n_queries: int, ideal_order: np.ndarray):
        """Groups of a row-level dimension (a query's rows spread over slices)."""
        key = q.astype(np.int64) * n_codes + code
        present = np.zeros(n_queries * n_codes, dtype=bool)
        present[key] = True
        gid = (np.cumsum(present) - 1)[key]
        flat = np.flatnonzero(present)
        order = ideal_order[np.argsort(gid[ideal_order], kind="stable")]
        return cls(gid, len(flat), flat // n_codes, (flat % n_codes).astype(np.int16), order, False)

    def order_by_score(self, ranked: _Ranked) -> np.ndarray:
        """Rows by (group, ascending score, row)."""
        o = ranked.by_query_score
        return o if self.is_query else o[np.argsort(self.gid[o], kind="stable")]


def _group_ranking(
    groups: _Groups,
    y: np.ndarray,
    gain: np.ndarray,
    ranked: _Ranked,
    top_gain: np.ndarray,
    hit: np.ndarray,
    k: int,
) -> dict[str, np.ndarray]:
    """Per group ROC AUC, nDCG@k, MRR and recall@k (NaN where undefined), as per_query_values defines them."""
    g, n = groups.gid, groups.n
    o = groups.order_by_score(ranked)
    auc = _auc_from_sorted(g[o], ranked.s[o], y[o], n)
    if "idcg" not in groups.cache:
        groups.cache["idcg"] = _ideal_dcg(g, gain, n, k, groups.ideal_order)
    idcg = groups.cache["idcg"]
    pos = np.bincount(g, weights=y, minlength=n)
    dcg = np.bincount(g, weights=top_gain, minlength=n)
    hits = np.bincount(g, weights=hit, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "roc_auc_per_query": auc,
            "ndcg_at_k": np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), np.nan),
            "mrr": ranked.first_reciprocal_rank(g, n, y),
            "recall_at_k": np.where(pos > 0, hits / np.where(pos > 0, pos, 1.0), np.nan),
            "graded_pair_accuracy": graded_pair_accuracy(g, ranked.s, gain, n),
        }


# ----------------------------------------------------------------------------------------------
# popularity bias of top-k lists (RecBole definitions) and exposure


def popularity_bias(
    q: np.ndarray,
    n_queries: int,
    item_codes: np.ndarray,
    n_items: int,
    item_train_count: np.ndarray,
    long_tail: np.ndarray,
    ranked: _Ranked,
    k: int,
) -> dict[str, dict]:
    """ARP, APLT, Gini index and item coverage of the top-k lists, as RecBole defines them.

    ARP: mean over queries of the mean training count of the listed items. APLT: mean over queries
    of the share of listed items in the long tail (here: tail + cold buckets). Gini: over every item
    in the eval candidate pool, of how often it is listed. Coverage: listed items / pool items.
    With tied scores a row is listed with probability p = ranked.p_top(k): ARP, APLT and coverage are
    their expected values over tie orders (a list always holds min(k, rows) items); the Gini index is
    that of the expected listing counts, a lower bound of its expected value (Gini is convex in the
    counts; Jensen) and equal to it without ties at the cut-off.
    """
    p = ranked.p_top(k)
    if not (p > 0).any():
        return {m: _undefined("no lists") for m in ("arp", "aplt", "gini", "item_coverage")}
    listed = np.minimum(np.bincount(q, minlength=n_queries), k).astype(np.float64)
    has = listed > 0
    arp = np.bincount(q, weights=p * item_train_count, minlength=n_queries)[has] / listed[has]
    aplt = np.bincount(q, weights=p * long_tail, minlength=n_queries)[has] / listed[has]
    cnt = np.sort(np.bincount(item_codes, weights=p, minlength=n_items))
    idx = np.arange(1, n_items + 1)
    gini = float(np.sum((2 * idx - n_items - 1) * cnt) / (n_items * cnt.sum()))
    return {
        "arp": {"value": float(arp.mean())},
        "aplt": {"value": float(aplt.mean())},
        "gini": {"value": gini},
        "item_coverage": {"value": _expected_listed_items(q, item_codes, n_items, ranked, k) / n_items},
    }


def _expected_listed_items(
    q: np.ndarray, item_codes: np.ndarray, n_items: int, ranked: _Ranked, k: int
) -> float:
    """E[number of items in at least one top-k list] over tie orders (independent across queries).

    Only a query's run straddling rank k is random: of its t rows, s = k - above are listed. An item with
    m rows in that run is left out with probability C(t - m, s) / C(t, s) (hypergeometric), so
    P(item listed somewhere) = 1 - prod over queries of those probabilities (1 where a row is surely listed).
    """
    from scipy.special import gammaln

    p = ranked.p_top(k)
    sure = np.zeros(n_items, dtype=bool)
    sure[item_codes[p >= 1]] = True
    frac = np.flatnonzero((p > 0) & (p < 1))
    log_out = np.zeros(n_items)
    if frac.size:
        key = q[frac].astype(np.int64) * n_items + item_codes[frac]
        pairs, first, m = np.unique(key, return_index=True, return_counts=True)
        t, slots = ranked.ties[frac][first], (k - ranked.above[frac])[first]
        item = pairs % n_items
        sure[item[t - m < slots]] = True
        ok = t - m >= slots

        def log_comb(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return gammaln(a + 1.0) - gammaln(b + 1.0) - gammaln(a - b + 1.0)

        log_none = log_comb(t[ok] - m[ok], slots[ok]) - log_comb(t[ok], slots[ok])
        log_out = np.bincount(item[ok], weights=log_none, minlength=n_items)
    return float(np.where(sure, 1.0, -np.expm1(log_out)).sum())


def exposure_by_bucket(bucket: np.ndarray, ranked: _Ranked, k: int) -> dict:
    """Share of position-weighted exposure (1/log2(1+rank), top-k) going to each popularity bucket.

    Each row's weight is its expected discount over tie orders (ranked.discount)."""
    w = ranked.discount(k)
    total = w.sum()
    shares = {b: float(w[bucket == b].sum() / total) if total else None for b in POPULARITY_BUCKETS}
    head, tail = shares["head"], shares["tail"]
    ratio = _val(tail / head if head else None, "no exposure to head items")
    return {"share": shares, "tail_head_ratio": ratio}


# ----------------------------------------------------------------------------------------------
# bootstrap: per-query sufficient statistics, resampled with one matrix product per chunk


class _Curve:
    """One model's rows by descending score: query codes, labels, tie-run markers, and per row the slot of its
    slice in each dimension (one column per dimension; without slots every row is in slot 0)."""

    def __init__(
        self,
        q_desc: np.ndarray,
        y_desc: np.ndarray,
        s_desc: np.ndarray,
        slots_desc: np.ndarray | None = None,
        n_slots: int = 1,
    ):
        n = len(s_desc)
        self.q = np.ascontiguousarray(q_desc, dtype=np.int32)
        self.y = np.ascontiguousarray(y_desc > 0, dtype=np.uint8)
        run_end = np.r_[s_desc[1:] != s_desc[:-1], True] if n else np.zeros(0, dtype=bool)
        run_start = np.r_[True, run_end[:-1]] if n else np.zeros(0, dtype=bool)
        self.run_end = run_end.astype(np.uint8)
        self.single = (run_start & run_end).astype(np.uint8)
        self.slots = (
            np.zeros((n, 1), dtype=np.int16)
            if slots_desc is None
            else np.ascontiguousarray(slots_desc.reshape(n, -1), dtype=np.int16)
        )
        self.n_slots = n_slots


# Resamples handled per pass over the rows: 16 uint8 multiplicities per query are 16 bytes, so the weights of
# 50k queries (800 kB) stay in L2 while rows visit queries in score order (random access); measured 0.59 ns
# per row, slice dimension and resample at 16 lanes (1M rows, 50k queries), 2.2 ns at 8, 0.77 at 24.
_LANES = 16


def _pooled_slot_sums_py(q, y, single, run_end, slots, n_slots, weights, out) -> None:  # pragma: no cover
    """Weighted pooled ROC/PR sums of every slice in one pass over the rows by descending score.

    A row belongs to one slice per dimension (slots[i, d]); each slice keeps its own accumulators, so one
    pass serves all dimensions and every row's weights are loaded once (1M rows, 5 dimensions, 1,000
    resamples: 3.2-3.5 CPU s per model, within noise of one pass per slice; the cost is the per-slice
    accumulator updates, ~0.65 ns per row, dimension and resample). weights is (blocks, queries,
    _LANES): one lane per resample. Per slice and resample: out[0] = U (weighted positive-above-negative
    pairs, ties half), out[1] = Σ over tie runs of the run's positive weight x precision at the run,
    out[2] = positive weight, out[3] = negative weight. ROC AUC = U / (W+ W-) and AP = out[1] / W+,
    exactly what the expanded rows give (scikit-learn's step-wise AP, ties one threshold). A tie run
    restricted to a slice is that slice's tie run, so per-slice sums equal a pass over its own rows.
    """
    n_dims = slots.shape[1]
    for blk in range(weights.shape[0]):
        acc = np.zeros((n_slots, 4, _LANES))  # positive weight, negative weight, U, AP sum
        run = np.zeros((n_slots, 2, _LANES))  # positive and negative weight of the open tie run
        touched = np.zeros(n_slots, dtype=np.bool_)
        open_slots = np.zeros(n_slots, dtype=np.int64)
        n_open = 0
        w = np.zeros(_LANES)
        for i in range(len(q)):
            qi = q[i]
            yf = float(y[i])
            for k in range(_LANES):
                w[k] = weights[blk, qi, k]
            if single[i]:
                # A row alone in its tie run (almost all rows): branch-free over the label, since a
                # mispredicted label branch cost more (4.8 vs 3.2 CPU s per model) than the idle division.
                for d in range(n_dims):
                    a = acc[slots[i, d]]
                    for k in range(_LANES):
                        wp = w[k] * yf
                        wn = w[k] - wp
                        a[2, k] += wn * a[0, k]
                        a[0, k] += wp
                        a[1, k] += wn
                        a[3, k] += wp * a[0, k] / max(a[0, k] + a[1, k], 1.0)
                continue
            for d in range(n_dims):
                c = slots[i, d]
                if not touched[c]:
                    touched[c] = True
                    open_slots[n_open] = c
                    n_open += 1
                r = run[c]
                for k in range(_LANES):
                    wp = w[k] * yf
                    r[0, k] += wp
                    r[1, k] += w[k] - wp
            if run_end[i]:
                for t in range(n_open):
                    c = open_slots[t]
                    touched[c] = False
                    a = acc[c]
                    r = run[c]
                    for k in range(_LANES):
                        a[2, k] += r[1, k] * (a[0, k] + 0.5 * r[0, k])
                        a[0, k] += r[0, k]
                        a[1, k] += r[1, k]
                        if r[0, k] > 0:
                            a[3, k] += r[0, k] * a[0, k] / max(a[0, k] + a[1, k], 1.0)
                        r[0, k] = 0.0
                        r[1, k] = 0.0
                n_open = 0
        for c in range(n_slots):
            for k in range(_LANES):
                at = blk * _LANES + k
                out[0, c, at] = acc[c, 2, k]
                out[1, c, at] = acc[c, 3, k]
                out[2, c, at] = acc[c, 0, k]
                out[3, c, at] = acc[c, 1, k]


def _lane_weights(mult: np.ndarray) -> np.ndarray:
    """Multiplicities (resamples x queries) as (blocks, queries, _LANES) small integers, zero-padded."""
    b, n_queries = mult.shape
    blocks = -(-b // _LANES)
    dtype = np.uint8 if mult.max(initial=0) <= 255 else np.uint16
    padded = np.zeros((blocks * _LANES, n_queries), dtype=dtype)
    padded[:b] = mult
    return np.ascontiguousarray(padded.reshape(blocks, _LANES, n_queries).transpose(0, 2, 1))


def _pooled_curve_sums_numpy(
    curve: _Curve, weights: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """The same sums as the compiled kernel with (rows x resamples) arrays, over all rows of the curve or
    the given subset (the fallback without numba)."""
    blocks, n_queries, lanes = weights.shape
    out = np.zeros((4, blocks * lanes))
    rows = np.arange(len(curve.q)) if rows is None else rows
    if len(rows) == 0:
        return out
    w = weights.transpose(1, 0, 2).reshape(n_queries, -1)[curve.q[rows]].astype(np.float64)
    pos = w * curve.y[rows, None]
    run_id = (np.cumsum(curve.run_end) - curve.run_end)[rows]
    starts = np.flatnonzero(np.r_[True, run_id[1:] != run_id[:-1]])
    p_run = np.add.reduceat(pos, starts, axis=0)
    n_run = np.add.reduceat(w - pos, starts, axis=0)
    cp, cn = np.cumsum(p_run, 0), np.cumsum(n_run, 0)
    out[0] = (n_run * (cp - 0.5 * p_run)).sum(0)
    out[1] = (p_run * cp / np.maximum(cp + cn, 1.0)).sum(0)
    out[2], out[3] = cp[-1], cn[-1]
    return out


_KERNEL: list = []


def _pooled_slot_sums(curve: _Curve, weights: np.ndarray) -> np.ndarray:
    """(4, slots, blocks x _LANES) weighted pooled ROC/PR sums of every slice (see _pooled_slot_sums_py)."""
    if not _KERNEL:
        try:
            import numba

            # error_model="numpy": no ZeroDivisionError checks in the lane loops, so they vectorise.
            # cache=True: compiled once per machine (1.8 CPU s), then loaded from __pycache__ (~0.5 s).
            try:
                kernel = numba.njit(cache=True, nogil=True, error_model="numpy")(_pooled_slot_sums_py)
            except RuntimeError:  # no writable cache location (read-only install): compile per process
                kernel = numba.njit(nogil=True, error_model="numpy")(_pooled_slot_sums_py)
            _KERNEL.append(kernel)
        except ImportError:  # pragma: no cover - numba is a dependency; this keeps minimal installs working
            _KERNEL.append(None)
    out = np.zeros((4, curve.n_slots, weights.shape[0] * weights.shape[2]))
    if len(curve.q) == 0:
        return out
    if _KERNEL[0] is None:
        for d in range(curve.slots.shape[1]):
            for c in np.unique(curve.slots[:, d]):
                out[:, c] = _pooled_curve_sums_numpy(curve, weights, np.flatnonzero(curve.slots[:, d] == c))
        return out
    _KERNEL[0](curve.q, curve.y, curve.single, curve.run_end, curve.slots, curve.n_slots, weights, out)
    return out


def _thread_count(config: EvalConfig) -> int:
    """Threads for the pooled ROC/PR pass: config.threads, or every core this process may run on."""
    if config.threads:
        return config.threads
    try:
        return max(len(os.sched_getaffinity(0)), 1)  # honours taskset / cpusets, unlike os.cpu_count()
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _submit_pooled_sums(
    pool: ThreadPoolExecutor | None, curves: dict[str, _Curve], weights: np.ndarray, threads: int
) -> Callable[[], dict[str, np.ndarray]]:
    """Start _pooled_slot_sums of every curve as (curve, block range) tasks; the returned call waits for them.

    Each task fills its own output from its own accumulators (blocks are independent resamples), so the
    result is bit-identical to one thread. The kernel releases the GIL (nogil) and idle threads sleep, so a
    core held by another process costs wall time only, not the spinning CPU time of OpenMP/BLAS pools.
    Without a pool the sums are computed here, before returning.
    """
    if pool is None:
        out = {m: _pooled_slot_sums(c, weights) for m, c in curves.items()}
        return lambda: out
    blocks = weights.shape[0]
    # Enough pieces per curve that every thread gets work (2 models on 2 cores: one whole curve each).
    pieces = min(blocks, -(-threads // len(curves)))
    bounds = np.linspace(0, blocks, pieces + 1).astype(int)
    tasks = [(m, int(b0), int(b1)) for m in curves for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True)]
    futures = [pool.submit(_pooled_slot_sums, curves[m], weights[b0:b1]) for m, b0, b1 in tasks]

    def collect() -> dict[str, np.ndarray]:
        out = {m: np.empty((4, c.n_slots, blocks * _LANES)) for m, c in curves.items()}
        for (m, b0, b1), future in zip(tasks, futures, strict=True):
            out[m][:, :, b0 * _LANES : b1 * _LANES] = future.result()
        return out

    return collect


def _pooled_sums_parallel(
    curves: dict[str, _Curve], weights: np.ndarray, threads: int
) -> dict[str, np.ndarray]:
    """_pooled_slot_sums of every curve on up to `threads` threads (see _submit_pooled_sums)."""
    if threads <= 1 or len(curves) * weights.shape[0] == 1:
        return _submit_pooled_sums(None, curves, weights, threads)()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return _submit_pooled_sums(pool, curves, weights, threads)()


def _gain(eval_df: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    """nDCG's gain per row: `relevance` when the frame has it (every row finite), else the label.

    Raises ValueError naming the rows when a relevance is missing or not finite: filling it with 0
    would call a row "not relevant" that the file never judged (the contract refuses such files).
    """
    if "relevance" not in eval_df.columns:
        return y
    from tailguard.contract import finite_column

    gain, bad = finite_column(eval_df, "relevance")
    if bad.size:
        raise ValueError(
            f"eval frame: column 'relevance' has {bad.size} missing or non-finite value(s), e.g. at rows "
            f"{bad[:5].tolist()}; give every row a gain or drop the column (the label is then the gain)"
        )
    return gain


def per_query_auc(frame: pd.DataFrame, scores: np.ndarray, mask: np.ndarray | None = None) -> pd.Series:
    """Per-query ROC AUC (Mann-Whitney U, tied scores half) on the rows in mask (all rows when None).

    frame: n rows with columns query and label (0/1); scores: (n,) floats; mask: (n,) bool. Returns a float
    Series indexed by query in order of first appearance, NaN where a query's masked rows lack a class.
    Raises ValueError when scores or mask do not have one entry per row, KeyError when a column is missing.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    keep = np.ones(len(frame), dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
    if len(s) != len(frame) or len(keep) != len(frame):
        raise ValueError(f"per_query_auc: {len(s)} scores and {len(keep)} mask entries for {len(frame)} rows")
    sub = frame[keep]
    q, names = pd.factorize(sub["query"])
    auc = grouped_auc(q, s[keep], sub["label"].to_numpy(dtype=float), len(names))
    return pd.Series(auc, index=names)
