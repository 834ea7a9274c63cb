"""Benchmark: fine-tuning throughput and MFU on one GPU: tailguard's loop (eager / compiled) vs HF `Trainer`.

    python bench/train_gpu.py --out OUTDIR                   # on the GPU: every row below
    python bench/train_gpu.py --tiny --device cpu --out DIR  # smoke test of every row on a CPU (tiny models)

Rows (each a fresh random-init BERT of that shape saved as a local base folder: throughput does not depend on
the weights, so no checkpoint has to travel to the device):
  bert-base  12 x 768, seq 128, batch 128, bf16 autocast: every pair fills 128 tokens (fixed FLOPs/sample);
             tailguard eager (today's defaults), then `compile=True`.
  minilm-l6  6 x 384 (all-MiniLM-L6-v2's shape), seq 48, batch 128, pairs of realistic ragged length:
             tailguard eager, tailguard compile + length bucketing, and HF `Trainer` (bf16, fused AdamW,
             dynamic padding) on the same rows.
samples/s is the steady state: from the end of the 3rd optimizer step to the end of the loop (compiling and
warm-up excluded; same rule for `Trainer`, through a callback).

MFU (model FLOPs utilisation) follows the PaLM paper (Chowdhery et al. 2022, appendix B): training costs
    6 * N * T + 12 * L * H * T * S   FLOPs per sample
(N non-embedding parameters, T real tokens of the sample, L layers, H hidden, S the padded length its
attention ran over; pad tokens count as waste, not work), inference 2 * N * T + 4 * L * H * T * S. MFU is
achieved model FLOP/s over the card's dense bf16 peak (PEAK_BF16_TFLOPS, vendor datasheets, no sparsity;
H200 = 989 TFLOP/s). Writes train_gpu.md (the table), train_gpu.json and profile_train.txt (torch.profiler:
top ops by device time of a few bert-base steps) under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
SHAPES = {  # name: (hidden, layers, heads)
    "bert-base": (768, 12, 12),
    "minilm-l6": (384, 6, 12),
    "tiny": (64, 2, 2),
}


def peak_tflops(device: str, override: float = 0.0) -> float | None:
    """The card's dense bf16 peak in TFLOP/s, from `override` or the table by device name; None on a CPU."""
    if override:
        return override
    if device != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def pairs_frame(rows: int, words: tuple[int, int], seed: int = 0) -> pd.DataFrame:
    """Synthetic (query, item_title, label) rows with words per side drawn uniformly from `words`."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(5000)])

    def text() -> str:
        return " ".join(rng.choice(vocab, int(rng.integers(words[0], words[1] + 1))))

    return pd.DataFrame(
        {"query": [text() for _ in range(rows)], "item_title": [text() for _ in range(rows)],
         "label": rng.integers(0, 2, rows)}
    )  # fmt: skip


def make_base(folder: Path, df: pd.DataFrame, shape: str, max_length: int) -> dict:
    """A random-init BERT of `shape` saved as a Hugging Face folder; returns its size facts for MFU."""
    from transformers import BertConfig, BertForSequenceClassification

    hidden, layers, heads = SHAPES[shape]
    M._quiet_transformers()
    tokenizer = M._train_wordpiece(pd.concat([df["query"], df["item_title"]]).tolist(), vocab_size=30522)
    config = BertConfig(vocab_size=max(len(tokenizer), 30522), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden,
                        max_position_embeddings=max(512, max_length), num_labels=1)  # fmt: skip
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return {
        "params": sum(p.numel() for p in model.parameters()) - embedding,
        "layers": layers,
        "hidden": hidden,
    }


def token_stats(base: Path, df: pd.DataFrame, max_length: int) -> tuple[float, float]:
    """(mean real tokens per pair, mean squared length) after truncation to max_length."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    lengths = M._encode(tok, df, max_length)["lengths"].double()
    return float(lengths.mean()), float((lengths**2).mean())


