"""Benchmark: scoring throughput (pairs/s) of `tailguard.model.Scorer`, length-sorted vs input order.

    python bench/score_gpu.py --out OUTDIR                    # MiniLM-L6 shape, seq 48, on the GPU (bf16)
    python bench/score_gpu.py --tiny --device cpu --out DIR   # smoke test on a CPU (tiny model)

The model is a random-init BERT of all-MiniLM-L6-v2's shape (6 x 384; throughput does not depend on the
weights) saved as a tailguard model folder with max_length 48; the pairs have ragged lengths (2-30 words a
side). pairs/s is wall time of `Scorer.__call__` (tokenizing included) after one untimed warm-up call.
Inference MFU (PaLM, appendix B, forward only): 2 N T + 4 L H T S FLOPs per pair over the card's dense bf16
peak (bench/train_gpu.py's table; H200 = 989 TFLOP/s). Writes score_gpu.md and score_gpu.json under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from train_gpu import make_base, pairs_frame, peak_tflops, token_stats, versions  # noqa: E402

from tailguard import model as M  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="Tiny model, 2,000 pairs: a smoke test.")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--peak-tflops", type=float, default=0.0)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: pass --tiny --device cpu for a smoke test")
    args.out.mkdir(parents=True, exist_ok=True)
    shape, seq = ("tiny", 48) if args.tiny else ("minilm-l6", 48)
    n = 2_000 if args.tiny else args.pairs
    batch = 256 if args.tiny else args.batch_size
    if args.device == "cpu":
        torch.set_num_threads(1)
    df = pairs_frame(n, (2, 30), seed=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        size = make_base(folder, df.head(5000), shape, seq)
        (folder / M.TRAIN_META).write_text(json.dumps({"max_length": seq}))
        tokens, tokens_sq = token_stats(folder, df.head(20_000), seq)
        flops = 2 * size["params"] * tokens + 4 * size["layers"] * size["hidden"] * tokens_sq
        reference = None
        for sort in (False, True):
            scorer = M.Scorer(folder, batch_size=batch, sort_by_length=sort, device=args.device)
            scorer(df.head(batch * 4))  # warm-up: CUDA context, kernels, allocator
            scorer.pairs, scorer.seconds = 0, 0.0
            scores = scorer(df)
            if reference is None:
                reference = scores
            diff = float(np.abs(scores - reference).max())
            rows.append({"order": "length-sorted" if sort else "input order",
                         "pairs_per_s": scorer.pairs_per_s, "max_abs_diff_vs_input_order": diff,
                         "pairs": n, "batch": batch, "seq": seq,
                         "tokens": tokens, "flops": flops})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    peak = peak_tflops(args.device, args.peak_tflops)
    lines = [f"Scoring ({versions(args.device)}); `{' '.join(sys.argv)}`", "",
             "| model | order | seq | batch | pairs | pairs/s | max abs diff vs input order | MFU |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        mfu = f"{r['pairs_per_s'] * r['flops'] / (peak * 1e12):.1%}" if peak else "- (no GPU peak)"
        lines.append(f"| {shape} | {r['order']} | {seq} | {batch} | {n:,} | {r['pairs_per_s']:,.0f} "
                     f"| {r['max_abs_diff_vs_input_order']:.1e} | {mfu} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    (args.out / "score_gpu.md").write_text(text)
    (args.out / "score_gpu.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
