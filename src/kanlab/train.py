"""Training: ``fit`` with LBFGS or Adam, the paper's sparsity regulariser and grid updates.

The objective (paper, section 2.5) is::

    loss = prediction loss + lamb * ( lamb_l1 * sum_l |Phi_l|_1 + lamb_entropy * sum_l S(Phi_l)
                                      + lamb_coef * sum_l mean|c_l| + lamb_coefdiff * sum_l mean|diff c_l| )

with ``|phi|_1`` the batch mean of ``|phi(x)|`` per edge, ``|Phi|_1`` its sum over a layer and
``S`` the entropy of the normalised edge norms. Nothing of the regulariser is computed
when ``lamb == 0``.
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from . import grid_keeping
from .fused import SquaredErrorObjective
from .model import KAN
from .optim import LBFGS, adam
from .pykan_names import check_keywords
from .sparsity import EdgeSparsity

__all__ = ["fit", "regularization"]

logger = logging.getLogger("kanlab")


def regularization(
    model: KAN,
    inputs: Sequence[torch.Tensor],
    lamb_l1: float = 1.0,
    lamb_entropy: float = 2.0,
    lamb_coef: float = 0.0,
    lamb_coefdiff: float = 0.0,
) -> torch.Tensor:
    """The paper's sparsity regulariser (without the overall ``lamb``), from each layer's inputs."""
    norms = [layer.edge_mean_abs(x) for layer, x in zip(model.layers, inputs)] if (lamb_l1 or lamb_entropy) else None
    return regularization_from_norms(model, norms, lamb_l1, lamb_entropy, lamb_coef, lamb_coefdiff)


def regularization_from_norms(
    model: KAN,
    edge_norms: Sequence[torch.Tensor] | None,
    lamb_l1: float = 1.0,
    lamb_entropy: float = 2.0,
    lamb_coef: float = 0.0,
    lamb_coefdiff: float = 0.0,
) -> torch.Tensor:
    """The regulariser from each layer's per-edge ``mean |phi|`` ``(out, in)`` (the L1 and
    entropy terms) and its coefficients (the ``lamb_coef`` / ``lamb_coefdiff`` terms)."""
    if lamb_l1 or lamb_entropy:
        total = EdgeSparsity.apply(float(lamb_l1), float(lamb_entropy), *edge_norms)
    else:
        total = model.layers[0].coef.new_zeros(())
    for layer in model.layers:
        if lamb_coef:
            total = total + lamb_coef * layer.coef.abs().mean()
        if lamb_coefdiff:
            total = total + lamb_coefdiff * torch.diff(layer.coef, dim=-1).abs().mean()
    return total


# ---------------------------------------------------------------------- data
def _is_integer(value) -> bool:
    if isinstance(value, torch.Tensor):
        return not (value.is_floating_point() or value.is_complex()) and value.dtype != torch.bool
    return isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.integer)


def _as_tensor(value, name: str, model: KAN, labels: bool = False) -> torch.Tensor:
    """A checked tensor on the model's device: inputs (and float labels) in the model's dtype;
    integer labels (class indices) as ``torch.long``."""
    if labels and (_is_integer(value) or (isinstance(value, (list, tuple)) and _is_integer(np.asarray(value)))):
        return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value,
                               device=model.device).long()
    if isinstance(value, np.ndarray) or isinstance(value, (list, tuple)):
        value = torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=model.dtype, device=model.device)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array, got {type(value).__name__}")
    if value.dtype != model.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but the model has {model.dtype}; convert one of them")
    if value.device != model.device:
        raise ValueError(f"{name} is on {value.device} but the model is on {model.device}; move one of them")
    return value


def _check_pair(x, y, name: str, model: KAN, check_values: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate one (inputs, labels) pair. Float labels ``(N,)`` become ``(N, 1)`` for one
    output. Integer labels are class indices ``(N,)`` in ``[0, n_outputs)`` for a network of
    several outputs (for ``CrossEntropyLoss``), and plain numbers (float ``(N, 1)``) for one."""
    x = _as_tensor(x, f"{name}_input", model)
    y = _as_tensor(y, f"{name}_label", model, labels=True)
    n_in, n_out = model.n_inputs, model.width_in[-1]
    if x.dim() != 2 or x.shape[1] != n_in:
        raise ValueError(f"{name}_input must be 2-D (N, {n_in}), got shape {tuple(x.shape)}")
    if y.dtype == torch.long:
        if y.dim() == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.dim() != 1:
            raise ValueError(f"{name}_label holds integers (class indices), so it must be (N,), got shape {tuple(y.shape)}")
        if n_out == 1:
            y = y.to(model.dtype).unsqueeze(1)
        elif y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_out):
            raise ValueError(f"{name}_label holds class indices outside [0, {n_out}) for a network of {n_out} "
                             f"outputs (got {int(y.min())} to {int(y.max())})")
    if y.dim() == 1 and n_out == 1:
        y = y.unsqueeze(1)
    if y.dtype != torch.long and (y.dim() != 2 or y.shape[1] != n_out):
        raise ValueError(f"{name}_label must be (N, {n_out}) (or (N,) for one output, or (N,) integer class "
                         f"indices), got shape {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}_input has {x.shape[0]} rows but {name}_label has {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}_input is empty: at least one sample is needed")
    if check_values:
        for tensor, part in ((x, "input"), (y, "label")):
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise ValueError(f"{name}_{part} contains NaN or infinite values")
    return x, y


