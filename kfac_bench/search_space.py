"""A method's search space: the ranges its hyperparameters are tuned over (what AlgoPerf's external
tuning calls a submission's search space), declared in its registry entry (:mod:`kfac_bench.registry`).

A :class:`SearchSpace` maps a config key of the method (``optimizer.<key>`` in a run) to a dimension:

* :class:`LogUniform` -- a positive range searched on a log scale (learning rates, dampings, epsilons);
* :class:`Uniform` -- a range searched on a linear scale;
* :class:`Choice` -- a few values (intervals, enumerations, momenta whose interesting values crowd
  toward 1).

Every dimension names its source (the paper's section, the library's file and version, a measurement).
:func:`on_edge` says which values of a tuned point lie at a bound of their range -- the sign that the
range cut the search short -- and :func:`extended` moves those bounds out (a decade on a log scale, the
range's width on a linear one), never past the values the option allows (``ceiling``, ``floor``). A
categorical dimension has no order, so no edge: widen it by hand.

Pure Python: the registry imports this module, and listing methods imports nothing heavy.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Union

EDGE_TOLERANCE = 0.05   # a value within this fraction of its range (log range: of its decades) of a bound


@dataclass(frozen=True)
class LogUniform:
    """``low <= value <= high``, searched on a log scale; ``ceiling``: the largest value the option
    allows (a probability's 1), which :func:`extended` never passes."""

    low: float
    high: float
    source: str
    ceiling: float = math.inf
    scale: ClassVar[str] = "log"

    def __post_init__(self):
        if not 0 < self.low < self.high <= self.ceiling:
            raise ValueError(f"a log range needs 0 < low < high <= ceiling, got {self.low}, {self.high}, "
                             f"{self.ceiling}")

    @property
    def decades(self) -> float:
        return math.log10(self.high / self.low)

    def side_of(self, value: float, tol: float) -> str | None:
        """``"low"``/``"high"``: the bound ``value`` lies at (within ``tol`` of the decades) or beyond."""
        slack = tol * self.decades
        if math.log10(value / self.low) <= slack:
            return "low"
        if math.log10(self.high / value) <= slack:
            return "high"
        return None

    def widened(self, side: str) -> LogUniform:
        if side == "low":
            return replace(self, low=self.low / 10)
        return replace(self, high=min(self.high * 10, self.ceiling))

    def movable(self, side: str) -> bool:
        return side == "low" or self.high < self.ceiling

    def describe(self) -> str:
        return f"[{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Uniform:
    """``low <= value <= high``, searched on a linear scale, inside ``[floor, ceiling]`` (the values
    the option allows)."""

    low: float
    high: float
    source: str
    floor: float = -math.inf
    ceiling: float = math.inf
    scale: ClassVar[str] = "linear"

    def __post_init__(self):
        if not self.floor <= self.low < self.high <= self.ceiling:
            raise ValueError(f"a linear range needs floor <= low < high <= ceiling, got {self.floor}, {self.low}, "
                             f"{self.high}, {self.ceiling}")

    def side_of(self, value: float, tol: float) -> str | None:
        slack = tol * (self.high - self.low)
        if value - self.low <= slack:
            return "low"
        if self.high - value <= slack:
            return "high"
        return None

    def widened(self, side: str) -> Uniform:
        width = self.high - self.low
        if side == "low":
            return replace(self, low=max(self.low - width, self.floor))
        return replace(self, high=min(self.high + width, self.ceiling))

    def movable(self, side: str) -> bool:
        return self.low > self.floor if side == "low" else self.high < self.ceiling

    def describe(self) -> str:
        return f"[{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Choice:
    """One of ``values`` (lists, such as Adam's betas, are kept as tuples: a space is hashable)."""

    values: tuple
    source: str
    scale: ClassVar[str] = "categorical"

    def __post_init__(self):
        values = tuple(tuple(v) if isinstance(v, list) else v for v in self.values)
        if not values or len(set(values)) != len(values):
            raise ValueError(f"a choice needs distinct values, got {self.values!r}")
        object.__setattr__(self, "values", values)

    def describe(self) -> str:
        return "{" + ", ".join(map(_shown, self.values)) + "}"


def _shown(value) -> str:
    if isinstance(value, tuple):
        return str(list(value))
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


Dimension = Union[LogUniform, Uniform, Choice]
RANGES = (LogUniform, Uniform)     # the dimensions with bounds


class SearchSpace(Mapping):
    """Config key of the method -> its :data:`Dimension`, in the order declared."""

    def __init__(self, dimensions: Mapping[str, Dimension]):
        self._dimensions = tuple(dimensions.items())

    def __getitem__(self, name: str) -> Dimension:
        for key, dimension in self._dimensions:
            if key == name:
                return dimension
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._dimensions)

    def __len__(self) -> int:
        return len(self._dimensions)

    def __hash__(self) -> int:
        return hash(self._dimensions)

    def __repr__(self) -> str:
        return f"SearchSpace({dict(self._dimensions)!r})"


