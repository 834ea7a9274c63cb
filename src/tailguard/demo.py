"""Demo data with a realistic long tail: Zipf item popularity and query frequency, English and Chinese."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

# (category, [(english type, chinese type), ...]); brand names are shared by both languages.
CATALOGUE = [
    (
        "kitchen",
        [("kettle", "水壶"), ("frying pan", "煎锅"), ("knife set", "刀具套装"), ("blender", "搅拌机")],
    ),
    (
        "lighting",
        [("desk lamp", "台灯"), ("led bulb", "灯泡"), ("ceiling light", "吸顶灯"), ("night light", "夜灯")],
    ),
    ("shoes", [("running shoes", "跑步鞋"), ("sneakers", "运动鞋"), ("boots", "靴子"), ("sandals", "凉鞋")]),
    (
        "phone",
        [("phone case", "手机壳"), ("charger", "充电器"), ("usb cable", "数据线"), ("earbuds", "耳机")],
    ),
    ("garden", [("garden hose", "水管"), ("shovel", "铁锹"), ("planter", "花盆"), ("lawn mower", "割草机")]),
    ("tools", [("drill", "电钻"), ("hammer", "锤子"), ("screwdriver", "螺丝刀"), ("tape measure", "卷尺")]),
    (
        "bath",
        [("towel", "毛巾"), ("shower head", "花洒"), ("bath mat", "浴室垫"), ("soap dispenser", "皂液器")],
    ),
    ("office", [("office chair", "办公椅"), ("notebook", "笔记本"), ("backpack", "背包"), ("desk", "书桌")]),
]
COLORS = [
    ("black", "黑色"),
    ("white", "白色"),
    ("red", "红色"),
    ("blue", "蓝色"),
    ("green", "绿色"),
    ("grey", "灰色"),
    ("pink", "粉色"),
    ("silver", "银色"),
]
MATERIALS = [
    ("steel", "不锈钢"),
    ("wood", "木质"),
    ("plastic", "塑料"),
    ("leather", "皮革"),
    ("cotton", "棉质"),
    ("glass", "玻璃"),
]
BRANDS = [
    "acme",
    "nordica",
    "zenith",
    "orbit",
    "pioneer",
    "lumen",
    "kaito",
    "vela",
    "brio",
    "tundra",
    "maple",
    "sora",
]
MODIFIERS = [
    ("cheap", "便宜"),
    ("for kids", "儿童"),
    ("2 pack", "两件装"),
    ("large", "大号"),
    ("mini", "迷你"),
    ("waterproof", "防水"),
    ("wireless", "无线"),
]


class DemoConfig(BaseModel):
    """How much demo data to make and how skewed it is."""

    rows: int = Field(2000, gt=0, description="Rows per batch.")
    batches: int = Field(2, gt=0, description="Number of weekly batches over the same catalogue.")
    items: int = Field(0, ge=0, description="Catalogue size; 0 picks rows // 3 (bounded to 200..200,000).")
    queries: int = Field(
        0, ge=0, description="Distinct queries; 0 picks rows // 4 (bounded to 100..500,000)."
    )
    item_zipf: float = Field(1.1, gt=0, description="Zipf exponent of item popularity.")
    query_zipf: float = Field(1.05, gt=0, description="Zipf exponent of query frequency.")
    chinese_share: float = Field(0.25, ge=0, le=1, description="Share of items and queries in Chinese.")
    new_item_share: float = Field(
        0.08, ge=0, lt=1, description="Share of the catalogue launched per batch (cold items)."
    )
    seed: int = Field(0, description="Everything is deterministic given the seed.")
    chunk_rows: int = Field(
        500_000, gt=0, description="Rows generated and written per chunk (bounds memory)."
    )


def _zipf_probs(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf probabilities over n entities in a random order (rank r has weight r^-s)."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return (weights / weights.sum())[rng.permutation(n)]


class _Catalogue:
    """Items and queries with their latent attributes, built once per seed."""

    def __init__(self, cfg: DemoConfig):
        rng = np.random.default_rng(cfg.seed)
        n_items = cfg.items or int(np.clip(cfg.rows // 3, 200, 200_000))
        n_queries = cfg.queries or int(np.clip(cfg.rows // 4, 100, 500_000))
        types = [(ci, en, zh) for ci, (_, ts) in enumerate(CATALOGUE) for en, zh in ts]
        self.types = types
        t = rng.integers(0, len(types), n_items)
        color = rng.integers(0, len(COLORS), n_items)
        material = rng.integers(0, len(MATERIALS), n_items)
        brand = rng.integers(0, len(BRANDS), n_items)
        zh = rng.random(n_items) < cfg.chinese_share
        # Item quality: mostly the brand's reputation (visible in the title), plus a hidden per-item part.
        # Good items get more positives whatever the query, as in real click logs.
        brand_reputation = rng.normal(0, 0.9, len(BRANDS))
        self.item_quality = brand_reputation[brand] + rng.normal(0, 0.3, n_items)
        self.item_type, self.item_color, self.item_brand = t, color, brand
        self.item_pop = _zipf_probs(n_items, cfg.item_zipf, rng)
        # Later batches launch new items: they are cold for a model trained on earlier batches.
        self.item_launch = np.where(
            rng.random(n_items) < cfg.new_item_share * cfg.batches,
            rng.integers(1, max(cfg.batches, 2), n_items),
            0,
        )
        self.item_id = np.array([f"I{i:07d}" for i in range(n_items)], dtype=object)
        self.item_category = np.array([CATALOGUE[types[k][0]][0] for k in t], dtype=object)
        self.price = np.round(np.exp(rng.normal(3.2, 0.9, n_items)), 2)
        titles = []
        for i in range(n_items):
            _, ten, tzh = types[t[i]]
            if zh[i]:
                titles.append(f"{BRANDS[brand[i]]} {COLORS[color[i]][1]}{MATERIALS[material[i]][1]}{tzh}")
            else:
                titles.append(f"{BRANDS[brand[i]]} {COLORS[color[i]][0]} {MATERIALS[material[i]][0]} {ten}")
        self.item_title = np.array(titles, dtype=object)

        q_type = rng.integers(0, len(types), n_queries)
        q_color = np.where(rng.random(n_queries) < 0.45, rng.integers(0, len(COLORS), n_queries), -1)
        q_brand = np.where(rng.random(n_queries) < 0.3, rng.integers(0, len(BRANDS), n_queries), -1)
        q_mod = np.where(rng.random(n_queries) < 0.5, rng.integers(0, len(MODIFIERS), n_queries), -1)
        q_zh = rng.random(n_queries) < cfg.chinese_share
        texts = []
        for j in range(n_queries):
            lang = 1 if q_zh[j] else 0
            parts = [BRANDS[q_brand[j]]] if q_brand[j] >= 0 else []
            parts += [COLORS[q_color[j]][lang]] if q_color[j] >= 0 else []
            parts.append(types[q_type[j]][1 + lang])
            parts += [MODIFIERS[q_mod[j]][lang]] if q_mod[j] >= 0 else []
            texts.append("".join(parts) if lang and len(parts) > 1 and q_brand[j] < 0 else " ".join(parts))
        # Keep query strings unique (the first draw wins), so a query's frequency is its own.
        _, first = np.unique(np.array(texts, dtype=object), return_index=True)
        keep = np.sort(first)
        q_type, q_color, q_brand = q_type[keep], q_color[keep], q_brand[keep]
        texts = [texts[k] for k in keep]
        n_queries = len(keep)
        self.query_text = np.array(texts, dtype=object)
        self.q_type, self.q_color, self.q_brand = q_type, q_color, q_brand
        self.query_pop = _zipf_probs(n_queries, cfg.query_zipf, rng)
        by_type = [np.flatnonzero(t == k) for k in range(len(types))]
        self.items_by_type = by_type
        # Label threshold at the latent's 90th percentile on 50k calibration pairs: ~10% positives.
        calib = np.random.default_rng([cfg.seed, 0])
        self.threshold = float(np.quantile(_latent(self, *_shown(self, 0, 50_000, calib), calib), 0.9))


def _shown(cat: _Catalogue, batch: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n (query, shown item) pairs; half the items come from the query's product type, as a retriever's."""
    live = cat.item_launch <= batch
    pop = np.where(live, cat.item_pop, 0.0)
    pop /= pop.sum()
    q = rng.choice(len(cat.query_pop), size=n, p=cat.query_pop)
    item = rng.choice(len(pop), size=n, p=pop)
    same = rng.random(n) < 0.5
    for k, members in enumerate(cat.items_by_type):
        rows = np.flatnonzero(same & (cat.q_type[q] == k))
        members = members[live[members]]
        if len(rows) and len(members):
            w = cat.item_pop[members] / cat.item_pop[members].sum()
            item[rows] = rng.choice(members, size=len(rows), p=w)
    return q, item


