"""create_dataset and the command line."""

import pytest
import torch

from kanlab import create_dataset
from kanlab.cli import main


def test_create_dataset_shapes_ranges_and_seed():
    data = create_dataset(lambda x: x[:, 0] * x[:, 1], n_var=2, ranges=[(0, 1), (2, 3)], train_num=50, test_num=20)
    assert data["train_input"].shape == (50, 2) and data["train_label"].shape == (50, 1)
    assert data["test_input"].shape == (20, 2)
    assert (data["train_input"][:, 1] >= 2).all() and (data["train_input"][:, 0] <= 1).all()
    again = create_dataset(lambda x: x[:, 0] * x[:, 1], n_var=2, ranges=[(0, 1), (2, 3)], train_num=50, test_num=20)
    assert torch.equal(again["train_input"], data["train_input"])
    state = torch.get_rng_state()
    normal = create_dataset(lambda x: x, n_var=3, normalize_input=True, normalize_label=True, dtype=torch.float64)
    assert torch.equal(state, torch.get_rng_state())
    torch.testing.assert_close(normal["train_input"].mean(0), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"f": lambda x: x[:, 0], "n_var": 0}, "n_var"),
        ({"f": lambda x: x[:, 0], "n_var": 2, "ranges": (1, 0)}, "ranges"),
        ({"f": lambda x: torch.log(x[:, 0] - 5), "n_var": 1}, "NaN"),
        ({"f": lambda x: x[:3], "n_var": 1}, "f must return"),
        ({"f": lambda x: x[:, 0], "n_var": 1, "train_num": 0}, "train_num"),
    ],
)
def test_create_dataset_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_dataset(**kwargs)


def test_cli_demo_runs_and_saves(tmp_path, capsys):
    assert main(["demo", "--steps", "3", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "test RMSE" in out and "formula" in out
    assert (tmp_path / "model.kan").exists() and (tmp_path / "kan.png").exists()


def test_cli_bad_input_is_one_line_error(capsys):
    assert main(["demo", "--grid", "0", "-o", "unused"]) == 2
    assert "error: grid" in capsys.readouterr().err
