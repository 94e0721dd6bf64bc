"""A model's formula: its symbolic edges composed through the layers into sympy expressions.

Layer ``l`` turns node values ``v_i`` into subnode values ``sum_i phi_{l,i,j}(v_i)`` (plus a
bias when the layer has one); a multiplication node multiplies its subnodes. With every
active edge symbolic, ``symbolic_formula`` is exactly the model's function; edges that are
still splines are either an error or, with ``allow_splines=True``, opaque functions
``phi_l_i_j``.
"""

from __future__ import annotations

import math

from typing import Sequence

__all__ = ["symbolic_formula", "round_formula", "tidy_formula", "exact_constants", "default_variables"]


def default_variables(n: int):
    """``x_1, ..., x_n`` as real sympy symbols (pykan's names)."""
    import sympy

    return [sympy.Symbol(f"x_{m + 1}", real=True) for m in range(n)]


def _variables(model, var_names):
    import sympy

    n_inputs = model.n_inputs
    if var_names is None:
        return default_variables(n_inputs)
    if len(var_names) != n_inputs:
        raise ValueError(f"var_names must name all {n_inputs} model inputs, got {len(var_names)}")
    return [name if isinstance(name, sympy.Symbol) else sympy.Symbol(str(name), real=True) for name in var_names]


def _float(value):
    """A sympy number equal to ``value``: an Integer when it is whole (exact, and prints as 1)."""
    import sympy

    value = float(value)
    if value.is_integer() and abs(value) < 2**53:
        return sympy.Integer(int(value))
    return sympy.Float(value)


def _edge_expression(layer, l: int, i: int, j: int, node, allow_splines: bool):
    import sympy

    mask = float(layer.mask[j, i])
    if mask == 0.0:
        return sympy.Integer(0)
    function = layer.symbolic_function(j, i)
    if function is None:
        if not allow_splines:
            return None
        term = sympy.Function(f"phi_{l}_{i}_{j}")(node)
    else:
        a, b, c, d = layer.symbolic_affine[j, i].tolist()
        term = _float(c) * function.sympy(_float(a) * node + _float(b)) + _float(d)
    return term if mask == 1.0 else _float(mask) * term


def symbolic_formula(
    model,
    var_names: Sequence | None = None,
    round_digits: int | None = None,
    simplify: bool = False,
    *,
    allow_splines: bool = False,
    exact: bool = True,
) -> list:
    """One sympy expression per model output, composed through every layer.

    ``var_names`` names the inputs (strings or sympy symbols; default ``x_1 ... x_n``).
    With ``exact`` (the default), numbers that equal a small fraction or a small fraction of
    pi to working precision become exact (``exact_constants``). ``round_digits`` rounds every
    other number (see ``round_formula``); ``simplify`` runs ``sympy.simplify``. Raises
    ``ValueError`` naming the edges that are still splines, unless ``allow_splines``.
    """
    import sympy

    nodes = _variables(model, var_names)
    if getattr(model, "input_index", None) is not None:
        nodes = [nodes[int(m)] for m in model.input_index]
    missing = []
    for l, layer in enumerate(model.layers):
        subnodes = []
        for j in range(layer.out_features):
            terms = []
            for i in range(layer.in_features):
                term = _edge_expression(layer, l, i, j, nodes[i], allow_splines)
                if term is None:
                    missing.append((l, i, j))
                else:
                    terms.append(term)
            if layer.bias is not None:
                terms.append(_float(layer.bias[j]))
            subnodes.append(sympy.Add(*terms))
        nodes = _combine(model, subnodes, l + 1)
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{len(missing)} active edges are still splines (l, i, j): {shown}; fix them with "
            "fix_symbolic / auto_symbolic, or pass allow_splines=True to see them as phi_l_i_j"
        )
    formulas = [tidy_formula(expr) for expr in nodes]
    if exact:
        formulas = [exact_constants(expr) for expr in formulas]
    if round_digits is not None:
        formulas = [round_formula(expr, round_digits) for expr in formulas]
    if simplify:
        formulas = [sympy.simplify(expr) for expr in formulas]
    return formulas


def _combine(model, subnodes: list, l: int) -> list:
    import sympy

    n_sum, n_mult = model.width[l]
    nodes = list(subnodes[:n_sum])
    start = n_sum
    for arity in model.mult_arity[l]:
        nodes.append(sympy.Mul(*subnodes[start : start + arity]))
        start += arity
    return nodes


