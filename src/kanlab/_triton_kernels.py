"""Triton kernels of a layer's spline part in the local form (see ``kanlab.gpu``, which loads this
file once per Triton mode: compiled for the GPU, or run by Triton's interpreter on the CPU).

Each entry ``x[n, i]`` has ``K + 1`` possibly non-zero bases, ``first + r`` for ``r = 0..K``; the
kernels compute them from ``x`` in registers and never store a basis tensor:

- ``spline_forward``: ``out[n, o] = sum_i sum_r B_r(x[n, i]) W[i, first + r, o]``, a gather of
  ``K + 1`` weight rows per entry (``N * in * (K + 1) * out`` multiply-adds, whatever the grid);
- ``spline_grad_x``: ``dx[n, i] = sum_r B_r'(x[n, i]) sum_o g[n, o] W[i, first + r, o]``;
- ``spline_grad_w``: ``dW[i, m, o] = sum_n [first + r = m] B_r(x[n, i]) g[n, o]``, from the
  samples of input ``i`` in sorted order: the bases of a run of sorted samples fall in a window
  of a few rows, so each block of samples is one small matrix product into that window's rows,
  accumulated in registers while the window stays and added to memory when it moves.

The arithmetic is ``splines``' (the closed form in ``f`` on evenly spaced knots, Horner's rule
in ``u = x - t_s`` on the per-interval tables otherwise; bases of negative rounding clamped to
zero; entries outside the knots have none).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _locate(x, i, start_ptr, step_ptr, knots_ptr, table_ptr, NK, ROW_LEN,
            K: tl.constexpr, UNIFORM: tl.constexpr, SEARCH: tl.constexpr):
    """``(t, first, inside, row)`` of entries ``x`` of input ``i``: ``t`` the polynomial variable
    (``f`` in [0, 1], or ``u``), ``first`` the index of local basis 0, ``inside`` whether ``x`` has
    bases at all, ``row`` its interval's table row (general knots)."""
    if UNIFORM:
        start = tl.load(start_ptr + i)
        step = tl.load(step_ptr + i)
        scaled = (x - start) / step
        span = tl.floor(scaled)
        span = tl.where(scaled == scaled, span, -1.0)  # NaN: below the knots
        span = tl.minimum(tl.maximum(span, -1.0), NK - 1.0)
        inner = tl.minimum(tl.maximum(span, 0.0), NK - 2.0)
        t = tl.minimum(tl.maximum(scaled - inner, 0.0), 1.0)
        position = span.to(tl.int32) + 1
        row = position * 0
    else:
        # searchsorted(right=True): how many knots are <= x, by bisection
        low = tl.zeros(x.shape, dtype=tl.int32)
        high = low + NK
        for _ in tl.static_range(SEARCH):
            middle = (low + high) // 2
            open_ = low < high
            knot = tl.load(knots_ptr + i * NK + middle, mask=open_ & (middle < NK), other=0.0)
            below = open_ & (knot <= x)
            low = tl.where(below, middle + 1, low)
            high = tl.where(open_ & ~below, middle, high)
        position = low
        span = tl.minimum(tl.maximum(position - 1, 0), NK - 2)
        row = i * (NK - 1) + span
        inside0 = (position >= 1) & (position <= NK - 1)
        t = tl.where(inside0, x - tl.load(table_ptr + row * ROW_LEN), 0.0)
    inside = (position >= 1) & (position <= NK - 1)
    return t, position - 1 - K, inside, row


@triton.jit
def _piece(t, row, r, coef_ptr, ROW_LEN, DEG: tl.constexpr, K: tl.constexpr, UNIFORM: tl.constexpr):
    """Local polynomial ``r`` at ``t``: ``sum_p t^p c[p, r]`` for ``p = 0..DEG`` (Horner), ``c``
    the cardinal matrix (evenly spaced knots) or the interval's table row (after its knot)."""
    if UNIFORM:
        value = tl.zeros(t.shape, dtype=t.dtype) + tl.load(coef_ptr + DEG * (K + 1) + r)
        for q in tl.static_range(DEG):
            value = value * t + tl.load(coef_ptr + (DEG - 1 - q) * (K + 1) + r)
    else:
        value = tl.load(coef_ptr + row * ROW_LEN + 1 + DEG * (K + 1) + r)
        for q in tl.static_range(DEG):
            value = value * t + tl.load(coef_ptr + row * ROW_LEN + 1 + (DEG - 1 - q) * (K + 1) + r)
    return value


