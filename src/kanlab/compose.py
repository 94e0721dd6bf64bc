"""Composite edges: ``f(g(x))`` with ``f`` and ``g`` from the library.

One library function cannot hold every edge: ``exp(sin(x))`` or ``cos(x**2)`` on one input is a
composite that the paper's snapping fits with a single function badly (a cosine for
``cos(x**2)``'s middle, say). ``compositions(library)`` builds the library of composites
``outer(inner(x))`` of a few common outer and inner functions, each named ``"outer(inner)"``
(``"exp(sin)"``), with complexity the sum of its parts, its torch and numpy forms the
composition of its parts' (guards included), its sympy form the composition of theirs. An edge
then fits as ``c * outer(inner(a * x + b)) + d``. ``auto_symbolic`` tries them on edges whose
best single function leaves R^2 below ``compose_below`` and takes a composite only when it
scores better (R^2 against complexity, the same rule). ``resolve(name, library)`` finds a
composite by its name again (loading a saved model).
"""

from __future__ import annotations

from .functions import Library, SymbolicFunction

__all__ = ["OUTER", "INNER", "compositions", "composite", "resolve"]

#: outer and inner functions of the composites tried (those in the library in use)
OUTER = ("exp", "sin", "cos", "tanh", "log", "sqrt", "x^2", "1/x")
INNER = ("x^2", "x^3", "sin", "cos", "exp", "sqrt", "log", "tanh", "abs")


def composite(outer: SymbolicFunction, inner: SymbolicFunction) -> SymbolicFunction:
    """The library entry ``outer(inner(x))``."""
    return SymbolicFunction(
        f"{outer.name}({inner.name})",
        lambda x: outer.sympy(inner.sympy(x)),
        outer.complexity + inner.complexity,
        torch_fn=lambda z: outer.torch(inner.torch(z)),
        numpy_fn=lambda z: outer.numpy(inner.numpy(z)),
    )


def compositions(library: Library, outer=OUTER, inner=INNER) -> Library:
    """The composites of ``outer`` and ``inner`` functions that ``library`` holds (module docstring)."""
    names = {function.name for function in library}
    out = Library()
    for o in outer:
        for i in inner:
            if o in names and i in names and o != i:
                out.register(composite(library[o], library[i]))
    return out


def resolve(name: str, library: Library) -> SymbolicFunction | None:
    """The composite called ``name`` (``"exp(sin)"``) of ``library``'s entries, or None."""
    if not name.endswith(")") or "(" not in name:
        return None
    names = {function.name for function in library}
    for cut in range(len(name) - 2, 0, -1):  # the outer name may itself hold parentheses
        if name[cut] == "(" and name[:cut] in names and name[cut + 1:-1] in names:
            return composite(library[name[:cut]], library[name[cut + 1:-1]])
    return None
