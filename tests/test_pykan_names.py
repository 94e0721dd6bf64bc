"""pykan's names mean pykan's behaviour: in place where pykan works in place, and pykan's
keywords that kanlab does not take get an error naming the kanlab equivalent."""

import pytest
import torch

import kanlab


def _data():
    x = torch.rand(64, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return x, x[:, :1] * x[:, 1:]


@pytest.mark.parametrize("keyword, hint", [
    ("auto_save", "model.save"), ("sparse_init", "no equivalent"), ("ckpt_path", "model.save"),
    ("symbolic_enabled", "nothing to switch"), ("save_act", "edge_activations"),
])
def test_constructor_keywords(keyword, hint):
    with pytest.raises(TypeError, match=f"pykan's keyword '{keyword}'.*{hint}"):
        kanlab.KAN([2, 1], **{keyword: True})


@pytest.mark.parametrize("keyword, hint", [
    ("save_fig", "model.plot"), ("singularity_avoiding", "no equivalent"), ("verbose", "logging"),
    ("img_folder", "model.plot"), ("display_metrics", "metrics="),
])
def test_fit_keywords(keyword, hint):
    model = kanlab.KAN([2, 1], grid=3)
    with pytest.raises(TypeError, match=f"pykan's keyword '{keyword}'.*{hint}"):
        model.fit(_data(), steps=1, **{keyword: True})


def test_other_methods_and_unknown_keywords():
    model = kanlab.KAN([2, 1], grid=3)
    model.fit(_data(), steps=1)
    with pytest.raises(TypeError, match="pykan's keyword 'verbose'.*logging"):
        model.auto_symbolic(verbose=1)
    with pytest.raises(TypeError, match="pykan's keyword 'log_history'"):
        model.prune(log_history=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        kanlab.KAN([2, 1], colour="red")
    with pytest.raises(NotImplementedError, match="unfix_symbolic_all"):
        model.perturb()