def train_flops(size: dict, tokens: float, tokens_sq: float) -> float:
    """PaLM (appendix B) training FLOPs per sample: 6 N T + 12 L H T S, with T*S averaged as E[len^2]."""
    return 6 * size["params"] * tokens + 12 * size["layers"] * size["hidden"] * tokens_sq


def run_tailguard(df: pd.DataFrame, base: Path, args, work: Path, **options) -> dict:
    """One tailguard.model.train call; steady-state samples/s and the pad share of its batches."""
    config = M.TrainConfig(base=str(base), epochs=1, max_steps=args.steps, batch_size=args.batch, lr=5e-5,
                           max_length=args.seq, device=args.device, bf16=True, valid_fraction=0.0,
                           progress=False, tensorboard=False, warmup_ratio=0.1,
                           threads=1 if args.device == "cpu" else 0, **options)  # fmt: skip
    start = time.perf_counter()
    result = M.train(df, config, work / f"out-{time.monotonic_ns()}")
    return {"samples_per_s": result.steady_samples_per_s, "loop_samples_per_s": result.samples_per_s,
            "pad_share": result.pad_share, "compiled": result.compiled, "steps": result.steps,
            "call_s": time.perf_counter() - start}  # fmt: skip


def run_hf_trainer(df: pd.DataFrame, base: Path, args, work: Path) -> dict:
    """HF Trainer on the same rows: bf16 on CUDA, fused AdamW, dynamic padding, same batch, lr and steps."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(base)
    enc = tok(df["query"].tolist(), df["item_title"].tolist(), truncation=True, max_length=args.seq)
    labels = df["label"].astype("float32").tolist()  # a list of dicts is a Dataset to Trainer (no `datasets`)
    data = [{**{k: v[i] for k, v in enc.items()}, "labels": labels[i]} for i in range(len(df))]
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    marks: dict[str, tuple[float, int]] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if state.global_step in (3, args.steps):
                if args.device == "cuda":
                    torch.cuda.synchronize()
                marks[str(state.global_step)] = (time.perf_counter(), state.global_step)

    targs = TrainingArguments(output_dir=str(work / "hf"), per_device_train_batch_size=args.batch,
                              max_steps=args.steps, learning_rate=5e-5, warmup_steps=max(1, args.steps // 10),
                              weight_decay=0.01,
                              bf16=args.device == "cuda", use_cpu=args.device == "cpu",
                              optim="adamw_torch_fused",
                              logging_steps=10**6, save_strategy="no", report_to=[], disable_tqdm=True,
                              dataloader_num_workers=2 if args.device == "cuda" else 0, seed=0)  # fmt: skip
    trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=DataCollatorWithPadding(tok),
                      callbacks=[Clock()])  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    (t0, s0), (t1, s1) = marks["3"], marks[str(args.steps)]
    return {"samples_per_s": (s1 - s0) * args.batch / (t1 - t0), "call_s": time.perf_counter() - start,
            "steps": s1, "compiled": False, "pad_share": None}  # fmt: skip


def profile_steps(base: Path, df: pd.DataFrame, args, out: Path, steps: int = 5) -> None:
    """torch.profiler over a few train steps as tailguard runs them (bf16 autocast, fused AdamW)."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = torch.device(args.device)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).to(device).train()
    enc = M._encode(AutoTokenizer.from_pretrained(base), df.head(args.batch), args.seq)
    inputs = M._batch(enc, torch.arange(len(df.head(args.batch))), device)
    labels = torch.tensor(df["label"].head(args.batch).to_numpy(np.float32), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)

    def step() -> None:
        with M._autocast(device, True):
            logits = model(**inputs).logits.squeeze(-1)
        torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    key = "cuda_time_total" if cuda else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=25)
    head = f"torch.profiler, {steps} train steps, batch {args.batch}, seq {args.seq}, sorted by {key}"
    out.write_text(f"{head}\n{table}\n")


