"""python -m fastconv demo: trains LeNet-5 built from fastconv layers on scikit-learn's 8x8 handwritten
digits (upscaled to 32x32, the input size of LeNet-5), then the same model built from torch.nn layers with
the same initial weights and the same batches, and prints test accuracy and time per epoch of both.

The data ships inside scikit-learn (the `demo` extra: pip install "fastconv[demo]"); nothing is
downloaded. Everything runs on the CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch
import torch.nn.functional as F

from . import ops
from .nn import LeNet5

SPLIT_SEED = 0  # the train/test split is fixed, whatever --seed says
TEST_FRACTION = 0.25
IMAGE_SIZE = 32


class MissingExtra(RuntimeError):
    pass


def load_digits_32(test_fraction=TEST_FRACTION):
    """The 1797 scikit-learn digits as float32 tensors (N, 1, 32, 32) scaled to [0, 1], bilinearly
    upscaled from 8x8, split once with a fixed seed (stratified): (x_train, y_train, x_test, y_test)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise MissingExtra(
            "the demo needs scikit-learn for its handwritten digits data set; install the 'demo' extra: "
            "pip install 'fastconv[demo]'  (or: pip install scikit-learn)"
        ) from error
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=test_fraction, random_state=SPLIT_SEED,
        stratify=labels.numpy(),
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


@dataclasses.dataclass
class Result:
    name: str
    accuracy: float  # on the test set, after the last epoch
    epoch_seconds: list[float]
    losses: list[float]  # mean training loss per epoch

    @property
    def seconds_per_epoch(self):
        return sum(self.epoch_seconds) / len(self.epoch_seconds)


@torch.no_grad()
def evaluate(model, x, y, batch_size=512):
    model.eval()
    correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(y), batch_size))
    return correct / len(y)


def train(name, model, data, *, epochs, batch_size, lr, seed, progress=True):
    """Trains with Adam on mini-batches drawn by a generator seeded with `seed` (so two models see the
    same batches), timing each epoch; returns a Result with the final test accuracy."""
    from tqdm import tqdm

    x_train, y_train, x_test, y_test = data
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    steps = (len(y_train) + batch_size - 1) // batch_size
    epoch_seconds, losses = [], []
    with tqdm(total=epochs * steps, desc=f"{name:<20}", unit="batch", disable=not progress,
              file=sys.stderr, leave=True) as bar:
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(y_train), generator=generator)
            total = 0.0
            start = time.perf_counter()
            for i in range(0, len(order), batch_size):
                batch = order[i:i + batch_size]
                loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
            epoch_seconds.append(time.perf_counter() - start)
            losses.append(total / len(order))
    return Result(name, evaluate(model, x_test, y_test), epoch_seconds, losses)


def run(*, epochs=10, batch_size=32, lr=2e-3, algorithm="auto", seed=0, compare_torch=True, train_limit=None,
        progress=True):
    """Trains LeNet-5 from fastconv layers and (when compare_torch) from torch.nn layers, from the same
    initial weights on the same batches; returns the list of Results. train_limit keeps only the first
    that many training samples (for quick runs)."""
    ops._check_algorithm(algorithm)
    data = load_digits_32()
    if train_limit is not None:
        data = (data[0][:train_limit], data[1][:train_limit], data[2], data[3])
    torch.manual_seed(seed)
    fast = LeNet5(10, layers="fastconv", algorithm=algorithm)
    initial = {k: v.clone() for k, v in fast.state_dict().items()}
    settings = dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress)
    results = [train(f"fastconv ({algorithm})", fast, data, **settings)]
    if compare_torch:
        reference = LeNet5(10, layers="torch")
        reference.load_state_dict(initial)
        results.append(train("torch.nn", reference, data, **settings))
    return results


def format_table(results):
    rows = [("model", "test accuracy", "time / epoch", "final train loss")]
    rows += [(r.name, f"{100 * r.accuracy:.2f} %", f"{r.seconds_per_epoch:.3f} s", f"{r.losses[-1]:.4f}")
             for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastconv demo",
        description="Train LeNet-5 on scikit-learn's handwritten digits (8x8 upscaled to 32x32) with fastconv "
                    "layers, then with torch.nn layers from the same initial weights, and compare.",
    )
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default 32)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3)")
    parser.add_argument("--algorithm", default="auto", choices=ops.ALGORITHMS,
                        help="fastconv convolution algorithm (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches")
    parser.add_argument("--no-torch", action="store_true", help="skip the comparison with torch.nn layers")
    parser.add_argument("--train-limit", type=int, default=None, metavar="N",
                        help="train on the first N training samples only (quick runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be positive")
    try:
        results = run(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, algorithm=args.algorithm,
                      seed=args.seed, compare_torch=not args.no_torch, train_limit=args.train_limit,
                      progress=not args.no_progress)
    except MissingExtra as error:
        print(f"fastconv demo: {error}", file=sys.stderr)
        return 1
    print(f"LeNet-5 on scikit-learn digits (8x8 -> 32x32), {args.epochs} epoch(s), batch {args.batch_size}, "
          f"Adam lr {args.lr:g}, seed {args.seed}, {torch.get_num_threads()} thread(s)")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
