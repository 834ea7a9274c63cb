"""The tiny cross-encoder: training, determinism, scoring, safe loading, checkpoints and resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from tailguard import model as M  # noqa: E402

NOUNS = ["drill", "lamp", "kettle", "towel", "hose", "chair", "boots", "charger"]
COLORS = ["red", "blue", "black", "white", "green"]


def pairs(n_queries: int = 40, per_query: int = 8, seed: int = 0) -> pd.DataFrame:
    """Relevant titles share the query's noun and say 'original'; others name another noun and say 'generic'.

    A from-scratch model learns the title marker in a few steps (matching nouns across the pair takes far
    more data: a small from-scratch BERT ranked real Home Depot queries at chance, per-query AUC 0.51).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        noun = NOUNS[q % len(NOUNS)]
        query = f"{COLORS[rng.integers(len(COLORS))]} {noun} {q}"
        for i in range(per_query):
            label = int(i % 2 == 0)
            other = NOUNS[(NOUNS.index(noun) + 1 + rng.integers(len(NOUNS) - 1)) % len(NOUNS)]
            marker = "original" if label else "generic"
            title = (
                f"{COLORS[rng.integers(len(COLORS))]} {noun if label else other} {marker} {rng.integers(100)}"
            )
            rows.append((query, f"i{q}-{i}", title, label))
    return pd.DataFrame(rows, columns=["query", "item_id", "item_title", "label"])


def quick(**overrides) -> M.TrainConfig:
    """A config small enough for a unit test (a second or two on 2 shared cores)."""
    base = {"epochs": 2, "batch_size": 16, "threads": 1, "progress": False, "tensorboard": False, "lr": 3e-3}
    return M.TrainConfig(**{**base, **overrides})


def test_tiny_model_learns_and_round_trips(tmp_path):
    df = pairs(60)
    result = M.train(df, quick(epochs=4), tmp_path / "model")
    assert result.steps > 0 and len(result.history) == 4
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_valid_auc is not None and result.best_valid_auc > 0.8
    for name in ("model.safetensors", "config.json", "tokenizer.json", M.TRAIN_META, "training_curves.png"):
        assert (tmp_path / "model" / name).exists(), name
    meta = json.loads((tmp_path / "model" / M.TRAIN_META).read_text())
    assert meta["config"]["epochs"] == 4 and len(meta["result"]["history"]) == 4
    fresh = pairs(10, seed=1)
    scores = M.predict(tmp_path / "model", fresh)
    assert scores.shape == (len(fresh),) and np.all((scores >= 0) & (scores <= 1))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(fresh["label"], scores) > 0.8
    # streaming in small batches gives the same scores as one big batch, row-aligned
    np.testing.assert_allclose(M.predict(tmp_path / "model", fresh, batch_size=7), scores, atol=1e-5)


def test_deterministic_on_cpu_for_a_fixed_seed(tmp_path):
    df = pairs(20)
    runs = [M.train(df, quick(max_steps=6, seed=3), tmp_path / f"m{i}") for i in range(2)]
    a, b = (M.predict(tmp_path / f"m{i}", df) for i in range(2))
    np.testing.assert_array_equal(a, b)
    assert runs[0].history == [
        {**h, "samples_per_s": runs[0].history[i]["samples_per_s"]} for i, h in enumerate(runs[1].history)
    ]
    other = M.train(df, quick(max_steps=6, seed=4), tmp_path / "m2")
    assert other.steps == 6
    assert not np.array_equal(M.predict(tmp_path / "m2", df), a)


def test_grad_accum_and_max_steps_count_optimizer_steps(tmp_path):
    df = pairs(20, per_query=10)  # 200 rows; valid_fraction 0 keeps every row in training
    result = M.train(df, quick(epochs=2, batch_size=16, grad_accum=3, valid_fraction=0), tmp_path / "a")
    assert result.steps == 2 * math.ceil(math.ceil(200 / 16) / 3)
    assert result.best_valid_auc is None
    capped = M.train(df, quick(epochs=5, max_steps=7, valid_fraction=0), tmp_path / "b")
    assert capped.steps == 7


