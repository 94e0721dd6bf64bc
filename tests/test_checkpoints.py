"""Periodic checkpoints, resume == uninterrupted, and the TensorBoard callback."""

import pytest
import torch

import kanlab


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 2, generator=g, dtype=torch.float64) * 2 - 1
    return x, torch.sin(torch.pi * x[:, :1]) + x[:, 1:] ** 2


@pytest.mark.parametrize("opt,batch", [("LBFGS", -1), ("Adam", 32)])
def test_resume_equals_uninterrupted(tmp_path, opt, batch):
    x, y = _data()
    options = dict(opt=opt, steps=12, batch=batch, lr=1.0 if opt == "LBFGS" else 0.01, lamb=1e-3, log=1, progress=False)
    whole = kanlab.KAN([2, 3, 1], grid=5, seed=0, dtype=torch.float64)
    expected = whole.fit((x, y), **options)

    path = tmp_path / "run.ckpt"
    first = kanlab.KAN([2, 3, 1], grid=5, seed=0, dtype=torch.float64)
    first.fit((x, y), **options, checkpoint=path, checkpoint_every=5, callbacks=[lambda step, m, h: step == 7])
    second = kanlab.KAN([2, 3, 1], grid=5, seed=0, dtype=torch.float64)  # a fresh process's model
    resumed = second.fit((x, y), **options, resume=path)  # continues from step 5
    for (name, a), b in zip(whole.state_dict().items(), second.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert resumed["step"] == expected["step"] and resumed["train_loss"] == expected["train_loss"]


def test_checkpoint_arguments_are_checked(tmp_path):
    x, y = _data()
    model = kanlab.KAN([2, 1], grid=3, dtype=torch.float64)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint"):
        model.fit((x, y), steps=1, checkpoint_every=2)
    with pytest.raises(FileNotFoundError, match="resume"):
        model.fit((x, y), steps=1, resume=tmp_path / "none.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable kanlab checkpoint"):
        model.fit((x, y), steps=1, resume=tmp_path / "bad.ckpt")


def test_tensorboard_logger_writes_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kanlab.callbacks import TensorBoardLogger

    x, y = _data()
    logger = TensorBoardLogger(tmp_path / "runs")
    kanlab.KAN([2, 1], grid=3, dtype=torch.float64).fit((x, y), steps=4, log=2, callbacks=[logger], progress=False)
    logger.close()
    events = EventAccumulator(str(tmp_path / "runs"))
    events.Reload()
    steps = [event.step for event in events.Scalars("fit/train_loss")]
    assert steps == [2, 4] and "fit/objective" in events.Tags()["scalars"]
