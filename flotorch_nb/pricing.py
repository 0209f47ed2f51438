"""Prices per model, the cost of an answer, and a money budget enforced through the client hooks.

Money is ``decimal.Decimal`` in US dollars, never a float: ``0.1 + 0.2`` dollars must add up. A price is
what a person wrote down (a file named by ``FLOTORCH_PRICES``, or ``PriceTable.set`` at run time), and a
model without one has an *unknown* cost: :meth:`PriceTable.cost` returns ``None`` and
:func:`format_cost` shows "cost unknown". Nothing here guesses a price.

A price file is TOML or JSON (by its suffix; anything else is tried as TOML), one entry per model,
prices in dollars per million tokens::

    ["openai/gpt-4o-mini"]
    input_per_million = 0.15
    output_per_million = 0.60

    {"openai/gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.60}}

A malformed file is a ``ConfigurationError`` naming the file and the line: tomllib's and json's own
position for a syntax error, and for a wrong value the line of that model's entry.

One rule for showing money, in footers, comparisons, batches and ``%flotorch usage`` alike
(:func:`shown_cost`): dollars are shown only for a cost priced from the gateway's own token counts.
A call the gateway sent no ``usage`` for (or a stream stopped mid-way) has only an estimate of its
tokens (about 4 characters a token); its cost is shown as "cost unknown", as for a model without a
price, never as an unmarked figure that looks billed. Budgets still count those estimates (a stopped
reply is never free), and say so where they show what was spent.

What calls spent, and the money budget, are ``flotorch_nb.spending``'s. Pure: no I/O except reading
the price file, no IPython.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, Protocol

from ._errors import ConfigurationError

__all__ = [
    "ENV_PRICES",
    "UNKNOWN_COST",
    "Price",
    "PriceTable",
    "ShownCost",
    "default_prices",
    "describe_costs",
    "format_cost",
    "format_price",
    "parse_money",
    "reset_default_prices",
    "shared_prices",
    "shown_cost",
]

ENV_PRICES = "FLOTORCH_PRICES"
UNKNOWN_COST = "cost unknown"
_MILLION = Decimal(1_000_000)
#: The largest amount accepted anywhere (a budget, a price): far above any real one, and small enough
#: that every amount is shown to the cent (``Decimal``'s 28 digits; ``$1e30`` could not be).
MAX_DOLLARS = Decimal(1_000_000_000)
_FIELDS = ("input_per_million", "output_per_million")


class _TokenCounts(Protocol):
    @property
    def input_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Price:
    """Dollars per million input (prompt) tokens and per million output (answer) tokens."""

    input_per_million: Decimal
    output_per_million: Decimal

    def __post_init__(self) -> None:
        for name in _FIELDS:
            try:
                object.__setattr__(self, name, _money(getattr(self, name), name))
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        """The exact cost of that many tokens, in dollars."""
        return (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / _MILLION


def _money(value: object, what: str) -> Decimal:
    """A finite, non-negative Decimal from a Decimal, an int or a numeric string (never a bool)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number of dollars >= 0, got {value!r}")
    if isinstance(value, float):
        value = repr(value)  # 0.15 stays 0.15, not 0.1499999999999999944488848768742172978818416595458984375
    if isinstance(value, str):
        try:
            value = Decimal(value.strip().removeprefix("$"))
        except InvalidOperation:
            raise ValueError(f"{what} must be a number of dollars >= 0, got {value!r}") from None
    if isinstance(value, int):
        value = Decimal(value)
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        shown = value if isinstance(value, Decimal) else repr(value)  # "-2", not "Decimal('-2')"
        raise ValueError(f"{what} must be a number of dollars >= 0, got {shown}")
    if value > MAX_DOLLARS:
        raise ValueError(f"{what} must be at most ${MAX_DOLLARS:,}, got {value}")
    return value


def parse_money(text: str) -> Decimal:
    """``"$5"``, ``"5"``, ``"0.25"`` -> ``Decimal``; a ``ConfigurationError`` for anything else."""
    try:
        return _money(text, "an amount")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


