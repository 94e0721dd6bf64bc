"""Reading a user's CSV for the command line: named numeric columns, checked, with clear errors.

Every problem raises ``ValueError`` (or ``FileNotFoundError``) with one line that names the
file, the column or the option to change. Needs pandas.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Table", "read_table", "MIN_ROWS"]

MIN_ROWS = 10


@dataclass
class Table:
    """Feature matrix ``X`` ``(n, n_features)``, optional target ``y`` ``(n,)`` and the frame they came from."""

    X: np.ndarray
    y: np.ndarray | None
    features: list[str]
    target: str | None
    frame: object  # the pandas DataFrame after dropping rows
    dropped: int


def read_table(path, *, target: str | None = None, features=None, dropna: bool = False,
               min_rows: int = 1) -> Table:
    """Read ``path`` and pick ``features`` (default: every column but ``target``) and ``target``."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {str(path)!r} as CSV ({str(error).strip().splitlines()[0]})") from None
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if target is not None and target not in columns:
        raise ValueError(f"--target {target!r} is not a column of {str(path)!r} (columns: {', '.join(columns)})")
    if features is None:
        features = [c for c in columns if c != target]
    else:
        features = list(features)
        missing = [c for c in features if c not in columns]
        if missing:
            raise ValueError(f"--features: {', '.join(map(repr, missing))} not in {str(path)!r} (columns: {', '.join(columns)})")
        if target is not None and target in features:
            raise ValueError(f"--features includes the target {target!r}")
    if not features:
        raise ValueError(f"{str(path)!r} has no feature columns besides the target {target!r}")
    used = features + ([target] if target is not None else [])
    non_numeric = [c for c in used if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])]
    if non_numeric:
        raise ValueError(
            f"column(s) {', '.join(map(repr, non_numeric))} of {str(path)!r} are not numeric; "
            "choose numeric columns with --features"
        )
    values = frame[used].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    dropped = 0
    if bad.any():
        rows = bad.any(axis=1)
        where = [c for c, flag in zip(used, bad.any(axis=0)) if flag]
        if not dropna:
            raise ValueError(
                f"{int(rows.sum())} row(s) of {str(path)!r} have empty, NaN or infinite cells "
                f"(in {', '.join(map(repr, where))}); pass --dropna to drop them"
            )
        frame = frame.loc[~rows].reset_index(drop=True)
        values = values[~rows]
        dropped = int(rows.sum())
    if values.shape[0] < min_rows:
        raise ValueError(f"{str(path)!r} has {values.shape[0]} usable row(s); at least {min_rows} are needed")
    X = values[:, : len(features)]
    y = values[:, -1] if target is not None else None
    return Table(X=X, y=y, features=features, target=target, frame=frame, dropped=dropped)
