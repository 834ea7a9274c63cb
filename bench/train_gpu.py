"""Benchmark: tailguard's training loop, bert-base-sized cross-encoder, bf16, one GPU: samples/s and MFU.

    .venv/bin/python bench/train_gpu.py                       # bert-base (12 x 768), seq 128, batch 128, bf16
    .venv/bin/python bench/train_gpu.py --tiny --device cpu   # smoke test of the same path on a CPU

The model is randomly initialised from a BertConfig (no download) and saved as a local base folder with a
WordPiece tokenizer, then fine-tuned through `tailguard.model.train` (the code the gpu pool runs). Every
pair fills the whole max_length, so each sample costs the same FLOPs:
    6 * N * S  (forward + backward through N non-embedding parameters per token)
  + 12 * L * H * S^2  (attention scores and weighted sums, forward + backward)
MFU = achieved FLOP/s / the card's dense bf16 peak (table below, or --peak-tflops).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from tailguard import model as M  # noqa: E402

# Dense bf16 tensor-core peaks (vendor datasheets, no sparsity), in TFLOP/s.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(device: str, override: float) -> float | None:
    """The card's dense bf16 peak, from --peak-tflops or the table by device name."""
    if override:
        return override
    if device != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def long_pairs(rows: int, words_per_side: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic pairs long enough to fill max_length, so the FLOPs per sample are known exactly."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(5000)])
    text = lambda: " ".join(rng.choice(vocab, words_per_side))  # noqa: E731
    return pd.DataFrame(
        {"query": [text() for _ in range(rows)], "item_title": [text() for _ in range(rows)],
         "label": rng.integers(0, 2, rows)}
    )  # fmt: skip


def make_base(folder: Path, df: pd.DataFrame, hidden: int, layers: int, heads: int, max_length: int) -> int:
    """A random-init BERT of the given size saved as a Hugging Face folder; returns non-embedding params."""
    from transformers import BertConfig, BertForSequenceClassification

    M._quiet_transformers()
    tokenizer = M._train_wordpiece(pd.concat([df["query"], df["item_title"]]).tolist(), vocab_size=30522)
    config = BertConfig(vocab_size=max(len(tokenizer), 30522), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden,
                        max_position_embeddings=max(512, max_length), num_labels=1)  # fmt: skip
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return sum(p.numel() for p in model.parameters()) - embedding


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="Hidden 64 x 2 layers, seq 32: a smoke test.")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--rows", type=int, default=0, help="Rows to train on (default: 60 batches).")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument(
        "--steps", type=int, default=60, help="Optimizer steps (the first epoch's warm-up counts)."
    )
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="Override the card's bf16 peak.")
    args = parser.parse_args()
    hidden, layers, heads = (64, 2, 2) if args.tiny else (768, 12, 12)
    max_length = 32 if args.tiny else args.max_length
    batch = 16 if args.tiny else args.batch_size
    steps = 5 if args.tiny else args.steps
    rows = args.rows or batch * steps
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run on the gpu pool, or pass --tiny --device cpu for a smoke test")

    df = long_pairs(rows, words_per_side=max_length)  # each word is >= 1 token: every pair is truncated to S
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        params = make_base(base, df, hidden, layers, heads, max_length)
        config = M.TrainConfig(base=str(base), epochs=1, max_steps=steps, batch_size=batch, lr=5e-5,
                               max_length=max_length, device=args.device, bf16=True, valid_fraction=0.0,
                               progress=False, tensorboard=False, warmup_ratio=0.1,
                               threads=1 if args.device == "cpu" else 0)  # fmt: skip
        # a short untimed run first: CUDA context, cuBLAS autotuning and allocator warm-up
        M.train(df.head(batch * 3), config.model_copy(update={"max_steps": 3}), Path(tmp) / "warm")
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = M.train(df, config, Path(tmp) / "out")
        wall = time.perf_counter() - start
    flops_per_sample = 6 * params * max_length + 12 * layers * hidden * max_length**2
    achieved = result.samples_per_s * flops_per_sample
    peak = peak_tflops(args.device, args.peak_tflops)
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"device {device_name}; BERT {layers} x {hidden} ({params / 1e6:.1f}M non-embedding params), "
          f"seq {max_length}, batch {batch}, bf16 autocast {args.device == 'cuda'}")  # fmt: skip
    print(f"steps {result.steps}, loop samples/s {result.samples_per_s:,.1f}, call {wall:.1f} s")
    print(f"model TFLOP/s {achieved / 1e12:.2f}", end="")
    print(f", MFU {100 * achieved / (peak * 1e12):.1f}% of {peak:.0f} TFLOP/s bf16 peak" if peak else "")


if __name__ == "__main__":
    main()