def test_weighted_sampler_draws_by_weight():
    weights = torch.tensor([0.0, 0.0, 1.0, 3.0])
    order = M._epoch_order(4000, torch.cat([weights] * 1000), quick(sampler="weighted"), epoch=0)
    drawn = np.bincount(order.numpy() % 4, minlength=4)
    assert drawn[0] == drawn[1] == 0
    assert 2.5 < drawn[3] / drawn[2] < 3.5
    assert sorted(M._epoch_order(10, None, quick(), 0).tolist()) == list(range(10))


def test_weight_column_reaches_the_sampler(tmp_path):
    df = pairs(20).assign(weight=1.0)
    df.loc[df["label"] == 0, "weight"] = 0.0  # only positives can be drawn
    result = M.train(df, quick(max_steps=3, sampler="weighted", valid_fraction=0), tmp_path / "m")
    assert result.steps == 3
    # with only positives drawn the model is pushed toward "relevant" everywhere
    assert M.predict(tmp_path / "m", df).mean() > 0.5


def test_validation_split_is_by_query():
    df = pairs(30)
    train, valid = M.split_valid_queries(df, 0.2, seed=0)
    assert len(valid) and not set(train["query"]) & set(valid["query"])
    assert len(train) + len(valid) == len(df)


def test_pickle_only_weights_are_refused(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(M.UnsafeWeightsError, match="pytorch_model.bin"):
        M.load_model(folder)
    with pytest.raises(M.UnsafeWeightsError, match="safetensors only"):
        M.train(pairs(5), quick(base=str(folder)), tmp_path / "out")


def test_bad_input_names_the_column(tmp_path):
    with pytest.raises(M.ModelError, match="item_title"):
        M.train(pairs(5).drop(columns="item_title"), quick(), tmp_path / "m")
    with pytest.raises(M.ModelError, match="label.*0/1"):
        M.train(pairs(5).assign(label=2), quick(), tmp_path / "m")
    with pytest.raises(M.ModelError, match="HF_HUB_OFFLINE"):
        M.resolve_base("some-org/some-model")


_OFFLINE_PROBE = """
import json, os, socket
before = dict(os.environ)
attempts = []
def refuse(self, *args, **kwargs):
    attempts.append(repr(args))
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
import tailguard.model as M
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
try:
    M.build_model(M.TrainConfig(base="some-org/no-such-model"))
    error = None
except M.ModelError as err:
    error = str(err)
print(json.dumps({"changed": changed, "error": error, "attempts": attempts}))
"""


def test_import_leaves_environment_alone_and_offline_refuses_hub_names():
    """Importing tailguard.model sets no variable; the settings (offline by default) refuse a hub name
    with one error naming the switch, before any connection is tried."""
    hub_vars = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TAILGUARD_OFFLINE", "TAILGUARD_HF_OFFLINE")
    env = {k: v for k, v in os.environ.items() if k not in hub_vars}
    out = subprocess.run(
        [sys.executable, "-c", _OFFLINE_PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["changed"] == []
    assert got["error"] and "hub is off" in got["error"] and "TAILGUARD_OFFLINE=0" in got["error"]
    assert got["attempts"] == []


def test_offline_setting_decides_over_hf_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TAILGUARD_OFFLINE", "1")
    with pytest.raises(M.ModelError, match="hub is off"):
        M.resolve_base("some-org/some-model")
    monkeypatch.delenv("TAILGUARD_OFFLINE")
    assert M.resolve_base("some-org/some-model") == "some-org/some-model"  # HF_HUB_OFFLINE=0 allows it
    monkeypatch.setenv("TAILGUARD_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert M.resolve_base("some-org/some-model") == "some-org/some-model"


def test_early_stopping_stops_when_validation_auc_stalls(tmp_path):
    df = pairs(40)
    # lr 0 after the first step: validation AUC cannot improve, so patience 1 stops after epoch 2
    result = M.train(df, quick(epochs=6, lr=1e-12, early_stopping_patience=1), tmp_path / "m")
    assert len(result.history) == 2
    assert result.best_valid_auc == result.history[0]["valid_auc"]


def test_tensorboard_and_checkpoints_written(tmp_path):
    df = pairs(20)
    ckpt = tmp_path / "ckpt"
    result = M.train(df, quick(tensorboard=True, checkpoint_every=4), tmp_path / "m", checkpoint_dir=ckpt)
    assert list((ckpt / "tensorboard").glob("events.out.tfevents.*"))
    latest = M.latest_checkpoint(ckpt)
    assert latest is not None and (latest / "optimizer.safetensors").exists()
    assert json.loads((latest / "trainer_state.json").read_text())["step"] == result.steps
    assert not list(latest.glob("*.bin")) and not list(latest.glob("*.pt"))


_RESUME_SCRIPT = """
import json, sys, time
import pandas as pd
from tailguard import model as M
df = pd.read_parquet(sys.argv[1])
cfg = M.TrainConfig(**json.loads(sys.argv[5]))
slow = sys.argv[4] == "slow"
def on_ckpt(folder):
    print("CKPT", folder.name, flush=True)
    if slow:
        time.sleep(0.3)  # room for the test to SIGKILL between checkpoints
r = M.train(df, cfg, sys.argv[2], checkpoint_dir=sys.argv[3], on_checkpoint=on_ckpt)
print("DONE", r.steps, r.resumed_from_step, flush=True)
"""
RESUME_CONFIG = {
    "epochs": 3, "batch_size": 8, "threads": 1, "progress": False, "tensorboard": False, "lr": 3e-3,
    "checkpoint_every": 5, "valid_fraction": 0.0,
}  # fmt: skip


@pytest.mark.slow  # two fresh interpreters importing transformers: ~15 s idle, 40 s on busy shared cores
def test_sigkill_mid_training_then_resume_ends_with_same_steps(tmp_path):
    df = pairs(20)
    data = tmp_path / "train.parquet"
    df.to_parquet(data)
    script = tmp_path / "run.py"
    script.write_text(_RESUME_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, str(script), str(data), str(tmp_path / "out"), str(tmp_path / "ckpt")]

    reference = M.train(df, M.TrainConfig(**RESUME_CONFIG), tmp_path / "ref")  # uninterrupted, in-process
    assert reference.steps == 3 * math.ceil(160 / 8)

    proc = subprocess.Popen(
        [*argv, "slow", json.dumps(RESUME_CONFIG)], stdout=subprocess.PIPE, text=True, env=env
    )
    seen = 0
    deadline = time.monotonic() + 90
    while seen < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line.startswith("CKPT")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert seen == 2 and proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "out" / "model.safetensors").exists()
    assert M.latest_checkpoint(tmp_path / "ckpt") is not None

    resumed = subprocess.run(
        [*argv, "fast", json.dumps(RESUME_CONFIG)], capture_output=True, text=True, env=env, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps, resumed_from = resumed.stdout.split("DONE ")[1].split()[:2]
    assert int(steps) == reference.steps
    assert 0 < int(resumed_from) < reference.steps
    # same data order, optimizer state and RNG: the resumed model matches the uninterrupted one
    np.testing.assert_allclose(M.predict(tmp_path / "out", df), M.predict(tmp_path / "ref", df), atol=1e-5)


def test_resume_refuses_a_checkpoint_from_another_config(tmp_path):
    df = pairs(10)
    M.train(
        df,
        quick(max_steps=4, checkpoint_every=2, valid_fraction=0),
        tmp_path / "a",
        checkpoint_dir=tmp_path / "c",
    )
    with pytest.raises(M.ModelError, match="different config.*lr"):
        M.train(df, quick(max_steps=4, checkpoint_every=2, valid_fraction=0, lr=1e-4), tmp_path / "b",
                checkpoint_dir=tmp_path / "c")  # fmt: skip
    # a finished run resumes to its end at once: same steps, nothing retrained
    config = quick(max_steps=4, checkpoint_every=2, valid_fraction=0, progress=False)
    again = M.train(df, config, tmp_path / "d", checkpoint_dir=tmp_path / "c")
    assert again.steps == 4 and again.resumed_from_step == 4


def test_on_epoch_reports_each_epoch(tmp_path):
    rows: list[dict] = []
    M.train(pairs(20), quick(epochs=2), tmp_path / "m", on_epoch=rows.append)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "valid_auc", "samples_per_s", "lr", "step"} <= set(rows[0])


_DDP_SCRIPT = """
import os, sys
import pandas as pd
from tailguard import model as M
df = pd.read_parquet(sys.argv[1])
cfg = M.TrainConfig(epochs=2, batch_size=8, threads=1, progress=False, tensorboard=False, valid_fraction=0.0)
r = M.train(df.iloc[:-3], cfg, sys.argv[2])  # 157 rows: the shards need padding to stay equal
print("RANK", os.environ["RANK"], "STEPS", r.steps, flush=True)
"""


@pytest.mark.slow  # two processes importing transformers: ~10 s idle
def test_two_process_gloo_run_trains_in_step(tmp_path):
    data = tmp_path / "train.parquet"
    pairs(20).to_parquet(data)
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*launcher, str(script), str(data), str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = sorted(line.split() for line in proc.stdout.splitlines() if line.startswith("RANK"))
    # each rank sees ceil(157 / 2) = 79 rows -> 10 batches of 8 per epoch, in lockstep
    assert steps == [["RANK", "0", "STEPS", "20"], ["RANK", "1", "STEPS", "20"]]
    assert (tmp_path / "m" / "model.safetensors").exists()


def test_auc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # rounding makes many ties
    assert M._auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert M._auc(np.ones(5), np.arange(5)) is None


def test_remote_base_is_downloaded_once_and_checksummed(tmp_path):
    df = pairs(10)
    M.train(df, quick(max_steps=2, valid_fraction=0), tmp_path / "base")  # a real (tiny) HF folder
    source = tmp_path / "bucket"
    import shutil

    shutil.copytree(tmp_path / "base", source)
    cache = tmp_path / "cache"
    first = M.fetch_s3_base(str(source), cache_dir=cache)  # any store URI; s3:// in production
    assert (first / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    (source / "model.safetensors").write_bytes(b"changed upstream")
    assert M.fetch_s3_base(str(source), cache_dir=cache) == first  # cached: not downloaded again
    assert (first / "model.safetensors").read_bytes() != b"changed upstream"
    (first / "config.json").write_text("{}")  # a corrupted cache fails its sha256 and is fetched afresh
    again = M.fetch_s3_base(str(source), cache_dir=cache)
    assert (again / "config.json").read_text() == (source / "config.json").read_text()


def test_checkpoints_round_trip_through_the_store(tmp_path):
    from tailguard.store import open_store

    store = open_store(str(tmp_path / "store"))
    pushed = []
    config = quick(max_steps=6, checkpoint_every=3, valid_fraction=0, tensorboard=True)
    M.train(pairs(10), config, tmp_path / "m", checkpoint_dir=tmp_path / "ck",
            on_checkpoint=lambda folder: pushed.append(folder.name)
            or M.push_checkpoint(store, "runs/x-checkpoints", folder))  # fmt: skip
    # every 3 steps plus each epoch end (80 rows / 16 = 5 steps per epoch; max_steps 6 ends epoch 2)
    assert pushed == ["step-00000003", "step-00000005", "step-00000006"]
    keys = store.list_keys("runs/x-checkpoints/")
    assert store.get_bytes("runs/x-checkpoints/LATEST") == b"step-00000006"
    assert not [k for k in keys if "/step-00000003/" in k]  # older checkpoints are pruned from the store
    assert [k for k in keys if "/tensorboard/" in k]
    restored = M.pull_checkpoint(store, "runs/x-checkpoints", tmp_path / "fresh")
    assert restored is not None and restored.name == "step-00000006"
    again = M.train(pairs(10), config, tmp_path / "m2", checkpoint_dir=tmp_path / "fresh")
    assert again.resumed_from_step == 6 and again.steps == 6
    assert M.pull_checkpoint(store, "runs/none", tmp_path / "empty") is None


@pytest.mark.parametrize("loss", ["bce", "weighted_bce", "focal", "logit_adjustment"])
def test_every_balancing_loss_trains(tmp_path, loss):
    pytest.importorskip("tailguard.losses")
    result = M.train(
        pairs(10).assign(weight=1.0), quick(max_steps=3, loss=loss, valid_fraction=0), tmp_path / "m"
    )
    assert result.steps == 3 and np.isfinite(result.history[-1]["train_loss"])


def test_validation_split_keeps_augmented_copies_with_their_source_query():
    from tailguard.model import split_valid_queries

    real = pd.DataFrame({"query": [f"q{i}" for i in range(40)], "item_title": "t", "label": [0, 1] * 20})
    real["row_id"] = range(40)
    real["source_row_id"] = real["row_id"]
    real["augmented"] = False
    copies = real.iloc[:20].assign(
        query=lambda d: d["query"] + " variant", row_id=lambda d: -1 - d["row_id"], augmented=True
    )
    frame = pd.concat([real, copies], ignore_index=True)
    for seed in range(5):
        train, valid = split_valid_queries(frame, 0.3, seed)
        assert not valid["augmented"].any()  # validation is real rows only
        held_sources = set(valid["row_id"])
        leaked = train[train["augmented"] & train["source_row_id"].isin(held_sources)]
        assert leaked.empty  # no EDA copy of a validation row is trained on


@pytest.mark.parametrize(
    "options",
    [{}, {"sampler": "weighted"}, {"sampler": "none", "loss": "weighted_bce"}],
    ids=["plain", "weighted-sampler", "weighted-loss"],
)
def test_compact_frame_trains_exactly_like_its_written_out_rows(tmp_path, options):
    """Row i counted repeats[i] times: the same examples, same order as the expanded frame, same model."""
    from tailguard.balance import expand

    df = pairs(20)
    compact = df.assign(repeats=np.where(df["label"] == 1, 3, 1).astype(np.int32))
    if options:  # a per-row weight travels with the row (weights of rows with 3 copies differ from the rest)
        compact = compact.assign(weight=np.linspace(0.5, 1.5, len(compact)))
    config = quick(max_steps=8, seed=5, valid_fraction=0, **options)
    a = M.train(compact, config, tmp_path / "compact")
    b = M.train(expand(compact), config, tmp_path / "expanded")
    assert a.steps == b.steps == 8
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    np.testing.assert_array_equal(M.predict(tmp_path / "compact", df), M.predict(tmp_path / "expanded", df))


@pytest.mark.parametrize("world", [1, 2])
def test_compact_epoch_visits_each_row_repeats_times(world):
    repeats = np.array([1, 4, 2, 1, 3])
    row_of = M._counted_rows(pd.DataFrame({"repeats": repeats}))
    n = int(repeats.sum())
    shards = [M._epoch_rows(n, None, row_of, quick(), epoch=1, rank=r, world=world) for r in range(world)]
    seen = np.bincount(torch.cat(shards).numpy(), minlength=len(repeats))
    padded = math.ceil(n / world) * world - n  # DistributedSampler-style wrap pads the last shard
    assert seen.sum() == n + padded and (seen >= repeats).all() and (seen - repeats).sum() == padded


@pytest.mark.parametrize(("value", "shown"), [(0, "[0]"), (1.5, "[1.5]"), ("x", "['x']")])
def test_bad_repeats_are_named(tmp_path, value, shown):
    df = pairs(5).assign(repeats=value)
    with pytest.raises(M.ModelError, match="'repeats' must be integers >= 1; offending values") as info:
        M.train(df, quick(max_steps=1, valid_fraction=0), tmp_path / "m")
    assert str(info.value).endswith(shown)


# --- GPU-efficiency options (issue 19): same results on the CPU, fewer pad tokens, safe fallbacks -----------


def ragged_pairs(n_queries: int = 30, seed: int = 0) -> pd.DataFrame:
    """`pairs` with titles of 0-30 extra words (plus hostile cells), so rows differ widely in token length."""
    rng = np.random.default_rng(seed)
    df = pairs(n_queries, seed=seed)
    extra = [" ".join(rng.choice(COLORS + NOUNS, rng.integers(0, 30))) for _ in range(len(df))]
    df["item_title"] = df["item_title"] + " " + pd.Series(extra)
    # hostile but valid text: empty, whitespace, CJK, emoji, markup, one very long run (truncated)
    odd = ["", "   ", "电钻 红色", "🔥🔥 drill", "</script><b>x", "lamp " * 200]
    df.loc[: len(odd) - 1, "item_title"] = odd
    return df


@pytest.fixture(scope="module")
def ragged_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ragged") / "model"
    M.train(ragged_pairs(), quick(max_steps=8, max_length=48, valid_fraction=0), folder)
    return folder


@pytest.mark.parametrize("batch_size", [7, 64])
def test_length_sorted_scoring_matches_unsorted(ragged_model, batch_size):
    df = ragged_pairs(12, seed=1)
    lengths = M._encode(M.load_model(ragged_model)[1], df, 48)["lengths"]
    assert int(lengths.min()) <= 6 and int(lengths.max()) == 48  # short and truncated rows both present
    unsorted = M.predict(ragged_model, df, batch_size=batch_size, sort_by_length=False)
    ordered = M.predict(ragged_model, df, batch_size=batch_size)
    assert np.abs(ordered - unsorted).max() < 1e-6
    # one row per batch has no padding at all: the reference that both must match
    alone = M.predict(ragged_model, df.head(40), batch_size=1, sort_by_length=False)
    assert np.abs(ordered[:40] - alone).max() < 1e-6
    # row alignment survives the sort: a shuffled frame gets the same scores, shuffled
    perm = np.random.default_rng(2).permutation(len(df))
    shuffled = M.predict(ragged_model, df.iloc[perm].reset_index(drop=True), batch_size=batch_size)
    assert np.abs(shuffled - ordered[perm]).max() < 1e-6


def test_scorer_counts_pairs_per_second(ragged_model):
    scorer = M.Scorer(ragged_model, batch_size=32, window_batches=2)  # 64-row windows: several per call
    df = ragged_pairs(10, seed=3)
    first = scorer(df)
    scorer(df.head(5))
    assert scorer.pairs == len(df) + 5 and scorer.seconds > 0
    assert scorer.pairs_per_s == pytest.approx(scorer.pairs / scorer.seconds)
    np.testing.assert_allclose(scorer(df), first, atol=1e-6)


def test_length_bucketing_regroups_rows_by_length_and_is_seeded():
    lengths = torch.tensor(np.random.default_rng(0).integers(3, 49, 1000))
    config = quick(batch_size=16, bucket_batches=10, length_bucketing=True)
    order = M._epoch_rows(1000, None, None, config, epoch=0)
    bucketed = M._bucket_by_length(order, lengths, config, epoch=0)
    assert sorted(bucketed.tolist()) == list(range(1000))  # a permutation: every row once
    again = M._bucket_by_length(order, lengths, config, epoch=0)
    assert torch.equal(bucketed, again)  # a function of (seed, epoch): a resumed run replays it
    assert not torch.equal(bucketed, M._bucket_by_length(order, lengths, config, epoch=1))

    def pads(o: torch.Tensor) -> int:
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in o.split(16))

    assert pads(bucketed) < 0.25 * pads(order)  # uniform lengths 3-48: most padding goes
    # the short last batch (1000 = 62 * 16 + 8) stays last, whole: the loop's split sees the same batches
    assert set(bucketed[-8:].tolist()) <= set(order[-(1000 % 160) :].tolist())
    assert len(M._bucket_by_length(order[:5], lengths, config, epoch=0)) == 5


def test_length_bucketing_trains_with_fewer_pad_tokens(tmp_path):
    df = ragged_pairs(20)
    plain = M.train(df, quick(max_steps=6, max_length=48, valid_fraction=0), tmp_path / "a")
    config = quick(max_steps=6, max_length=48, valid_fraction=0, length_bucketing=True, bucket_batches=5)
    runs = [M.train(df, config, tmp_path / f"b{i}") for i in range(2)]
    assert plain.steps == runs[0].steps == 6
    assert plain.pad_share > 0.3 and runs[0].pad_share < 0.5 * plain.pad_share
    np.testing.assert_array_equal(M.predict(tmp_path / "b0", df), M.predict(tmp_path / "b1", df))


def test_compile_runs_and_a_failing_compile_falls_back_to_eager(tmp_path, caplog):
    df = pairs(10)
    base = M.train(df, quick(max_steps=3, seed=3, valid_fraction=0), tmp_path / "eager")
    compiled = quick(max_steps=3, seed=3, valid_fraction=0, compile=True, compile_backend="eager")
    traced = M.train(df, compiled, tmp_path / "c")
    assert traced.compiled and not base.compiled
    np.testing.assert_allclose(M.predict(tmp_path / "c", df), M.predict(tmp_path / "eager", df), atol=1e-6)
    with caplog.at_level("WARNING", logger="tailguard.model"):
        broken = M.train(
            df, quick(max_steps=3, seed=3, valid_fraction=0, compile=True, compile_backend="no-such"),
            tmp_path / "f",
        )  # fmt: skip
    assert not broken.compiled and broken.steps == 3
    assert "torch.compile failed" in caplog.text and "no-such" in caplog.text
    np.testing.assert_array_equal(M.predict(tmp_path / "f", df), M.predict(tmp_path / "eager", df))


def test_attention_kernels_agree_and_defaults_keep_todays_model(tmp_path):
    df = pairs(10)
    sdpa = M.train(df, quick(max_steps=3, seed=2, valid_fraction=0), tmp_path / "sdpa")
    eager = M.train(df, quick(max_steps=3, seed=2, valid_fraction=0, attn_implementation="eager"),
                    tmp_path / "eager")  # fmt: skip
    assert sdpa.steps == eager.steps == 3
    np.testing.assert_allclose(M.predict(tmp_path / "sdpa", df), M.predict(tmp_path / "eager", df), atol=1e-5)
    foreach = M.train(df, quick(max_steps=3, seed=2, valid_fraction=0, fused_adamw=False), tmp_path / "fe")
    assert foreach.steps == 3
    np.testing.assert_allclose(M.predict(tmp_path / "fe", df), M.predict(tmp_path / "sdpa", df), atol=1e-5)
    defaults = M.TrainConfig()
    assert defaults.attn_implementation == "sdpa" and not defaults.compile and not defaults.length_bucketing
    assert defaults.fused_adamw and not defaults.bf16_weights
    with pytest.raises(ValueError, match="attn_implementation"):
        M.TrainConfig(attn_implementation="flash_attention_9")


def test_checkpoint_from_before_the_new_options_still_resumes(tmp_path):
    df = pairs(10)
    config = quick(max_steps=4, checkpoint_every=2, valid_fraction=0)
    M.train(df, config, tmp_path / "a", checkpoint_dir=tmp_path / "c")
    state_path = M.latest_checkpoint(tmp_path / "c") / "trainer_state.json"
    state = json.loads(state_path.read_text())
    new = ("attn_implementation", "compile", "compile_backend", "length_bucketing", "bucket_batches",
           "fused_adamw", "bf16_weights")  # fmt: skip
    state["config"] = {k: v for k, v in state["config"].items() if k not in new}
    state_path.write_text(json.dumps(state))
    again = M.train(df, config.model_copy(update={"compile": True, "compile_backend": "eager"}),
                    tmp_path / "b", checkpoint_dir=tmp_path / "c")  # fmt: skip
    assert again.steps == 4 and again.resumed_from_step == 4  # missing = default; compile is resume-free
    with pytest.raises(M.ModelError, match="different config.*length_bucketing"):
        M.train(df, config.model_copy(update={"length_bucketing": True}), tmp_path / "d",
                checkpoint_dir=tmp_path / "c")  # fmt: skip


def test_predict_cli_reports_pairs_per_second(tmp_path, ragged_model):
    from typer.testing import CliRunner

    from tailguard.cli import app

    data = tmp_path / "rows.csv"
    ragged_pairs(5, seed=4).iloc[1:].to_csv(data, index=False)  # the contract refuses row 0's empty title
    res = CliRunner().invoke(app, ["predict", "--model", str(ragged_model), "--data", str(data),
                                   "--out", str(tmp_path / "scored.csv")])  # fmt: skip
    assert res.exit_code == 0, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("scored 39 rows") and "pairs/s on cpu" in line
    assert float(line.split("(")[1].split()[0].replace(",", "")) > 0
