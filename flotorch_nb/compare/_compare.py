"""Running a comparison and what it returns: ``Comparison`` / ``ModelResult`` (see the package)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import _bridge
from .._errors import ConfigurationError, InvalidRequestError
from .._records import output_metadata
from ..pricing import PriceTable, default_prices
from ._view import comparison_html, comparison_text

if TYPE_CHECKING:
    import pandas

    from .._client import Client
    from .._response import LLMResponse

__all__ = [
    "Comparison",
    "ComparisonCancelled",
    "ComparisonInterrupted",
    "ModelResult",
    "acompare",
    "compare",
    "parse_models",
]

DeltaCallback = Callable[[str, str], None]
ResultCallback = Callable[["ModelResult"], None]


def parse_models(
    models: str | Sequence[str],
    *,
    what: str = "compare",
    error: type[InvalidRequestError] = InvalidRequestError,
) -> tuple[str, ...]:
    """``"a,b, c"`` or ``["a", "b", "c"]`` -> ``("a", "b", "c")``; at least one, none twice.

    The one rule for a list of models (``compare``, ``-m a,b``, ``evaluate``); ``what`` names the
    caller in the message, ``error`` is its class (an ``InvalidRequestError``)."""
    if not isinstance(models, Iterable) or isinstance(models, Mapping):  # None, 123: say what is wanted
        raise error(
            f"{what} needs models: a list of model names or a comma-separated string, e.g. "
            f"models=['a', 'b'] or models='a,b'; got {models!r:.80}"
        )
    names = models.split(",") if isinstance(models, str) else list(models)
    if any(not isinstance(name, str) for name in names):
        raise error(f"models must be model names (strings), got {models!r:.80}")
    cleaned = tuple(name.strip() for name in names if name.strip())
    if not cleaned:
        raise error(f"{what} needs at least one model (models= names no model), e.g. models=['a', 'b']")
    twice = sorted({name for name in cleaned if cleaned.count(name) > 1})
    if twice:
        raise error(f"model {twice[0]!r} is listed twice; each model is asked once")
    return cleaned


@dataclass(slots=True)
class ModelResult:
    """One model's column: its answer or its error, what it cost, and where it came from."""

    model: str
    response: LLMResponse | None = None
    error: Exception | None = None
    #: The answer's text; for a stream that broke, what had arrived.
    text: str = ""
    #: Dollars, or None: "cost unknown" (no price for the model, or no token counts).
    cost: Decimal | None = None
    #: The provenance record of the answer (None for an error).
    provenance: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Whether the model answered."""
        return self.error is None and self.response is not None


@dataclass(slots=True, eq=False)
class Comparison:
    """The answers of several models to one request, in the order the models were asked."""

    results: tuple[ModelResult, ...]
    messages: list[dict[str, Any]] = field(default_factory=list, repr=False)
    #: Whether a price table was in use: footers then show each cost ("cost unknown" without a price).
    priced: bool = False

    @property
    def models(self) -> tuple[str, ...]:
        """The models, in column order."""
        return tuple(r.model for r in self.results)

    @property
    def responses(self) -> dict[str, LLMResponse]:
        """Model -> answer, for the models that answered."""
        return {r.model: r.response for r in self.results if r.response is not None and r.error is None}

    @property
    def errors(self) -> dict[str, Exception]:
        """Model -> the typed error it failed with."""
        return {r.model: r.error for r in self.results if r.error is not None}

    @property
    def provenance(self) -> list[dict[str, Any]]:
        """One provenance record per answer."""
        return [r.provenance for r in self.results if r.provenance is not None]

    def __getitem__(self, model: str) -> ModelResult:
        for result in self.results:
            if result.model == model:
                return result
        raise KeyError(model)

    def raise_for_errors(self) -> None:
        """Raise the first model's error (the others named in its notes) if any model failed; what a
        ``%%flotorch -m a,b`` cell does so a notebook run in CI fails, unless ``--keep-errors``."""
        errors = list(self.errors.items())
        if not errors:
            return
        model, first = errors[0]
        note = f"in a comparison of {', '.join(self.models)}: {model} failed"
        if len(errors) > 1:
            note += "; also " + ", ".join(f"{m} ({type(e).__name__})" for m, e in errors[1:])
        if note not in getattr(first, "__notes__", ()):
            first.add_note(note)
        raise first

    def to_pandas(self) -> pandas.DataFrame:
        """One row per model: model, answer, tokens, latency_ms, cost (dollars; NaN = unknown), source,
        error_type, error."""
        import pandas as pd

        rows = []
        for r in self.results:
            resp, usage = r.response, (r.response.usage if r.response else None)
            rows.append(
                {
                    "model": r.model,
                    "answer": r.text if r.ok else None,
                    "input_tokens": usage.input_tokens if usage else None,
                    "output_tokens": usage.output_tokens if usage else None,
                    "tokens": usage.total_tokens if usage else None,
                    "latency_ms": round(resp.latency_s * 1000, 3) if resp else None,
                    "cost": float(r.cost) if r.cost is not None else None,
                    "source": resp.source if resp else None,
                    "error_type": type(r.error).__name__ if r.error else None,
                    "error": str(r.error) if r.error else None,
                }
            )
        frame = pd.DataFrame(rows)
        for column in ("input_tokens", "output_tokens", "tokens"):
            frame[column] = frame[column].astype("Int64")
        frame["cost"] = frame["cost"].astype("float64")
        return frame

    def __repr__(self) -> str:
        """The side-by-side table as text (the notebook's ``text/plain``): what ``print(cmp)`` shows
        in plain Python, as ``BatchResult`` prints its summary."""
        return comparison_text(self.results, priced=self.priced)

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """Plain text and sanitized HTML, with the answers' provenance as the output's metadata."""
        data = {
            "text/plain": comparison_text(self.results, priced=self.priced),
            "text/html": comparison_html(self.results, priced=self.priced),
        }
        return data, output_metadata(self.provenance)


# -- running -----------------------------------------------------------------------------------------
class ComparisonCancelled(asyncio.CancelledError):
    """``acompare()``'s task was cancelled; ``.result`` holds the columns that had finished."""

    def __init__(self, result: Comparison) -> None:
        answered = sum(r.ok for r in result.results)
        super().__init__(
            f"comparison cancelled: {answered} of {len(result.results)} models answered (see .result)"
        )
        self.result = result


class ComparisonInterrupted(KeyboardInterrupt):
    """``compare()`` was interrupted (Ctrl-C, a kernel interrupt); ``.result`` holds what finished."""

    def __init__(self, result: Comparison) -> None:
        answered = sum(r.ok for r in result.results)
        super().__init__(
            f"comparison interrupted: {answered} of {len(result.results)} models answered (see .result)"
        )
        self.result = result


async def acompare(
    llm: Client,
    messages: list[dict[str, Any]],
    models: str | Sequence[str],
    *,
    prices: PriceTable | None = None,
    on_delta: DeltaCallback | None = None,
    on_result: ResultCallback | None = None,
    **params: Any,
) -> Comparison:
    """Ask every model at once; see the package docstring. ``params`` go to every call (temperature,
    max_tokens, tools, response_format, timeout...)."""
    names = parse_models(models)
    if "model" in params:
        raise InvalidRequestError("compare takes the models as models=[...], not model=")
    table = prices if prices is not None else default_prices()
    results = [ModelResult(name) for name in names]
    try:
        async with asyncio.TaskGroup() as group:
            for result in results:
                group.create_task(_ask(llm, messages, params, result, table, on_delta, on_result))
    except asyncio.CancelledError:
        # The group has cancelled and awaited every model's call (their connections are closed):
        # hand back the columns that finished, the others marked as not answered.
        from ..batch import ItemCancelledError

        for result in results:
            if result.response is None and result.error is None:
                result.error = ItemCancelledError("not answered: the comparison was stopped first")
        raise ComparisonCancelled(Comparison(tuple(results), list(messages), priced=len(table) > 0)) from None
    except BaseExceptionGroup as group:  # a callback broke (the caller's display): not a model's failure
        failed = [e.__cause__ for e in group.exceptions if isinstance(e, _CallbackFailed)]
        if failed and failed[0] is not None:
            raise failed[0] from None
        raise
    for result in results:
        if isinstance(result.error, InvalidRequestError | ConfigurationError):
            raise result.error  # the request itself is wrong, for every model alike
    return Comparison(tuple(results), list(messages), priced=len(table) > 0)


class _CallbackFailed(Exception):
    """Carries an exception raised by ``on_delta``/``on_result`` past the per-model error handling."""


async def _ask(
    llm: Client,
    messages: list[dict[str, Any]],
    params: Mapping[str, Any],
    result: ModelResult,
    prices: PriceTable,
    on_delta: DeltaCallback | None,
    on_result: ResultCallback | None,
) -> None:
    """One model's column: the client's own ``ainvoke``/``astream`` on ``llm.with_model`` (its hooks,
    retries and cache), into ``result``: the answer with its provenance, or the error."""
    try:
        client = llm.with_model(result.model)
    except Exception as exc:
        result.error = exc
        _call_back(on_result, result)
        return
    pieces: list[str] = []
    try:
        if on_delta is None:
            response = await client.ainvoke(messages, **params)
        else:
            async with client.astream(messages, **params) as stream:
                async for delta in stream:
                    pieces.append(delta)
                    _call_back(on_delta, result.model, delta)
                response = stream.response
        result.response, result.text = response, response.content
        result.cost = prices.cost(result.model, response.usage, response.model)
        result.provenance = response.provenance
    except _CallbackFailed:
        raise
    except Exception as exc:
        result.error, result.text = exc, "".join(pieces)
        result.response = getattr(exc, "response", None)  # a structured-output failure keeps its answer
    finally:
        await client.aclose()
    _call_back(on_result, result)


def _call_back(callback: Callable[..., None] | None, *args: Any) -> None:
    if callback is None:
        return
    try:
        callback(*args)
    except Exception as exc:
        raise _CallbackFailed(f"{getattr(callback, '__qualname__', callback)} raised") from exc


def compare(
    llm: Client,
    messages: list[dict[str, Any]],
    models: str | Sequence[str],
    *,
    prices: PriceTable | None = None,
    on_delta: DeltaCallback | None = None,
    on_result: ResultCallback | None = None,
    **params: Any,
) -> Comparison:
    """The blocking twin of :func:`acompare`, on the process's one bridge (``_bridge.run``): works in a
    plain script and inside a notebook cell (whose event loop is already running), with the callbacks
    called on this thread. Ctrl-C cancels every model in flight and raises ``ComparisonInterrupted``
    holding the columns that had finished."""

    def main(caller: _bridge.Caller) -> Coroutine[Any, Any, Comparison]:
        return acompare(
            llm,
            messages,
            models,
            prices=prices,
            on_delta=caller.wrap(on_delta),
            on_result=caller.wrap(on_result),
            **params,
        )

    return _bridge.run(main, interrupted=_interrupted)


def _interrupted(outcome: object) -> BaseException:
    if isinstance(outcome, ComparisonCancelled):
        return ComparisonInterrupted(outcome.result)
    if isinstance(outcome, Comparison):  # it had finished as the interrupt came
        return ComparisonInterrupted(outcome)
    return KeyboardInterrupt()
