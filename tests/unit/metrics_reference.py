"""Helpers the metrics and gate tests share (not a test module): generated batches of a known shape.

Import it with `sys.path.insert(0, str(Path(__file__).parent))` (the tests folders have no __init__.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def flat_tail_frames(
    rng: np.random.Generator, n: int, new_items: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, eval) with Home Depot's flat tail: >85% of training items seen once.

    Training: 3,400 items once and 1,400 draws of 600 repeated items over 700 queries. Eval: n rows, 10 per
    query, items drawn from both groups plus `new_items` never-seen ones, ~30% positives.
    """
    once = [f"o{i}" for i in range(3400)]
    repeated = [f"r{i}" for i in range(600)]
    train_items = once + list(rng.choice(repeated, size=1400))
    train = pd.DataFrame({"query": [f"t{i % 700}" for i in range(len(train_items))], "item_id": train_items})
    pool = once + repeated + [f"new{i}" for i in range(new_items)]
    ev = pd.DataFrame(
        {
            "query": [f"q{i // 10}" for i in range(n)],
            "item_id": rng.choice(pool, size=n),
            "label": (rng.random(n) < 0.3).astype(int),
        }
    )
    return train, ev
