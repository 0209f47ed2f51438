"""One ``%%flotorch -m a,b,c`` cell: the same prompt to every model at once, answers side by side.

``compare.compare`` runs the requests (one task per model, each through the session client's hooks:
budgets, ledger, the session's answer log); this module is what the cell shows while it runs and after:

- while answers stream in, one live view (``compare.preview_bundle``): a column per model with
  its text so far, a finished model's column drawn final at once; redrawn as ``pacing.Pacer``
  allows. In terminal IPython nothing is drawn until the end (the comparison prints as text);
- at the end, the preview is cleared and the cell shows a small chart (latency and tokens per
  model, ``charts.comparison_chart``; only with matplotlib) and then its value, the ``Comparison``:
  a static, sanitized table with the answers' provenance in its output metadata;
- a model that failed shows its typed error in its own column while the others finish; the cell
  then raises that error (nbmake and nbclient see a failed cell) after showing the comparison,
  unless ``--keep-errors``.

The comparison is not added to the ``%%flotorch`` conversation (whose answer would it be?); ``-c``
still sends the conversation so far to every model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.display import clear_output, display

from .._errors import FlotorchError, InvalidRequestError
from ..compare import compare, parse_models, preview_bundle
from ..pricing import shared_prices
from .answer_cell import PREVIEW_INTERVAL_S, is_terminal, one_line_traceback
from .pacing import Pacer

if TYPE_CHECKING:
    from ..compare import Comparison, ModelResult
    from ..llm import FlotorchLLM

__all__ = ["LiveView", "cell", "fail", "model_list", "models_of", "run"]


def models_of(spec: str | None, default: str | None, *, compare: bool) -> tuple[str, ...]:
    """The models a cell compares (``-m a,b,c``, or ``--compare`` with ``-m`` or ``default``:
    ``FLOTORCH_COMPARE_MODELS``, else the session's model), or ``()`` for a single answer; a
    ``UsageError`` for a list that is not one."""
    if not (compare or (spec and "," in spec)):
        return ()
    spec = spec or default
    if not spec:
        raise UsageError(
            "%%flotorch --compare: name the models, e.g. -m model-a,model-b (or set FLOTORCH_COMPARE_MODELS)"
        )
    return model_list(spec)


def model_list(spec: str) -> tuple[str, ...]:
    """``-m a,b,c`` as its models by ``compare.parse_models``, the one rule (at least one, none
    twice), for every kind of cell; a ``UsageError`` that quotes ``-m`` for a list that is not one."""
    try:
        return parse_models(spec)
    except InvalidRequestError as exc:
        raise UsageError(f"%%flotorch: -m {spec}: {exc}") from None


def cell(
    shell: Any,
    client: FlotorchLLM,
    messages: list[dict[str, Any]],
    models: tuple[str, ...],
    params: dict[str, Any],
    *,
    stream: bool,
    keep_errors: bool,
    output: str | None,
) -> Comparison:
    """The whole comparison cell: run it, keep it in ``output`` (``-o VAR``) even if it fails, and
    fail the cell with the first model's error (one line) unless ``keep_errors``."""
    priced = len(shared_prices()) > 0  # the session client just reread FLOTORCH_PRICES
    try:
        comparison = run(shell, client, messages, models, params, stream=stream, priced=priced)
    except InvalidRequestError as exc:  # the same for every model: an option mistake
        raise UsageError(f"%%flotorch: {exc}") from None
    if output:
        shell.user_ns[output] = comparison
    if comparison.errors and not keep_errors:
        try:
            fail(comparison)
        except FlotorchError as exc:
            one_line_traceback(exc, shell)
            raise
    return comparison


class LiveView:
    """The display a comparison streams into: every model's text so far, finished columns final."""

    def __init__(self, models: tuple[str, ...], *, priced: bool) -> None:
        self.models = tuple(models)
        self.priced = priced
        self._pieces: dict[str, list[str]] = {m: [] for m in self.models}
        self._finished: dict[str, ModelResult] = {}
        self._pacer = Pacer(PREVIEW_INTERVAL_S)
        self._handle = display(self._bundle(), raw=True, display_id=True)  # type: ignore[no-untyped-call]

    def _bundle(self) -> dict[str, str]:
        texts = {m: "".join(p) for m, p in self._pieces.items()}
        return preview_bundle(self.models, texts, self._finished, priced=self.priced)

    def _draw(self) -> None:
        with self._pacer.redraw():
            self._handle.update(self._bundle(), raw=True)

    def delta(self, model: str, text: str) -> None:
        """``on_delta``: a piece of ``model``'s answer arrived."""
        self._pieces[model].append(text)
        if self._pacer.due():
            self._draw()

    def result(self, result: ModelResult) -> None:
        """``on_result``: a model finished (answered or failed); its column is drawn final now."""
        self._finished[result.model] = result
        self._draw()


def run(
    shell: Any,
    client: FlotorchLLM,
    messages: list[dict[str, Any]],
    models: tuple[str, ...],
    params: dict[str, Any],
    *,
    stream: bool,
    priced: bool,
) -> Comparison:
    """Compare ``models`` on ``messages`` in this cell: the live view, then the chart; return the
    ``Comparison`` (the cell's value, or for :func:`fail` to show and raise)."""
    live = stream and not is_terminal(shell)
    if live:
        view = LiveView(models, priced=priced)
        comparison = compare(client, messages, models, on_delta=view.delta, on_result=view.result, **params)
        clear_output(wait=True)  # type: ignore[no-untyped-call]  # when the chart or table arrives
    else:
        comparison = compare(client, messages, models, **params)
    chart = _chart(comparison)
    if chart is not None and not is_terminal(shell):
        display(chart)  # type: ignore[no-untyped-call]
    return comparison


def fail(comparison: Comparison) -> None:
    """Show the comparison (every column, errors in theirs), then raise the first model's error, so
    the cell fails as a single answer's would."""
    display(comparison)  # type: ignore[no-untyped-call]
    comparison.raise_for_errors()


def _chart(comparison: Comparison) -> Any:
    """Latency and tokens per model beside the table, when matplotlib is installed and a model
    answered (the table says it all otherwise)."""
    if not comparison.responses:
        return None
    from .charts import comparison_chart

    try:
        return comparison_chart(comparison)
    except ImportError:  # charts import matplotlib when they draw
        return None
