"""fit with class labels, the way PyTorch users and pykan's tutorial write it: integer labels
(N,) with CrossEntropyLoss, 0/1 float labels with BCEWithLogitsLoss; the history reports the
loss function's own value and the accuracy."""

import math

import numpy as np
import pytest
import torch

import kanlab


def _blobs(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[-0.6, -0.5], [0.6, -0.4], [0.0, 0.6]])
    x = centres[labels] + 0.15 * torch.randn(n, 2, generator=g)
    return x, labels


@pytest.mark.parametrize("loss_fn", [torch.nn.CrossEntropyLoss(), None])
def test_integer_labels_with_cross_entropy(loss_fn):
    x, y = _blobs()
    data = {"train_input": x[:200], "train_label": y[:200], "test_input": x[200:], "test_label": y[200:]}
    model = kanlab.KAN([2, 3], grid=5, seed=0)
    history = model.fit(data, opt="Adam", lr=0.05, steps=60, loss_fn=loss_fn, update_grid=False)
    # the loss function's own value (cross-entropy), not an RMSE of logits against labels
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x[200:]), y[200:]).item()
        accuracy = (model(x[200:]).argmax(1) == y[200:]).float().mean().item()
    assert history["test_loss"][-1] == pytest.approx(expected, rel=1e-5)
    assert history["test_accuracy"][-1] == pytest.approx(accuracy)
    assert history["test_accuracy"][-1] > 0.95 and history["train_accuracy"][-1] > 0.95
    assert "train_rmse" not in history


def test_numpy_integer_labels_and_lbfgs():
    x, y = _blobs(seed=1)
    model = kanlab.KAN([2, 3], grid=3, seed=1, dtype=torch.float64)
    history = model.fit((x.double().numpy(), y.numpy().astype(np.int32)), steps=5,
                        loss_fn=torch.nn.CrossEntropyLoss())
    assert history["train_accuracy"][-1] > 0.95


def test_binary_float_labels_with_bce():
    x, y = _blobs(seed=2)
    target = (y == 2).float()
    model = kanlab.KAN([2, 1], grid=5, seed=0)
    history = model.fit((x, target), opt="Adam", lr=0.05, steps=60, loss_fn=torch.nn.BCEWithLogitsLoss())
    with torch.no_grad():
        expected = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target.unsqueeze(1)).item()
    assert history["train_loss"][-1] == pytest.approx(expected, rel=1e-5)
    assert history["train_accuracy"][-1] > 0.95


def test_custom_loss_on_numbers_reports_it_and_the_rmse():
    x, y = _blobs(seed=3)
    target = x[:, :1] ** 2
    model = kanlab.KAN([2, 1], grid=5, seed=0)
    history = model.fit((x, target), opt="Adam", lr=0.02, steps=5, loss_fn=torch.nn.L1Loss())
    with torch.no_grad():
        pred = model(x)
    assert history["train_loss"][-1] == pytest.approx((pred - target).abs().mean().item(), rel=1e-5)
    assert history["train_rmse"][-1] == pytest.approx(math.sqrt(((pred - target) ** 2).mean().item()), rel=1e-5)


def test_bad_class_labels_say_what_is_wrong():
    x, y = _blobs()
    model = kanlab.KAN([2, 3], grid=3, seed=0)
    with pytest.raises(ValueError, match=r"class indices outside \[0, 3\)"):
        model.fit((x, y + 1), steps=1)
    with pytest.raises(ValueError, match="must be \\(N,\\)"):
        model.fit((x, torch.stack([y, y], 1)), steps=1)


def test_integer_labels_from_a_dataloader():
    x, y = _blobs(seed=4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    model = kanlab.KAN([2, 3], grid=5, seed=0)
    history = model.fit(loader, opt="Adam", lr=0.05, steps=60, test=(x, y), update_grid=False)
    assert history["test_accuracy"][-1] > 0.95
