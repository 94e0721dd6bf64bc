"""Save and load models: safetensors tensors with the JSON configuration in the file's metadata.

Files are written to a temporary file beside the target and renamed over it, so an
interrupted save never leaves a half-written file where an earlier one stood.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import torch

__all__ = ["save", "load", "write_atomically", "ModelFileError", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "kanlab.KAN"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A file is not a readable kanlab model (corrupt, truncated, foreign or too new)."""


def save(model, path) -> None:
    """Write ``model`` to ``path`` atomically (temporary file, fsync, rename)."""
    from safetensors.torch import save as to_bytes

    # A custom residual callable is stored by name only; load asks for it again.
    config = model.config()
    tensors = {name: value.detach().contiguous().cpu() for name, value in model.state_dict().items()}
    # what the constructor cannot express: pruned inputs and the symbolic edges (by name)
    state = {"n_inputs": model.n_inputs, "symbolic": model.symbolic_names()}
    try:
        notes = json.dumps(getattr(model, "metadata", {}) or {})
    except TypeError as error:
        raise TypeError(f"model.metadata must hold JSON-serialisable values only ({error})") from None
    metadata = {
        "format": FORMAT_NAME,
        "version": str(FORMAT_VERSION),
        "config": json.dumps(config),
        "state": json.dumps(state),
        "metadata": notes,
    }
    payload = to_bytes(tensors, metadata=metadata)
    write_atomically(path, lambda stream: stream.write(payload))


def write_atomically(path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(stream)`` on a temporary file beside ``path``, fsync it, rename it over ``path``.

    An interrupted write leaves any earlier file at ``path`` untouched.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"path: directory {str(directory)!r} does not exist")
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def load(path, *, base_fun: Callable | None = None, library=None, device=None):
    """Read a model written by ``save``.

    ``base_fun`` supplies a custom residual callable and ``library`` (a ``Library``) custom
    symbolic functions, which are stored by name only.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as from_bytes

    from .model import KAN

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no model file at {str(path)!r}")
    data = path.read_bytes()
    try:
        metadata = _read_metadata(data)
        tensors = from_bytes(data)
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{str(path)!r} is not a readable kanlab model file ({error})") from None
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{str(path)!r} is a safetensors file but not a kanlab model (no kanlab metadata)")
    version = int(metadata.get("version", "0"))
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} was written by a newer kanlab (format {version}; this one reads up to {FORMAT_VERSION})"
        )
    config = json.loads(metadata["config"])
    dtype = getattr(torch, config.pop("dtype"))
    if config["base_fun"].startswith("custom:"):
        if base_fun is None:
            raise ValueError(
                f"base_fun: the model in {str(path)!r} used a custom residual function "
                f"({config['base_fun'][7:]}); pass it as KAN.load(path, base_fun=...)"
            )
        config["base_fun"] = base_fun
    state = json.loads(metadata.get("state", "{}"))
    symbolic = state.get("symbolic", [])
    n_inputs = state.get("n_inputs")
    model = KAN(**config, dtype=dtype)
    if n_inputs is not None:
        model._n_inputs = int(n_inputs)
    if symbolic:
        from .symbolic import resolve_library

        from .compose import resolve

        entries = resolve_library(library)
        for l, i, j, name in symbolic:
            if name not in entries and (found := resolve(name, entries)) is not None:
                model.layers[l].set_symbolic(j, i, found)
                continue
            if name not in entries:
                raise ValueError(
                    f"library: the model in {str(path)!r} uses the symbolic function {name!r}, which is not "
                    "built in; pass a Library holding it as load(path, library=...)"
                )
            model.layers[l].set_symbolic(j, i, entries[name])
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise ModelFileError(f"{str(path)!r} does not match its own configuration ({error})") from None
    model.metadata = json.loads(metadata.get("metadata", "{}"))
    return model.to(device) if device is not None else model


def _read_metadata(data: bytes) -> dict:
    """The ``__metadata__`` map of a safetensors byte string (validated by the caller's load)."""
    if len(data) < 8:
        raise ValueError("file too short for a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("header runs past the end of the file (truncated?)")
    header = json.loads(data[8 : 8 + size].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header.get("__metadata__") or {}