@triton.jit
def spline_forward(x_ptr, w_ptr, out_ptr, start_ptr, step_ptr, knots_ptr, table_ptr, values_ptr,
                   N, I, O, NK, NB, ROW_LEN,
                   K: tl.constexpr, UNIFORM: tl.constexpr, SEARCH: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_O: tl.constexpr):
    """``out`` ``(N, O)`` of ``x`` ``(N, I)`` and ``W`` ``(I, NB, O)``; ``values_ptr``: the
    cardinal matrix or the value table."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    row_ok = rows < N
    col_ok = cols < O
    total = tl.zeros((BLOCK_N, BLOCK_O), dtype=tl.float32)
    for i in range(I):
        x = tl.load(x_ptr + rows * I + i, mask=row_ok, other=0.0)
        t, first, inside, row = _locate(x, i, start_ptr, step_ptr, knots_ptr, values_ptr, NK, ROW_LEN,
                                        K, UNIFORM, SEARCH)
        for r in tl.static_range(K + 1):
            index = first + r
            exists = row_ok & inside & (index >= 0) & (index < NB)
            value = tl.where(exists, tl.maximum(_piece(t, row, r, values_ptr, ROW_LEN, K, K, UNIFORM), 0.0), 0.0)
            weight = tl.load(w_ptr + (i * NB + index)[:, None] * O + cols[None, :],
                             mask=exists[:, None] & col_ok[None, :], other=0.0)
            total += value[:, None] * weight
    tl.store(out_ptr + rows[:, None] * O + cols[None, :], total, mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def spline_grad_x(x_ptr, w_ptr, g_ptr, dx_ptr, start_ptr, step_ptr, knots_ptr, table_ptr, derivative_ptr,
                  N, I, O, NK, NB, ROW_LEN, DROW_LEN,
                  K: tl.constexpr, UNIFORM: tl.constexpr, SEARCH: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_O: tl.constexpr):
    """``dx`` ``(N, I)`` from the output gradient ``g`` ``(N, O)``: one input per program column;
    ``derivative_ptr``: the cardinal derivative matrix or the derivative table."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    i = tl.program_id(1)
    row_ok = rows < N
    x = tl.load(x_ptr + rows * I + i, mask=row_ok, other=0.0)
    t, first, inside, row = _locate(x, i, start_ptr, step_ptr, knots_ptr, table_ptr, NK, ROW_LEN,
                                    K, UNIFORM, SEARCH)
    total = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for r in tl.static_range(K + 1):
        index = first + r
        exists = row_ok & inside & (index >= 0) & (index < NB)
        along = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for start in range(0, O, BLOCK_O):
            cols = start + tl.arange(0, BLOCK_O)
            both = exists[:, None] & (cols < O)[None, :]
            weight = tl.load(w_ptr + (i * NB + index)[:, None] * O + cols[None, :], mask=both, other=0.0)
            grad = tl.load(g_ptr + rows[:, None] * O + cols[None, :], mask=both, other=0.0)
            along += tl.sum(weight * grad, axis=1)
        slope = _piece(t, row, r, derivative_ptr, DROW_LEN, K - 1, K, UNIFORM)
        if UNIFORM:
            slope = slope / tl.load(step_ptr + i)
        total += tl.where(exists, slope, 0.0) * along
    tl.store(dx_ptr + rows * I + i, total, mask=row_ok)


@triton.jit
def spline_grad_w(x_ptr, order_ptr, g_ptr, dw_ptr, start_ptr, step_ptr, knots_ptr, table_ptr,
                  N, I, O, NK, NB, ROW_LEN,
                  K: tl.constexpr, UNIFORM: tl.constexpr, SEARCH: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_O: tl.constexpr, WINDOW: tl.constexpr,
                  IEEE: tl.constexpr):
    """``dW`` ``(I, NB, O)`` (zeroed by the caller) from ``g`` ``(N, O)``; ``order`` ``(I, N)``:
    each input's samples sorted by value. One program per input and block of outputs."""
    i = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    col_ok = cols < O
    STEP: tl.constexpr = WINDOW - K  # first bases per window: their rows fill the window
    slots = tl.arange(0, WINDOW)
    held = tl.zeros((WINDOW, BLOCK_O), dtype=tl.float32)
    held_at = tl.zeros((WINDOW,), dtype=tl.int32) - (1 << 30)  # the held window's start, per slot (none yet)
    for begin in range(0, N, BLOCK_N):
        place = begin + tl.arange(0, BLOCK_N)
        ok = place < N
        rows = tl.load(order_ptr + i * N + place, mask=ok, other=0)
        x = tl.load(x_ptr + rows * I + i, mask=ok, other=0.0)
        t, first, inside, row = _locate(x, i, start_ptr, step_ptr, knots_ptr, table_ptr, NK, ROW_LEN,
                                        K, UNIFORM, SEARCH)
        live = ok & inside
        grad = tl.load(g_ptr + rows[:, None] * O + cols[None, :], mask=live[:, None] & col_ok[None, :], other=0.0)
        lowest = tl.min(tl.where(live, first, 1 << 30), axis=0)
        highest = tl.max(tl.where(live, first, -(1 << 30)), axis=0)
        # windows start at multiples of STEP counted from -(K + 1), the lowest possible first
        aligned = ((lowest + K + 1) // STEP) * STEP - K - 1
        for window in range(aligned, highest + 1, STEP):
            chosen = live & (first >= window) & (first < window + STEP)
            tile = tl.zeros((BLOCK_N, WINDOW), dtype=tl.float32)
            for r in tl.static_range(K + 1):
                index = first + r
                exists = chosen & (index >= 0) & (index < NB)
                value = tl.where(exists, tl.maximum(_piece(t, row, r, table_ptr, ROW_LEN, K, K, UNIFORM), 0.0), 0.0)
                tile += tl.where(slots[None, :] == (index - window)[:, None], value[:, None], 0.0)
            if IEEE:
                part = tl.dot(tl.trans(tile), grad, input_precision="ieee")
            else:
                part = tl.dot(tl.trans(tile), grad)
            moved = held_at != window
            target = held_at + slots
            tl.atomic_add(dw_ptr + (i * NB + target)[:, None] * O + cols[None, :], held,
                          mask=(moved & (target >= 0) & (target < NB))[:, None] & col_ok[None, :])
            held = tl.where(moved[:, None], part, held + part)
            held_at = tl.where(moved, window, held_at)
    target = held_at + slots
    tl.atomic_add(dw_ptr + (i * NB + target)[:, None] * O + cols[None, :], held,
                  mask=(target >= 0)[:, None] & (target < NB)[:, None] & col_ok[None, :])