def _latent(cat: _Catalogue, q: np.ndarray, item: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Latent relevance: product type, colour and brand match, item quality, and noise."""
    type_match = cat.item_type[item] == cat.q_type[q]
    color_ok = (cat.q_color[q] < 0) | (cat.q_color[q] == cat.item_color[item])
    brand_ok = (cat.q_brand[q] < 0) | (cat.q_brand[q] == cat.item_brand[item])
    noise = rng.normal(0, 0.8, len(q))
    return 3.0 * type_match + 1.2 * color_ok + 1.0 * brand_ok + cat.item_quality[item] + noise


def _chunk(cat: _Catalogue, batch: int, n: int, rng: np.random.Generator, t0: pd.Timestamp) -> pd.DataFrame:
    """n rows of one batch: query, shown item, and the judged label."""
    q, item = _shown(cat, batch, n, rng)
    latent = _latent(cat, q, item, rng)
    label = (latent > cat.threshold).astype(np.int8)
    relevance = np.clip(np.round(1 + latent / 3.0, 2), 1.0, 3.0)
    return pd.DataFrame(
        {
            "query": cat.query_text[q],
            "item_id": cat.item_id[item],
            "item_title": cat.item_title[item],
            "category": cat.item_category[item],
            "price": cat.price[item],
            "ts": t0 + pd.to_timedelta(np.sort(rng.integers(0, 7 * 86_400, n)), unit="s"),
            "relevance": relevance,
            "label": label,
        }
    )


def generate_batches(config: DemoConfig, out_dir: Path, fmt: Literal["csv", "parquet"] = "csv") -> list[Path]:
    """Write config.batches batch files to out_dir, streaming config.chunk_rows rows at a time."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cat = _Catalogue(config)
    paths = []
    for b in range(config.batches):
        rng = np.random.default_rng([config.seed, b + 1])
        t0 = pd.Timestamp("2026-01-05") + pd.Timedelta(weeks=b)
        path = out_dir / f"batch-{b + 1:03d}.{'csv' if fmt == 'csv' else 'parquet'}"
        writer = None
        remaining, first = config.rows, True
        while remaining > 0:
            n = min(remaining, config.chunk_rows)
            frame = _chunk(cat, b, n, rng, t0)
            if fmt == "csv":
                frame.to_csv(path, mode="w" if first else "a", header=first, index=False)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
            remaining -= n
            first = False
        if writer is not None:
            writer.close()
        paths.append(path)
    return paths
