"""Benchmark: tailguard's training loop vs Hugging Face `Trainer` on the same tiny model, data and settings.

    .venv/bin/python bench/train.py --rows 4000 --threads 1 --batch-size 64 --repeats 3

Both sides start from the same initial weights of the tiny BERT (hidden 64, 2 layers), train the same
pre-tokenized demo pairs for the same epochs with AdamW, linear warmup/decay, grad-norm clipping and BCE,
and run in this one process with the same torch thread count, alternating so load from other processes
hits both alike. `wall samples/s` is rows trained / wall seconds of the training loop (tailguard: its own
timer; Trainer: `train_runtime`). `cpu samples/s` divides by the process CPU time instead (tailguard: its
loop; Trainer: the whole `trainer.train()` call), which other processes on shared cores barely disturb;
with one thread it approximates the idle-machine speed. Medians over repeats; target ratio >= 1.1.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from tailguard import model as M  # noqa: E402
from tailguard.demo import DemoConfig, generate_batches  # noqa: E402


def demo_frame(rows: int, seed: int) -> pd.DataFrame:
    """Demo pairs (long-tail catalogue, English and Chinese) as the retrain flow would see them."""
    folder = Path(tempfile.mkdtemp(prefix="bench-train-"))
    return pd.read_parquet(
        generate_batches(DemoConfig(rows=rows, batches=1, seed=seed), folder, "parquet")[0]
    )


def run_tailguard(df: pd.DataFrame, config: M.TrainConfig, out: Path) -> tuple[float, float]:
    """(samples/s of wall time, samples/s of process CPU time) inside tailguard's training loop."""
    result = M.train(df, config, out)
    return result.samples_per_s, len(df) * config.epochs / result.cpu_seconds


def run_trainer(df: pd.DataFrame, config: M.TrainConfig, model, tokenizer, out: Path) -> tuple[float, float]:
    """(samples/s of wall time, of CPU time) of transformers.Trainer on the same model, data and settings."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    enc = tokenizer(df["query"].astype(str).tolist(), df["item_title"].astype(str).tolist(), truncation=True,
                    max_length=config.max_length)  # fmt: skip
    labels = df["label"].astype("float32").tolist()

    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int) -> dict:
            return {
                **{k: enc[k][i] for k in ("input_ids", "attention_mask", "token_type_ids")},
                "labels": labels[i],
            }

    steps = config.epochs * -(-len(df) // config.batch_size)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=config.batch_size, num_train_epochs=config.epochs,
        learning_rate=config.peak_lr(), weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        warmup_steps=int(steps * config.warmup_ratio), lr_scheduler_type="linear", use_cpu=True,
        save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        seed=config.seed,
    )  # fmt: skip

    def bce(outputs, targets, num_items_in_batch=None):
        return torch.nn.functional.binary_cross_entropy_with_logits(
            outputs.logits.squeeze(-1), targets.float()
        )

    collator = DataCollatorWithPadding(tokenizer)
    trainer = Trainer(
        model=model, args=args, train_dataset=Pairs(), data_collator=collator, compute_loss_func=bce
    )
    cpu_start = time.process_time()
    metrics = trainer.train().metrics
    cpu = time.process_time() - cpu_start
    return metrics["train_samples_per_second"], len(df) * config.epochs / cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=4000, help="Demo rows to train on.")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for both sides (0: torch default)."
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="Alternating runs per side; the median is shown."
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    df = demo_frame(args.rows, seed=0)
    config = M.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, threads=args.threads,
                           valid_fraction=0.0, progress=False, tensorboard=False)  # fmt: skip
    model, tokenizer, _ = M.build_model(config, df)
    ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        # one short untimed run per side first: the first training in a process pays one-off allocation
        warm = config.model_copy(update={"max_steps": 5})
        run_tailguard(df.head(640), warm, Path(tmp) / "warm-tg")
        run_trainer(df.head(640), warm.model_copy(update={"epochs": 1}), copy.deepcopy(model), tokenizer,
                    Path(tmp) / "warm-hf")  # fmt: skip
        for r in range(args.repeats):
            sps, cpu = run_tailguard(df, config, Path(tmp) / f"tg{r}")
            ours.append(sps)
            ours_cpu.append(cpu)
            sps, cpu = run_trainer(df, config, copy.deepcopy(model), tokenizer, Path(tmp) / f"hf{r}")
            theirs.append(sps)
            theirs_cpu.append(cpu)
            print(f"repeat {r + 1}: tailguard {ours[-1]:,.0f}/s (cpu {ours_cpu[-1]:,.0f}/s)  "
                  f"Trainer {theirs[-1]:,.0f}/s (cpu {theirs_cpu[-1]:,.0f}/s)", flush=True)  # fmt: skip
    print(
        f"\nrows {len(df)}, epochs {args.epochs}, batch {args.batch_size}, "
        f"threads {torch.get_num_threads()}, "
        f"tiny BERT {config.tiny_layers} x {config.tiny_hidden}, max_length {config.max_length}"
    )
    print(f"{'':12}{'wall samples/s':>16}{'cpu samples/s':>16}")
    for name, sps, cpu in (("tailguard", ours, ours_cpu), ("HF Trainer", theirs, theirs_cpu)):
        print(f"{name:12}{statistics.median(sps):>16,.0f}{statistics.median(cpu):>16,.0f}")
    wall_ratio = statistics.median(ours) / statistics.median(theirs)
    cpu_ratio = statistics.median(ours_cpu) / statistics.median(theirs_cpu)
    print(f"ratio tailguard / Trainer: wall {wall_ratio:.2f}, cpu {cpu_ratio:.2f} (target >= 1.1)")


if __name__ == "__main__":
    main()