class PriceTable:
    """Prices by model name; safe to share between threads (the kernel, a compare's workers).

    Prices set at run time (``set``) win over those loaded from a file, and survive a reload of it.
    """

    def __init__(self, prices: Mapping[str, Price] | None = None, *, source: str | None = None) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[str, Price] = dict(prices or {})
        self._set: dict[str, Price] = {}
        #: The file the loaded prices came from, if any.
        self.source = source

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PriceTable:
        """Read a TOML or JSON price file (see the module docstring); errors name the file and line."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigurationError(f"price file {path} cannot be read: {reason}") from None
        return cls(_parse(text, path), source=str(path))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PriceTable:
        """The file named by ``FLOTORCH_PRICES``, or an empty table when it is not set."""
        path = (os.environ if env is None else env).get(ENV_PRICES)
        return cls.load(path) if path else cls()

    def set(self, model: str, input_per_million: object, output_per_million: object) -> Price:
        """Set a model's price for this process (``%flotorch price MODEL IN OUT``)."""
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError("a price needs a model name")
        try:
            price = Price(
                _money(input_per_million, "input price"), _money(output_per_million, "output price")
            )
        except ValueError as exc:
            raise ConfigurationError(f"price of {model.strip()!r}: {exc}") from None
        with self._lock:
            self._set[model.strip()] = price
        return price

    def remove(self, model: str) -> None:
        """Forget a model's price (set at run time or loaded); unknown names are ignored."""
        with self._lock:
            self._set.pop(model, None)
            self._loaded.pop(model, None)

    def clear(self) -> None:
        """Forget every price, set at run time or loaded."""
        with self._lock:
            self._set.clear()
            self._loaded.clear()
            self.source = None

    def replace_loaded(self, other: PriceTable) -> None:
        """Take ``other``'s file prices (a reloaded file), keeping the prices set at run time."""
        with self._lock:
            self._loaded = dict(other._loaded)
            self.source = other.source

    def get(self, *models: str | None) -> Price | None:
        """The price of the first of ``models`` that has one (the model asked for, then the model the
        gateway says answered), else ``None``."""
        with self._lock:
            for model in models:
                if model:
                    price = self._set.get(model) or self._loaded.get(model)
                    if price is not None:
                        return price
        return None

    def cost(self, model: str | None, usage: _TokenCounts | None, *also: str | None) -> Decimal | None:
        """What ``usage`` cost on ``model`` in dollars; ``None`` ("cost unknown") without a price or
        without token counts. ``also``: other names of the model to try (the gateway's)."""
        price = self.get(model, *also)
        if price is None or usage is None:
            return None
        return price.cost(usage.input_tokens, usage.output_tokens)

    def items(self) -> Iterator[tuple[str, Price]]:
        """Every priced model, sorted by name."""
        with self._lock:
            merged = {**self._loaded, **self._set}
        yield from sorted(merged.items())

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.get(model) is not None

    def __len__(self) -> int:
        return len(dict(self.items()))

    def __repr__(self) -> str:
        return f"PriceTable({len(self)} models, source={self.source!r})"


# -- the price file ----------------------------------------------------------------------------------
def _parse(text: str, path: Path) -> dict[str, Price]:
    data = _parse_json(text, path) if path.suffix.lower() == ".json" else _parse_toml(text, path)
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"price file {path}: expected an object of models, each with input_per_million and "
            f"output_per_million, got a JSON {type(data).__name__}"
        )
    prices: dict[str, Price] = {}
    for model, entry in data.items():
        prices[model] = _entry(model, entry, text, path)
    return prices


def _parse_toml(text: str, path: Path) -> Any:
    import tomllib

    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line N, column M)": the position a person needs.
        raise ConfigurationError(f"price file {path} is not valid TOML: {exc}") from None


def _parse_json(text: str, path: Path) -> Any:
    import json

    try:
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"price file {path} is not valid JSON: {exc.msg} (at line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise ConfigurationError(f"price file {path} is nested too deeply to read") from None


def _entry(model: str, entry: object, text: str, path: Path) -> Price:
    def fail(problem: str, field: str | None = None) -> ConfigurationError:
        line = _line_of(text, model, field)
        where = f", line {line}" if line else ""
        return ConfigurationError(f"price file {path}{where}: model {model!r}: {problem}")

    if not isinstance(entry, Mapping):
        raise fail(f"expected a table with {' and '.join(_FIELDS)}, got {entry!r}")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise fail(f"unknown key {unknown[0]!r}; the keys are {' and '.join(_FIELDS)}", unknown[0])
    values = {}
    for field in _FIELDS:
        if field not in entry:
            raise fail(f"{field} is missing (dollars per million tokens)")
        try:
            values[field] = _money(entry[field], field)
        except ValueError as exc:
            raise fail(str(exc), field) from None
    return Price(**values)


