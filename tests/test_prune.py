"""Scores, attribution and pruning (kanlab.prune)."""

import copy

import pytest
import torch

import kanlab
from kanlab import KAN
from kanlab.prune import attribute, edge_scores, keep_nodes, remove_node


def _model(width, seed=0):
    model = KAN(width, seed=seed, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    model.remember_inputs(torch.rand(256, model.n_inputs, generator=generator, dtype=torch.float64) * 2 - 1)
    return model


@pytest.mark.parametrize("width, keep", [([3, 5, 4, 2], [None, [0, 2, 4], [1, 3], None]), ([2, [3, 2], 1], [None, [1, 3], None])])
def test_keep_nodes_equals_the_masked_model(width, keep):
    model = _model(width)
    masked = copy.deepcopy(model)
    for l, nodes in enumerate(keep):
        if nodes is not None:
            for node in set(range(model.width_in[l])) - set(nodes):
                remove_node(masked, l, node)
    smaller = keep_nodes(model, keep)
    assert smaller.width_in == [len(n) if n is not None else w for n, w in zip(keep, model.width_in)]
    x = torch.rand(64, model.n_inputs, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(smaller(x), masked(x), rtol=1e-12, atol=1e-12)
    assert smaller.layers[0].coef.shape[0] == smaller.layers[0].out_features
    assert model.width_in[1] == sum(model.width[1])  # the original is untouched


def test_prune_node_drops_dead_nodes_and_keeps_the_function():
    model = _model([2, 4, 1])
    for node in (1, 3):  # silence two hidden nodes: their incoming edges are zero
        with torch.no_grad():
            model.layers[0].mask[node] = 0.0
    x = torch.rand(64, 2, dtype=torch.float64) * 2 - 1
    masked = copy.deepcopy(model)
    for node in (1, 3):  # a dead node still sends phi(0) onwards: the masked model drops that too
        remove_node(masked, 1, node)
    for method in ("attribution", "l1"):
        pruned = kanlab.prune_node(model, 1e-2, method=method)
        assert pruned.width_in == [2, 2, 1], method
        torch.testing.assert_close(pruned(x), masked(x))
    pruned = model.prune()
    assert pruned.width_in == [2, 2, 1]
    with pytest.raises(ValueError, match="threshold"):
        model.prune_node(-1.0)


def test_prune_edge_masks_weak_edges_in_a_copy_and_the_method_in_place():
    model = _model([2, 3, 1])
    with torch.no_grad():
        model.layers[0].coef[2, 1] *= 1e-6
        model.layers[0].scale_base[2, 1] = 0.0
    pruned = kanlab.prune_edge(model, 1e-3)  # the function: a masked copy
    assert pruned.layers[0].mask[2, 1] == 0 and pruned.layers[0].mask.sum() == 5
    assert model.layers[0].mask.sum() == 6
    assert model.prune_edge(1e-3) is model  # the method, as pykan's: in place
    assert model.layers[0].mask[2, 1] == 0 and model.layers[0].mask.sum() == 5


def test_prune_input_keeps_taking_full_width_inputs(tmp_path):
    model = _model([4, 3, 1])
    with torch.no_grad():
        model.layers[0].mask[:, 2] = 0.0
    pruned = model.prune_input()
    assert pruned.input_index.tolist() == [0, 1, 3] and pruned.width_in[0] == 3 and pruned.n_inputs == 4
    x = torch.rand(32, 4, dtype=torch.float64)
    torch.testing.assert_close(pruned(x), model(x))
    again = pruned.prune_input(active=[0, 3])  # columns of the full input
    assert again.input_index.tolist() == [0, 3]
    torch.testing.assert_close(again.feature_score()[[1, 2]], torch.zeros(2, dtype=torch.float64))
    pruned.save(tmp_path / "p.kan")
    loaded = KAN.load(tmp_path / "p.kan")
    torch.testing.assert_close(loaded(x), pruned(x))
    history = pruned.fit({"train_input": x, "train_label": x[:, :1]}, steps=2)
    assert len(history["train_loss"]) == 2
    with pytest.raises(ValueError, match="4 features"):
        pruned(x[:, :3])


def test_scores_need_no_forward_pass_and_match_definitions():
    model = _model([2, [2, 1], 1])
    x = model.sample_input
    values = [layer.edge_activations(h) for layer, h in zip(model.layers, model.layer_inputs())]
    for score, value in zip(edge_scores(model), values):
        torch.testing.assert_close(score, value.abs().mean(0))
    result = attribute(model)
    assert [s.shape[0] for s in result.node] == model.width_in
    # output scores are 1; each node's score is the sum of its outgoing edge scores
    torch.testing.assert_close(result.node[-1], torch.ones(1, dtype=torch.float64))
    for l in range(model.depth):
        torch.testing.assert_close(result.node[l], result.edge[l].sum(0))
    # a multiplication node hands its score to both of its factors
    assert result.subnode[0][2] == result.subnode[0][3] == result.node[1][2]
    spread = values[-1].std(0, correction=0)
    torch.testing.assert_close(result.edge[-1], spread / (values[-1].sum(-1).std(0, correction=0) + 1e-4).unsqueeze(1))
    assert model.feature_score(x).shape == (2,)


def test_remove_edge_and_node_validate():
    model = _model([2, 2, 1])
    with pytest.raises(IndexError):
        model.remove_edge(0, 5, 0)
    with pytest.raises(IndexError):
        model.remove_node(3, 0)
    model.remove_edge(0, 1, 0)
    assert model.layers[0].mask[0, 1] == 0
