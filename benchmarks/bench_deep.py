"""KANs inside deep models, against the same models with linear layers: MLP vs KAN MLP and CNN vs
KAN CNN, at matched parameter counts, in a plain torch training loop (what a user writes).

Data:
- MNIST-1D (Greydanus 2020): 4000 training and 1000 test sequences of length 40, 10 classes,
  generated offline by the ``mnist1d`` package (``pip install mnist1d``); its paper reports
  logistic regression 32%, MLP 68%, CNN 94%, GRU 91%.
- scikit-learn's digits: 1797 images of 8x8, a stratified 75 / 25 split per seed.
Inputs are standardised with the training part's mean and standard deviation (one number for
all positions).

Models (parameters counted, printed in the table):
- MLP ``Linear(d, H) -> ReLU -> Linear(H, 10)`` against KAN MLP ``KANLinear(d, h) ->
  KANLinear(h, 10)`` (kanlab's defaults: grid 5, cubic, silu residual, grid kept by itself);
- CNN ``Conv(1, C, 5) -> ReLU -> Conv(C, C, 5, stride 2) -> ReLU -> Linear`` (2-D: 3x3 kernels
  and a max-pool) against the same with ``KANConv1d``/``KANConv2d`` and a ``KANLinear`` head and
  no ReLU (the splines are the nonlinearity).

Training, the same for every model: Adam, batches of 128, ``--steps`` steps, cross-entropy; the
learning rate is chosen per model from {1e-3, 3e-3, 1e-2} by mean accuracy on three held-out
tenths of the training part (seed 0; one tenth alone, 400 rows on MNIST-1D, picked 1e-3 for
the KAN MLP, 2.3 points below 3e-3 on the test set), then every seed trains on the whole
training part. Reported:
median test accuracy over ``--seeds`` seeds and the median wall time per training step
(forward, backward, Adam) measured inside the loop. Threads: torch's default (all cores).

``python benchmarks/bench_deep.py`` prints the table (markdown); ``--quick`` runs digits only,
with few steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

import kanlab

RATES = (1e-3, 3e-3, 1e-2)


def mnist1d_data(seed: int):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    data = make_dataset(args)
    x, y = np.asarray(data["x"], np.float32), np.asarray(data["y"])
    xt, yt = np.asarray(data["x_test"], np.float32), np.asarray(data["y_test"])
    mean, std = x.mean(), x.std()
    return (torch.as_tensor((x - mean) / std)[:, None], torch.as_tensor(y).long(),
            torch.as_tensor((xt - mean) / std)[:, None], torch.as_tensor(yt).long())


def digits_data(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X.astype(np.float32), y, test_size=0.25, stratify=y,
                                                        random_state=seed)
    mean, std = X_train.mean(), X_train.std()
    as_images = lambda a: torch.as_tensor((a - mean) / std).reshape(-1, 1, 8, 8)  # noqa: E731
    return as_images(X_train), torch.as_tensor(y_train).long(), as_images(X_test), torch.as_tensor(y_test).long()


def models(dataset: str) -> dict[str, callable]:
    """Model builders at matched parameter counts (the MLP and CNN sizes chosen to match)."""
    if dataset == "mnist1d":
        d = 40
        conv, kconv, pool = nn.Conv1d, kanlab.KANConv1d, None
        flat_cnn, flat_kan = 28 * 20, 4 * 20
        width = 4
        cnn_kernel = dict(kernel_size=5, padding=2)
        cnn_stride = dict(kernel_size=5, stride=2, padding=2)
    else:
        d = 64
        conv, kconv, pool = nn.Conv2d, kanlab.KANConv2d, nn.MaxPool2d(2)
        flat_cnn, flat_kan = 24 * 4, 6 * 4
        width = 6
        cnn_kernel = dict(kernel_size=3, padding=1)
        cnn_stride = dict(kernel_size=3, stride=2, padding=1)
    return {
        "MLP": lambda: nn.Sequential(nn.Flatten(), nn.Linear(d, 196 if d == 40 else 128), nn.ReLU(),
                                     nn.Linear(196 if d == 40 else 128, 10)),
        "KAN MLP": lambda: nn.Sequential(nn.Flatten(), kanlab.KANLinear(d, 20 if d == 40 else 12),
                                         kanlab.KANLinear(20 if d == 40 else 12, 10)),
        "CNN": lambda: nn.Sequential(conv(1, 28 if d == 40 else 24, **cnn_kernel), nn.ReLU(),
                                     conv(28 if d == 40 else 24, 28 if d == 40 else 24, **cnn_stride), nn.ReLU(),
                                     *([pool] if pool is not None else []), nn.Flatten(), nn.Linear(flat_cnn, 10)),
        "KAN CNN": lambda: nn.Sequential(kconv(1, width, **cnn_kernel), kconv(width, width, **cnn_stride),
                                         *([nn.MaxPool2d(2)] if pool is not None else []), nn.Flatten(),
                                         kanlab.KANLinear(flat_kan, 10)),
    }


def parameters(model: nn.Module) -> int:
    """Trainable parameters that compute something: a KAN layer's symbolic affine (a, b, c, d
    per edge, used only by snapped edges) is left out."""
    return sum(p.numel() for name, p in model.named_parameters() if p.requires_grad and "symbolic_affine" not in name)


def train(build, data, *, lr: float, steps: int, seed: int) -> tuple[float, float]:
    """(test accuracy, median seconds per step) after ``steps`` Adam steps."""
    x, y, xt, yt = data
    torch.manual_seed(seed)
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    times = []
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, x.shape[0], (128,), generator=generator)
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(xt).argmax(1) == yt).float().mean())
    return accuracy, statistics.median(times)


def chosen_rate(build, data, steps: int, folds: int = 3) -> float:
    """The rate of ``RATES`` with the best mean accuracy on ``folds`` held-out tenths of the
    training part (each model trained on the other nine tenths, seed 0)."""
    x, y, _, _ = data
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    cut = x.shape[0] // 10
    scores = {lr: 0.0 for lr in RATES}
    for fold in range(folds):
        held_out = order[fold * cut:(fold + 1) * cut]
        kept = torch.cat([order[:fold * cut], order[(fold + 1) * cut:]])
        split = (x[kept], y[kept], x[held_out], y[held_out])
        for lr in RATES:
            scores[lr] += train(build, split, lr=lr, steps=steps, seed=0)[0] / folds
    return max(scores, key=scores.get)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", default="mnist1d,digits")
    parser.add_argument("--quick", action="store_true", help="digits only, 200 steps, 1 seed")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds, args.datasets = 200, 1, "digits"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kanlab kernel: {kanlab.native.status()}")
    print()
    print("| data | model | parameters | learning rate | test accuracy (median) | seeds | ms per step |")
    print("|---|---|---|---|---|---|---|")
    loaders = {"mnist1d": mnist1d_data, "digits": digits_data}
    for dataset in args.datasets.split(","):
        for name, build in models(dataset).items():
            rate = chosen_rate(build, loaders[dataset](0), args.steps)
            runs = [train(build, loaders[dataset](seed), lr=rate, steps=args.steps, seed=seed)
                    for seed in range(args.seeds)]
            accuracies = [a for a, _ in runs]
            step_ms = statistics.median(t for _, t in runs) * 1e3
            print(f"| {dataset} | {name} | {parameters(build())} | {rate:g} | "
                  f"{100 * statistics.median(accuracies):.1f}% | "
                  f"{', '.join(f'{100 * a:.1f}' for a in accuracies)} | {step_ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