def tidy_formula(expr):
    """Fold constants out of exponentials, ``c * exp(u + b) -> (c e^b) exp(u)``, so that the
    redundant scale and shift of composed edges collapse into one number. Exact."""
    import sympy


    def split(e):
        argument = e.args[0]
        if not argument.is_Add:
            return e
        constant, rest = argument.as_coeff_Add()
        if constant == 0 or not constant.is_Number:
            return e
        return sympy.exp(constant) * sympy.exp(rest)

    return expr.replace(lambda e: isinstance(e, sympy.exp), split)


def exact_constants(expr, tolerance: float = 1e-9, max_denominator: int = 16):
    """Replace each number that equals ``p/q`` or ``p/q`` times ``pi``, ``1/pi``, ``pi**2`` or
    ``1/pi**2``, or the square root
    of ``p/q``, ``p/q*pi`` or ``p/(q*pi)`` with ``|p| <= 4 * max_denominator`` (``q <= max_denominator``) to a relative ``tolerance`` (float64 training
    gets constants right to about 1e-12; float32 to about 1e-6, which this leaves alone) by that
    exact value: ``3.14159265359 -> pi``, ``0.4999999999 -> 1/2``, ``0.3989422804 ->
    sqrt(2)/(2*sqrt(pi))``. Every other number is kept as it is."""
    import sympy
    from fractions import Fraction

    units = ((1.0, sympy.Integer(1)), (math.pi, sympy.pi), (1 / math.pi, 1 / sympy.pi), (math.pi**2, sympy.pi**2),
             (math.pi**-2, sympy.pi**-2))

    def rational(value, numerator=None):
        for factor, unit in units if numerator is None else units[:3]:
            ratio = value / factor
            if abs(ratio) > 1e6:
                continue
            fraction = Fraction(ratio).limit_denominator(max_denominator)
            if numerator is not None and abs(fraction.numerator) > numerator:
                continue
            if fraction != 0 and abs(float(fraction) - ratio) <= tolerance * abs(ratio):
                return sympy.Rational(fraction.numerator, fraction.denominator) * unit
        return None

    def exact(number):
        value = float(number)
        if value == 0.0:
            return sympy.Integer(0)
        if not math.isfinite(value):
            return number
        found = rational(value)
        if found is None and (square := rational(value * value, numerator=4 * max_denominator)) is not None:
            found = sympy.sign(value) * sympy.sqrt(square)
        return number if found is None else found

    return expr.xreplace({number: exact(number) for number in expr.atoms(sympy.Float)})


def round_formula(expr, digits: int):
    """Round every number in ``expr`` to ``digits`` decimals; whole numbers become integers.

    Products and integer powers of sums are multiplied out first (exactly), so redundant
    scales of composed edges meet before rounding: ``0.0099*(10.05*x)**2`` becomes ``x**2``
    at ``digits=4``, and ``1.00000003*exp(0.99999*x_2**2)`` becomes ``exp(x_2**2)``.
    """
    import sympy

    if not isinstance(digits, int) or digits < 0:
        raise ValueError(f"round_digits must be an integer >= 0, got {digits!r}")

    def rounded(number):
        value = round(float(number), digits)
        return sympy.Integer(int(value)) if value == int(value) else sympy.Float(value, max(digits, 1) + 3)

    # exponents that round to whole numbers first (exp(c log u) composes to u**c), so that the
    # numbers they multiply can meet below
    tolerance = 0.5 * 10.0**-digits
    expr = expr.replace(
        lambda e: e.is_Pow and e.exp.is_Float and abs(float(e.exp) - round(float(e.exp))) < tolerance,
        lambda e: e.base ** sympy.Integer(round(float(e.exp))),
    )
    # multiply out products and powers of sums so that redundant scales meet (exact), then
    # fold the constants that this exposes inside exponentials
    expr = tidy_formula(
        sympy.expand(expr, deep=True, mul=True, multinomial=True, power_exp=False, power_base=False, log=False)
    )
    # rounding can make new numbers meet (1.0*x + 0.00001 -> x): repeat until it settles
    for _ in range(5):
        floats = {number: rounded(number) for number in expr.atoms(sympy.Float)}
        if not floats:
            break
        new = expr.xreplace(floats)
        if new == expr:
            break
        expr = new
    return expr