def _batches(
    x: torch.Tensor, y: torch.Tensor, batch: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless mini-batches: the whole set when ``batch`` is -1, else reshuffled epochs."""
    n = x.shape[0]
    if batch == -1 or batch >= n:
        while True:
            yield x, y
    while True:
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n - batch + 1, batch):
            rows = order[start : start + batch]
            yield x[rows], y[rows]


def _loader_batches(loader, model: KAN) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        empty = True
        for item in loader:
            empty = False
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ValueError("a DataLoader passed to fit must yield (inputs, labels) pairs")
            yield _check_pair(item[0], item[1], "batch", model, check_values=False)
        if empty:
            raise ValueError("the DataLoader passed to fit yielded no batches")


def _train_and_test(dataset, model: KAN, test):
    """The checked training pair of a dict or ``(X, y)`` dataset, and the test pair to use
    (``test`` if given, else the dict's ``test_input`` / ``test_label``, else None)."""
    if isinstance(dataset, Mapping):
        missing = [key for key in ("train_input", "train_label") if key not in dataset]
        if missing:
            raise ValueError(f"dataset is missing {missing}; expected train_input, train_label, test_input, test_label")
        train = _check_pair(dataset["train_input"], dataset["train_label"], "train", model)
        if test is None and "test_input" in dataset and "test_label" in dataset:
            test = (dataset["test_input"], dataset["test_label"])
        return train, test
    if isinstance(dataset, (list, tuple)) and len(dataset) == 2:
        return _check_pair(dataset[0], dataset[1], "train", model), test
    raise TypeError(
        "dataset must be a dict (train_input, train_label, test_input, test_label), an (X, y) pair "
        f"or a torch DataLoader, got {type(dataset).__name__}"
    )


def _prepare_data(dataset, model: KAN, test, batch: int, generator: torch.Generator):
    """Batches, the test pair (or None), and a checked pair of training inputs (to remember)
    and labels (to see what kind they are)."""
    if isinstance(dataset, torch.utils.data.DataLoader):
        batches = _loader_batches(dataset, model)
        first = next(batches)  # remembered as the model's sample, then trained on first
        test_pair = _check_pair(test[0], test[1], "test", model) if test is not None else None
        return itertools.chain([first], batches), test_pair, first
    train, test = _train_and_test(dataset, model, test)
    test_pair = _check_pair(test[0], test[1], "test", model) if test is not None else None
    if not (batch == -1 or (isinstance(batch, int) and batch >= 1)):
        raise ValueError(f"batch must be -1 (whole set) or a positive int, got {batch!r}")
    return _batches(*train, batch, generator), test_pair, train


def _mse(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return torch.mean((pred - label) ** 2)


# ---------------------------------------------------------------------- loop
def fit(
    model: KAN,
    dataset,
    *,
    opt: str = "LBFGS",
    steps: int = 100,
    lr: float = 1.0,
    batch: int = -1,
    lamb: float = 0.0,
    lamb_l1: float = 1.0,
    lamb_entropy: float = 2.0,
    lamb_coef: float = 0.0,
    lamb_coefdiff: float = 0.0,
    update_grid: bool = True,
    grid_update_num: int = 10,
    start_grid_update_step: int = -1,
    stop_grid_update_step: int = 50,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    metrics: Mapping[str, Callable[[torch.Tensor, torch.Tensor], float]] | None = None,
    callbacks: Sequence[Callable] = (),
    progress: bool | None = None,
    log: int = 1,
    seed: int | None = None,
    test=None,
    checkpoint=None,
    checkpoint_every: int = 0,
    resume=None,
    distributed: bool = False,
    **options,
) -> dict:
    """Train ``model`` in place and return its history.

    ``dataset`` is pykan's dict (``train_input``, ``train_label``, ``test_input``,
    ``test_label``), an ``(X, y)`` pair of tensors or arrays, or a ``DataLoader`` of
    ``(x, y)`` batches (then ``test=(X, y)`` gives a test set). ``opt`` is ``"LBFGS"``
    (``kanlab.optim.LBFGS``: torch's algorithm, strong-Wolfe line search, up to 20
    iterations a step, 10 curvature pairs, and pykan's tolerances of 1e-32: no early stop, and
    the small curvature pairs of a small loss kept) or ``"Adam"``. ``batch``
    is the mini-batch size (-1: the whole set). ``lamb*`` weight the regulariser (module
    docstring). With ``update_grid``, the grid is adapted to the current batch every
    ``stop_grid_update_step // grid_update_num`` steps while ``start_grid_update_step <= step
    < stop_grid_update_step``. ``loss_fn(pred, label)`` replaces the mean squared error.

    Labels: float ``(N, out)`` (``(N,)`` for one output); integer class indices ``(N,)`` for a
    network of several outputs, trained with ``torch.nn.CrossEntropyLoss()`` unless ``loss_fn``
    says otherwise (integer labels of a one-output network are numbers); 0/1 float labels
    with ``BCEWithLogitsLoss``.

    Every ``log`` steps the history records ``step``, ``train_loss`` and ``test_loss`` (without
    ``loss_fn``: the RMSE of the model after the step on the training batch and the test set, as
    pykan reports them, also under ``train_rmse`` / ``test_rmse``; with ``loss_fn`` or class
    labels: that loss function's own value, with ``train_accuracy`` / ``test_accuracy`` where
    the labels are classes and ``train_rmse`` / ``test_rmse`` where they are numbers),
    ``reg`` and ``objective``, each entry of
    ``metrics`` (name -> ``fn(pred, label)`` on the test set, else the batch) as ``test_<name>``;
    then each ``callbacks`` entry is called as ``cb(step, model, history)`` and training stops
    if one returns True. ``progress`` shows a tqdm bar (default: only on a terminal).

    ``checkpoint`` (a path) with ``checkpoint_every = n`` writes the training state (model,
    optimizer, history, step) atomically every ``n`` steps; ``resume`` (such a path) continues
    from it, giving the same result as a run that was never interrupted (full batches, or
    mini-batches from the tensors given; a DataLoader's order is its own).

    ``distributed=True`` trains one model across the processes of torch's initialised process
    group (see ``kanlab.distributed``): every rank passes the same data and trains on its
    shard under ``DistributedDataParallel``.

    If the objective becomes NaN or infinite, training stops, a warning is logged, the model
    gets back the best parameters seen and ``history["stopped"]`` is ``"diverged"``. On
    Ctrl-C the model also gets back its best state before the interrupt propagates.
    """
    check_keywords("fit()", options)
    if opt not in ("LBFGS", "Adam"):
        raise ValueError(f"opt must be 'LBFGS' or 'Adam', got {opt!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if not isinstance(log, int) or log < 1:
        raise ValueError(f"log must be a positive int, got {log!r}")
    if lamb < 0:
        raise ValueError(f"lamb must be >= 0, got {lamb!r}")
    if not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be a non-negative int, got {checkpoint_every!r}")
    if checkpoint_every and checkpoint is None:
        raise ValueError("checkpoint_every needs checkpoint=<path> to write to")
    generator = torch.Generator().manual_seed(model.seed if seed is None else seed)
    shard = _Shard.create(distributed, dataset)
    if shard is not None:
        dataset, test, batch = shard.local_data(dataset, model, test, batch)
    batches, test_pair, (train_x, train_y) = _prepare_data(dataset, model, test, batch, generator)
    model.remember_inputs(shard.gather(train_x) if shard else train_x, generator)
    net = shard.wrap(model) if shard else model
    # the squared error with the L1 and entropy terms, single process: fused.SquaredErrorObjective
    # takes a step's evaluations whenever the model runs on the compiled kernel as one network
    direct = loss_fn is None and shard is None and not (lamb and (lamb_coef or lamb_coefdiff))
    with_norms = bool(lamb and (lamb_l1 or lamb_entropy))
    classes = _class_labels(train_y, loss_fn)
    if loss_fn is None and classes == "indices":
        loss_fn, direct = torch.nn.CrossEntropyLoss(), False
    own_loss = loss_fn is not None  # history reports loss_fn's own value; else the RMSE, as pykan
    loss_fn = loss_fn or _mse
    metrics = dict(metrics or {})
    grid_every = max(1, stop_grid_update_step // max(1, grid_update_num))
    parameters = [p for p in model.parameters() if p.requires_grad]
    if opt == "LBFGS":
        optimizer = LBFGS(
            parameters,
            lr=lr,
            history_size=10,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-32,
            tolerance_change=1e-32,
            tolerance_ys=1e-32,
        )
    else:
        optimizer = adam(parameters, lr=lr)

    def objective(x, y):
        norms = None
        if lamb and (lamb_l1 or lamb_entropy):
            pred, norms = net(x, edge_norms=True)
        else:
            pred = net(x)
        loss = loss_fn(pred, y)
        weights = (lamb_l1, lamb_entropy, lamb_coef, lamb_coefdiff)
        if not lamb:
            reg = None
        elif shard is None:
            reg = regularization_from_norms(model, norms, *weights)
        else:
            reg = shard.regularization(model, norms, *weights)
        return pred, loss, reg

    history: dict = {"step": [], "train_loss": [], "test_loss": [], "reg": [], "objective": []}
    history.update({f"test_{name}": [] for name in metrics})
    if own_loss:
        if classes is None:
            history["train_rmse"], history["test_rmse"] = [], []
        else:
            history["train_accuracy"], history["test_accuracy"] = [], []
    else:
        history["train_rmse"], history["test_rmse"] = history["train_loss"], history["test_loss"]
    history["stopped"] = None

    def measures(pred, label, loss=None) -> dict[str, float]:
        """What the history records of predictions against labels (averaged over ranks)."""
        if not own_loss:
            return {"loss": math.sqrt(_mean_over_ranks(torch.mean((pred - label) ** 2), shard))}
        loss = loss_fn(pred, label) if loss is None else loss
        values = {"loss": _mean_over_ranks(loss.detach(), shard)}
        if classes is None:
            values["rmse"] = math.sqrt(_mean_over_ranks(torch.mean((pred - label) ** 2), shard))
        else:
            values["accuracy"] = _mean_over_ranks(_accuracy(pred, label), shard)
        return values

    def record(step: int, x, y) -> float:
        with torch.no_grad():
            pred, loss, reg = objective(x, y)
            reg_value = reg.item() if reg is not None else 0.0
            total = _mean_over_ranks(loss, shard) + lamb * reg_value
            history["step"].append(step)
            train = measures(pred, y, loss)
            eval_pred, eval_label = (model(test_pair[0]), test_pair[1]) if test_pair else (pred, y)
            test = measures(eval_pred, eval_label) if test_pair else dict.fromkeys(train, float("nan"))
            for part, values in (("train", train), ("test", test)):
                for key, value in values.items():
                    if key == "loss" or own_loss:
                        history[f"{part}_{key}"].append(value)
            history["reg"].append(reg_value)
            history["objective"].append(total)
            for name, fn in metrics.items():
                history[f"test_{name}"].append(float(fn(eval_pred, eval_label)))
        return total

    def snapshot() -> dict[str, torch.Tensor]:
        return {key: value.detach().clone() for key, value in model.state_dict().items()}

    best_state, best_value = snapshot(), math.inf
    first_step = 0
    # torch's LBFGS discards curvature pairs with y's <= 1e-10, which starves it once a
    # float64 fit reaches MSE ~ 1e-10. Dividing the objective by its value at the first step
    # (a constant for this call: same minimiser, same line search) keeps its memory working.
    lbfgs_scale = None
    if resume is not None:
        saved = _read_checkpoint(resume)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        history.update(saved["history"])
        if not own_loss:
            history["train_rmse"], history["test_rmse"] = history["train_loss"], history["test_loss"]
        best_state, best_value = saved["best_state"], saved["best_value"]
        lbfgs_scale, first_step = saved["lbfgs_scale"], saved["step"]
        for _ in range(first_step):  # the same batches as the uninterrupted run
            next(batches)

    def save_checkpoint(step: int) -> None:
        from .io import write_atomically

        state = {
            "model": snapshot(), "optimizer": optimizer.state_dict(), "step": step,
            "history": {key: value for key, value in history.items()
                        if own_loss or key not in ("train_rmse", "test_rmse")},
            "best_state": best_state, "best_value": best_value, "lbfgs_scale": lbfgs_scale,
        }
        if shard is None or shard.rank == 0:
            write_atomically(checkpoint, lambda stream: torch.save(state, stream))

    bar = _progress_bar(steps - first_step, progress if shard is None or shard.rank == 0 else False)
    keeping = grid_keeping.paused(model)  # fit's own grid schedule replaces the layers' automatic one
    keeping.__enter__()
    try:
        for step in range(first_step, steps):
            x, y = next(batches)
            if update_grid and start_grid_update_step <= step < stop_grid_update_step and step % grid_every == 0:
                model.update_grid(shard.gather(x) if shard else x)

            fused_step = direct and model._fuses(model._select_inputs(x), with_norms)
            if opt == "LBFGS":
                if lbfgs_scale is None:
                    lbfgs_scale = _objective_scale(objective, x, y, lamb, shard)
                evaluate = (SquaredErrorObjective(model, x, y, lamb, lamb_l1, lamb_entropy, lbfgs_scale)
                            if fused_step else None)

                def closure():
                    optimizer.zero_grad()
                    if evaluate is not None:
                        return evaluate()
                    _, loss, reg = objective(x, y)
                    total = (loss + lamb * reg if reg is not None else loss) * lbfgs_scale
                    total.backward()
                    # every rank's line search must see the same (global) value
                    return shard.average(total.detach()) if shard else total

                optimizer.step(closure)
            else:
                optimizer.zero_grad()
                if fused_step:
                    SquaredErrorObjective(model, x, y, lamb, lamb_l1, lamb_entropy, 1.0)()
                else:
                    _, loss, reg = objective(x, y)
                    (loss + lamb * reg if reg is not None else loss).backward()
                optimizer.step()

            logged = (step + 1) % log == 0 or step == steps - 1
            if logged:
                value = record(step + 1, x, y)
                if not math.isfinite(value):
                    model.load_state_dict(best_state)
                    history["stopped"] = "diverged"
                    (logger.warning if shard is None or shard.rank == 0 else logger.debug)(
                        "training diverged at step %d (objective %s); restored the best parameters seen "
                        "(objective %.3e). Try a smaller lr, a larger grid_range or lamb = 0.",
                        step + 1, value, best_value,
                    )
                    break
                if value < best_value:
                    best_state, best_value = snapshot(), value
                if bar is not None:
                    bar.set_postfix(train=f"{history['train_loss'][-1]:.2e}", test=f"{history['test_loss'][-1]:.2e}")
            if checkpoint_every and (step + 1) % checkpoint_every == 0:
                save_checkpoint(step + 1)
            if logged and any(callback(step + 1, model, history) for callback in callbacks):
                history["stopped"] = "callback"
                break
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        model.load_state_dict(best_state)
        (logger.warning if shard is None or shard.rank == 0 else logger.debug)(
            "training interrupted; the model holds the best parameters seen (objective %.3e)", best_value)
        raise
    finally:
        keeping.__exit__(None, None, None)
        if bar is not None:
            bar.close()
        if shard is not None:
            # The DDP wrapper sits in reference cycles (its hooks), so without this it would
            # live, holding the process group and gloo's threads, until some later garbage
            # collection - often at interpreter exit, after destroy_process_group(), where
            # tearing gloo down aborts the process ("terminate called without an active
            # exception"). Free it now, and leave together.
            net = None  # noqa: F841 -- clears the closures' reference too
            shard.finish(wait=sys.exc_info()[0] is None)  # after an error other ranks may never arrive
    return history


def _class_labels(labels: torch.Tensor, loss_fn) -> str | None:
    """``"indices"`` for (checked) integer class labels, ``"binary"`` for 0/1 float labels
    under ``BCEWithLogitsLoss``, else None (the labels are numbers)."""
    if labels.dtype == torch.long:
        return "indices"
    if isinstance(loss_fn, torch.nn.BCEWithLogitsLoss):
        return "binary"
    return None


def _accuracy(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Share of rows classified right: argmax of the logits against class indices, or the
    logit's sign against 0/1 labels (every output of a multi-label problem)."""
    if label.dtype == torch.long:
        return (pred.argmax(dim=1) == label).to(pred.dtype).mean()
    return ((pred > 0).to(pred.dtype) == label).to(pred.dtype).mean()


def _mean_over_ranks(value: torch.Tensor, shard) -> float:
    """A scalar tensor's value, averaged over the ranks when training is distributed."""
    return (shard.average(value.detach()) if shard else value).item()


class _Shard:
    """This rank's part of distributed training: its rows, the DDP wrapper, collectives."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    @classmethod
    def create(cls, distributed: bool, dataset):
        if not distributed:
            return None
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("distributed=True needs torch.distributed's process group; see kanlab.distributed.init")
        if isinstance(dataset, torch.utils.data.DataLoader):
            raise TypeError("distributed=True takes tensors (dict or (X, y)); each rank shards them itself")
        return cls(dist.get_rank(), dist.get_world_size())

    def local_data(self, dataset, model, test, batch: int):
        """This rank's training rows (``DistributedSampler``'s split, padded to equal sizes),
        the test pair and this rank's batch size."""
        from torch.utils.data import DistributedSampler

        (x, y), test = _train_and_test(dataset, model, test)
        rows = list(DistributedSampler(range(x.shape[0]), num_replicas=self.world, rank=self.rank, shuffle=False))
        self.n_rows, self.padded_rows = x.shape[0], len(rows) * self.world
        rows = torch.as_tensor(rows, device=x.device)
        return (x[rows], y[rows]), test, (batch if batch == -1 else max(1, batch // self.world))

    def wrap(self, model):
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [model.device.index] if model.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of ``x`` (equal shard sizes), interleaved back into the order of
        the full data set (the sampler deals rows out in turn); padding rows dropped."""
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        full = torch.stack(parts, dim=1).reshape(-1, *x.shape[1:])
        return full[: self.n_rows] if x.shape[0] * self.world == self.padded_rows else full

    def regularization(self, model, norms, lamb_l1, lamb_entropy, lamb_coef, lamb_coefdiff) -> torch.Tensor:
        """The regulariser of the global edge norms (the mean over ranks of each rank's norms).

        Its value is the same on every rank; its gradient is that of ``sum(G * local norms)``
        with ``G`` the regulariser's gradient at the global norms, so DDP's gradient average
        gives exactly the single-process gradient.
        """
        import torch.distributed as dist

        total = regularization_from_norms(model, None, 0.0, 0.0, lamb_coef, lamb_coefdiff)
        if norms is None:
            return total
        flat = torch.cat([n.detach().reshape(-1) for n in norms])
        dist.all_reduce(flat)
        flat = (flat / self.world).requires_grad_()
        with torch.enable_grad():
            leaves = list(torch.split(flat, [n.numel() for n in norms]))
            value = regularization_from_norms(
                model, [leaf.view_as(n) for leaf, n in zip(leaves, norms)], lamb_l1, lamb_entropy, 0.0, 0.0
            )
            (gradient,) = torch.autograd.grad(value, flat)
        surrogate = (gradient * torch.cat([n.reshape(-1) for n in norms])).sum()
        return total + surrogate + (value.detach() - surrogate.detach())

    def finish(self, wait: bool) -> None:
        """End of training: destroy the DDP wrapper now (its cycles need the collector) and,
        with ``wait``, wait for every rank, so none tears down while another still communicates."""
        import gc

        import torch.distributed as dist

        gc.collect()
        if wait:
            dist.barrier()

    def average(self, value: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        return value / self.world


def _read_checkpoint(path) -> dict:
    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(f"resume: no checkpoint at {str(path)!r}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets one message
        raise ValueError(f"resume: {str(path)!r} is not a readable kanlab checkpoint ({error})") from None
    if not isinstance(saved, dict) or not {"model", "optimizer", "step", "history"} <= set(saved):
        raise ValueError(f"resume: {str(path)!r} is not a kanlab checkpoint")
    return saved


def _objective_scale(objective, x, y, lamb: float, shard=None) -> float:
    """``1 / objective`` at the start (1 when that is zero or not finite)."""
    with torch.no_grad():
        _, loss, reg = objective(x, y)
        value = _mean_over_ranks(loss, shard) + (lamb * reg.item() if reg is not None else 0.0)
    return 1.0 / value if math.isfinite(value) and value > 0 else 1.0


def _progress_bar(total: int, progress: bool | None):
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fit", leave=False)