def edges(space: SearchSpace, params: Mapping[str, Any], tol: float = EDGE_TOLERANCE) -> dict[str, str]:
    """Dimension name -> ``"low"``/``"high"`` for each range of ``space`` whose value in ``params``
    lies within ``tol`` of that bound (log ranges: ``tol`` of their decades, in log space) or beyond
    it. A bound at the option's own limit (``ceiling``, ``floor``) is no edge: nothing lies beyond it.
    Keys of ``params`` that are no dimension, and dimensions ``params`` lacks, are left out."""
    out = {}
    for name, dimension in space.items():
        if isinstance(dimension, RANGES) and params.get(name) is not None:
            side = dimension.side_of(float(params[name]), tol)
            if side is not None and dimension.movable(side):
                out[name] = side
    return out


def on_edge(space: SearchSpace, params: Mapping[str, Any], tol: float = EDGE_TOLERANCE) -> list[str]:
    """The names of the dimensions whose value in ``params`` lies at a bound of its range
    (:func:`edges`), in the space's order."""
    return list(edges(space, params, tol))


def extended(space: SearchSpace, dims: Mapping[str, str] | Iterable[str]) -> SearchSpace:
    """``space`` with the bound of each dimension of ``dims`` moved out: a decade on a log scale, the
    range's width on a linear one, never past the option's limit. ``dims``: dimension name -> side
    (:func:`edges`), or names alone (:func:`on_edge`), whose both bounds move."""
    sides = dict(dims) if isinstance(dims, Mapping) else {name: ("low", "high") for name in dims}
    out = dict(space)
    for name, side in sides.items():
        dimension = space[name]
        if not isinstance(dimension, RANGES):
            raise ValueError(f"{name} is categorical ({dimension.describe()}): it has no bound to move")
        for one in (side,) if isinstance(side, str) else side:
            if one not in ("low", "high"):
                raise ValueError(f"the side of {name} is 'low' or 'high', got {one!r}")
            out[name] = out[name].widened(one)
    return SearchSpace(out)


def covering(space: SearchSpace, points: list[Mapping]) -> SearchSpace:
    """``space`` with each range widened to hold every value ``points`` tried (the space a tuning has
    searched once its extensions ran)."""
    out = dict(space)
    for name, dimension in space.items():
        values = [float(p[name]) for p in points if isinstance(dimension, RANGES) and p.get(name) is not None]
        if values:
            out[name] = replace(dimension, low=min(dimension.low, *values), high=max(dimension.high, *values))
    return SearchSpace(out)


def edge_flag(space: SearchSpace, trials_winner: Mapping, winner: Mapping, extensions: list[tuple[Mapping, str]]) -> str:
    """What the tables say about a (problem, method)'s tuning: ``interior``; or the edge the trials' winner
    sat on (``lr high``) and what the ``extensions`` ((point, run status) in order) found: ``-> interior after
    N extension(s)``, ``-> the extension diverged``, ``-> still on the edge after N extension(s)``."""
    sides = edges(space, trials_winner)
    if not sides:
        return "interior"
    where = "edge: " + ", ".join(f"{name} {side}" for name, side in sides.items())
    if not extensions:
        return f"{where} (not extended)"
    count = f"{len(extensions)} extension{'s' if len(extensions) != 1 else ''}"
    if edges(covering(space, [p for p, _ in extensions]), winner):
        return f"{where} -> still on the edge after {count}"
    if any(status != "ok" for _, status in extensions):
        return f"{where} -> the extension diverged ({count})"
    return f"{where} -> interior after {count}"


def markdown(spaces: Mapping[str, SearchSpace]) -> str:
    """The table of ``docs/usage.md`` ("Search spaces"): method -> its space, one row a dimension."""
    rows = ["| method | dimension (`optimizer.<key>`) | range | scale | source |", "|---|---|---|---|---|"]
    for method, space in spaces.items():
        rows += [f"| `{method}` | `{name}` | {dimension.describe()} | {dimension.scale} | "
                 f"{dimension.source.replace('|', '&#124;')} |" for name, dimension in space.items()]
    return "\n".join(rows) + "\n"