def versions(device: str) -> str:
    import transformers

    card = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    return (f"{time.strftime('%Y-%m-%d')}; {card}; python {platform.python_version()}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="Tiny models and few steps: a smoke test.")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=60, help="Optimizer steps per row (3 of them warm-up).")
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend ('eager' on CPU)."
    )
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="Override the card's bf16 peak.")
    parser.add_argument("--skip-hf", action="store_true", help="Leave out the HF Trainer row.")
    parser.add_argument("--out", type=Path, default=Path("."), help="Folder for the table, JSON and profile.")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run on the gpu pool, or pass --tiny --device cpu for a smoke test")
    args.out.mkdir(parents=True, exist_ok=True)
    peak = peak_tflops(args.device, args.peak_tflops)
    steps = 6 if args.tiny else args.steps
    plan = [  # (model, seq, batch, words per side)
        ("bert-base", 128, 128, (128, 128)),
        ("minilm-l6", 48, 128, (2, 30)),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, seq, batch, words in plan:
            shape, seq, batch = ("tiny", 32, 16) if args.tiny else (name, seq, batch)
            a = argparse.Namespace(**{**vars(args), "seq": seq, "batch": batch, "steps": steps})
            df = pairs_frame(batch * steps, words if not args.tiny else (2, 16))
            base = Path(tmp) / name
            size = make_base(base, df, shape, seq)
            tokens, tokens_sq = token_stats(base, df, seq)
            variants = [
                ("tailguard eager", {}),
                ("tailguard compile", {"compile": True, "compile_backend": args.compile_backend}),
            ]
            if name == "minilm-l6":
                variants[1] = (
                    "tailguard compile + length bucketing",
                    {**variants[1][1], "length_bucketing": True, "bucket_batches": 50},
                )
            for label, options in variants:
                rows.append(
                    {"model": name, "runner": label, **run_tailguard(df, base, a, Path(tmp), **options)}
                )
                rows[-1].update(
                    seq=seq, batch=batch, tokens=tokens, flops=train_flops(size, tokens, tokens_sq)
                )
                print(json.dumps(rows[-1]), flush=True)
            if name == "minilm-l6" and not args.skip_hf:
                rows.append({"model": name, "runner": "HF Trainer", **run_hf_trainer(df, base, a, Path(tmp))})
                rows[-1].update(
                    seq=seq, batch=batch, tokens=tokens, flops=train_flops(size, tokens, tokens_sq)
                )
                print(json.dumps(rows[-1]), flush=True)
            if name == "bert-base":
                profile_steps(base, df, a, args.out / "profile_train.txt")
    for row in rows:
        achieved = row["samples_per_s"] * row["flops"]
        row["tflops"] = achieved / 1e12
        row["mfu"] = achieved / (peak * 1e12) if peak else None
    write_table(rows, args, peak)


def write_table(rows: list[dict], args, peak: float | None) -> None:
    """train_gpu.md (markdown table with date, card and versions) and train_gpu.json under args.out."""
    hf = {r["model"]: r["samples_per_s"] for r in rows if r["runner"] == "HF Trainer"}
    lines = [f"Training ({versions(args.device)}); `{' '.join(sys.argv)}`", "",
             "| model | runner | seq | batch | real tokens/sample | pad share | samples/s | vs HF Trainer "
             "| model TFLOP/s | MFU |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ratio = f"{r['samples_per_s'] / hf[r['model']]:.2f}x" if r["model"] in hf else "-"
        pad = f"{r['pad_share']:.1%}" if r["pad_share"] is not None else "-"
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "- (no GPU peak)"
        compiled = "" if r["compiled"] or "compile" not in r["runner"] else " (compile FAILED: ran eager)"
        lines.append(f"| {r['model']} | {r['runner']}{compiled} | {r['seq']} | {r['batch']} "
                     f"| {r['tokens']:.1f} | {pad} | {r['samples_per_s']:,.0f} | {ratio} | {r['tflops']:.2f} "
                     f"| {mfu} |")  # fmt: skip
    lines += ["", f"MFU = samples/s x (6 N T + 12 L H T S) / peak (PaLM, appendix B); peak "
              f"{peak or 0:.0f} TFLOP/s dense bf16."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    (args.out / "train_gpu.md").write_text(text)
    (args.out / "train_gpu.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
