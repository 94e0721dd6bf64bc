"""save / load: bit-identical round trips, atomic writes, clear errors for bad files."""

import os

import pytest
import torch

from kanlab import KAN, ModelFileError


def _trained():
    model = KAN([2, [2, 1], 1], grid=4, dtype=torch.float64, seed=2)
    x = torch.rand(50, 2, dtype=torch.float64) * 2 - 1
    model.fit((x, x[:, :1] * x[:, 1:]), steps=2, progress=False)
    return model, x


def test_round_trip_is_bit_identical(tmp_path):
    model, x = _trained()
    model.save(tmp_path / "m.kan")
    loaded = KAN.load(tmp_path / "m.kan")
    assert torch.equal(loaded(x), model(x))
    assert loaded.config() == model.config() and torch.equal(loaded.sample_input, model.sample_input)
    refined = model.refine(9)
    refined.save(tmp_path / "r.kan")
    assert torch.equal(KAN.load(tmp_path / "r.kan")(x), refined(x))


def test_interrupted_save_keeps_the_earlier_file(tmp_path, monkeypatch):
    model, _ = _trained()
    target = tmp_path / "m.kan"
    model.save(target)
    before = target.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        KAN([2, 3, 1]).save(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.kan"]  # no temporary left behind


def test_bad_files_raise_clear_errors(tmp_path):
    model, _ = _trained()
    good = tmp_path / "m.kan"
    model.save(good)
    truncated = tmp_path / "t.kan"
    truncated.write_bytes(good.read_bytes()[:-40])
    garbage = tmp_path / "g.kan"
    garbage.write_bytes(b"hello, this is not a model at all")
    from safetensors.torch import save_file

    foreign = tmp_path / "f.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    for path in (truncated, garbage, foreign):
        with pytest.raises(ModelFileError, match="kanlab model"):
            KAN.load(path)
    with pytest.raises(FileNotFoundError, match="no model file"):
        KAN.load(tmp_path / "missing.kan")


def test_custom_base_function_needs_to_be_given_back(tmp_path):
    model = KAN([1, 1], base_fun=torch.sin)
    model.save(tmp_path / "c.kan")
    with pytest.raises(ValueError, match="base_fun"):
        KAN.load(tmp_path / "c.kan")
    x = torch.rand(4, 1)
    assert torch.equal(KAN.load(tmp_path / "c.kan", base_fun=torch.sin)(x), model(x))