def _line_of(text: str, model: str, field: str | None) -> int | None:
    """The 1-based line of ``field`` in ``model``'s entry (or of the entry itself), found in the text.

    The parsers keep no positions for values, so the entry is found where its name is written as a
    key — quoted or bare, as a TOML table header, a TOML key or a JSON key — and the field is the first
    line at or after it that starts with that key.
    """
    name = re.escape(model)
    entry = re.compile(rf"""(?:^|[\[\s.{{,])(?:"{name}"|'{name}'|{name})\s*[\]=:]""")
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if entry.search(line)), None)
    if start is None:
        return None
    if field:
        key = re.compile(rf"""(?:^|[{{,\s])["']?{re.escape(field)}["']?\s*[=:]""")
        for index in range(start, len(lines)):
            line = lines[index] if index != start else entry.split(lines[index], maxsplit=1)[-1]
            if key.search(line):
                return index + 1
    return start + 1


# -- a process-wide table for the notebook -----------------------------------------------------------
_DEFAULT = PriceTable()
_DEFAULT_PATH: list[str | None] = [None]
_DEFAULT_LOCK = threading.Lock()


def shared_prices() -> PriceTable:
    """The process-wide table as it is, without looking at ``FLOTORCH_PRICES``: what a hook reads,
    since a hook must not fail on a price file (``default_prices`` is called where an error can be
    shown: a new session client, ``%flotorch price``, a comparison)."""
    return _DEFAULT


def reset_default_prices() -> None:
    """Empty the process-wide table: prices set at run time and the file's (``reset()``, tests)."""
    with _DEFAULT_LOCK:
        _DEFAULT.clear()
        _DEFAULT_PATH[0] = None


def default_prices(env: Mapping[str, str] | None = None) -> PriceTable:
    """The process-wide table: ``FLOTORCH_PRICES``'s file (reread when the variable names another
    file) under the prices set at run time. ``%flotorch price`` and ``llm.compare`` share it."""
    path = (os.environ if env is None else env).get(ENV_PRICES) or None
    with _DEFAULT_LOCK:
        if path != _DEFAULT_PATH[0]:
            _DEFAULT.replace_loaded(PriceTable.load(path) if path else PriceTable())
            _DEFAULT_PATH[0] = path
    return _DEFAULT


# -- showing money -----------------------------------------------------------------------------------
def format_cost(cost: Decimal | None) -> str:
    """``$1.23`` from a dollar up, two significant digits below (``$0.0012``); "cost unknown" for None."""
    if cost is None:
        return UNKNOWN_COST
    if cost == 0:
        return "$0.00"
    if cost >= 1:
        return f"${cost:,.2f}"  # formatting rounds without the context's 28-digit limit
    # Below a dollar: two significant digits (a call often costs a fraction of a cent), at least cents.
    exponent = min(-2, cost.adjusted() - 1)
    return f"${cost.quantize(Decimal(1).scaleb(exponent)):f}"


def format_price(price: Price | None) -> str:
    """``$0.15 in / $0.60 out per 1M tokens``, or "no price"."""
    if price is None:
        return "no price"
    return f"${price.input_per_million:f} in / ${price.output_per_million:f} out per 1M tokens"


#: What a footer shows as the cost (``_render.Footer.cost``): dollars, ``"unknown"`` (a model without a
#: price), or None when no price table is in use, so notebooks that never set a price look as before.
ShownCost = Decimal | Literal["unknown"] | None


def shown_cost(cost: Decimal | None, prices: PriceTable, *, estimated: bool = False) -> ShownCost:
    """``cost`` as every display shows it (the module's rule): nothing while ``prices`` is empty,
    ``"unknown"`` without a price or when ``estimated`` (priced from a token estimate, not the
    gateway's counts), else the dollars."""
    if not len(prices):
        return None
    return "unknown" if cost is None or estimated else cost


def describe_costs(costs: Iterable[ShownCost]) -> str | None:
    """The sum of some calls' costs, honestly: ``$0.012``; ``$0.012 + 2 calls of unknown cost``;
    "cost unknown" when none is known; None when no call was priced nor unpriced (no table in use)."""
    known = [c for c in costs if c is not None]
    if not known:
        return None
    amounts = [c for c in known if isinstance(c, Decimal)]
    unknown = len(known) - len(amounts)
    if not amounts:
        return UNKNOWN_COST
    total = format_cost(sum(amounts, Decimal(0)))
    if unknown:
        return f"{total} + {unknown} call{'s' if unknown != 1 else ''} of unknown cost"
    return total
