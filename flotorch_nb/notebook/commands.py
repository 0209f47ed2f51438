"""The ``%flotorch`` subcommands as plain functions of the session, free of IPython.

Each takes the ``Session`` and the subcommand's words and returns what to show: a line of text
(printed), a MIME bundle (displayed), an object that displays itself (a chart), or a list of those.
A bad argument raises ``ConfigurationError`` with the reason; ``magics.py`` turns that into a
``UsageError`` and does the printing, so these functions are easy to test and ``magics.py`` stays
about IPython. ``login`` lives in ``magics.py`` because
asking for input is the notebook's business.

The key is never part of anything returned here: only where it comes from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from .. import _config
from .._errors import ConfigurationError
from ..pricing import format_cost, format_price, parse_money
from . import autostart, call_log
from .session import Session

__all__ = ["COMMANDS", "Command", "Output"]

#: A line to print, a MIME bundle to display, an object that displays itself, or several of those.
Output = str | dict[str, str] | Any


def config(session: Session) -> Output:
    """Model, base URL, where the key comes from (never the key), mode, budget and session size."""
    source = session.api_key_source
    key = "not set — %flotorch login"
    if source:
        key = f"set (••••) from {'%flotorch login' if source == 'session' else source}"
    base = session.base_url
    # The banner's rule, so both say the same (also for the launcher's gateway outside the kernel).
    mode = "OFFLINE (embedded gateway)" if autostart.is_offline(base, session.model_id) else "live"
    if session.mode == "replay":
        mode = f"replay from {os.environ.get(_config.ENV_REPLAY)} (no network)"
    elif session.mode == "record":
        mode += f", recording to {os.environ.get(_config.ENV_RECORD)}"
    size = f"{len(session.conversation)} turns, {len(session.ledger)} calls, {session.spent_tokens} tokens"
    prices = session.ledger.prices
    priced = f"{len(prices)} models" + (f" from {prices.source}" if prices.source else "")
    rows = [
        ("model", session.model_id or "not set — %flotorch model NAME"),
        ("base URL", _config.display_url(base) if base else "not set — %flotorch base_url URL"),
        ("API key", key),
        ("mode", mode),
        ("budget", _budgets(session)),
        ("prices", priced if len(prices) else "none — %flotorch price MODEL IN OUT, or FLOTORCH_PRICES"),
        ("session", size),
    ]
    return "\n".join(f"{name:<9} {value}" for name, value in rows)


def model(session: Session, name: str | None = None) -> Output:
    """Show, or set, the session's default model."""
    if name is not None:
        session.configure(model_id=name)
    return f"model: {session.model_id or 'not set'}"


def base_url(session: Session, url: str | None = None) -> Output:
    """Show, or set (validated: http or https), the gateway URL."""
    if url is not None:
        session.configure(base_url=url)
    base = session.base_url
    return f"base URL: {_config.display_url(base) if base else 'not set'}"


def _budgets(session: Session) -> str:
    tokens = "none" if session.budget is None else f"{session.budget} tokens ({session.spent_tokens} used)"
    money = session.money_budget
    if money is None:
        return tokens if session.budget is not None else "none"
    dollars = f"{format_cost(money.limit)} ({format_cost(session.spent_money)} spent{_estimates(session)})"
    return dollars if session.budget is None else f"{tokens}; {dollars}"


def _estimates(session: Session) -> str:
    """Said after what the money budget counts as spent when that includes the estimates of calls
    without usage, which the tables show as "cost unknown" (``pricing``'s rule)."""
    return ", estimates included" if session.ledger.spend.estimated else ""


def usage(session: Session) -> Output:
    """The ledger table (tokens, and cost while prices are in use), the budget lines, and a chart."""
    bundle = session.ledger._repr_mimebundle_()
    lines = []
    if session.budget is not None:
        lines.append(f"budget: {session.spent_tokens} of {session.budget} tokens used")
    if session.money_budget is not None:
        spent, limit = format_cost(session.spent_money), format_cost(session.money_budget.limit)
        lines.append(f"money budget: {spent} of {limit} spent{_estimates(session)}")
    if lines:
        bundle = {
            "text/plain": "\n".join([bundle["text/plain"], *lines]),
            "text/html": bundle["text/html"]
            + "".join(f'<div class="flotorch-budget">{line}</div>' for line in lines),
        }
    if not len(session.ledger):
        return bundle
    return [bundle, *_chart(session)]


def _chart(session: Session) -> list[Any]:
    """The ledger's chart beside its table, when matplotlib is installed (the table says it all)."""
    ledger = session.ledger
    # No prices, no costs shown (not even a panel of "cost unknown"): the table has no cost column.
    costs = ledger.costs() if ledger.totals.cost_text else None
    try:
        from .charts import ledger_chart

        return [ledger_chart(ledger.rows(), costs)]
    except ImportError:
        return []


def budget(session: Session, value: str | None = None) -> Output:
    """Show, set (``N`` tokens, ``$N`` dollars) or remove (``off``: both) the budgets."""
    if value is not None:
        if value.lower() in ("off", "none"):
            session.set_budget(None)
            session.set_money_budget(None)
        elif value.startswith("$"):
            session.set_money_budget(parse_money(value))
        else:
            try:
                session.set_budget(int(value.replace(",", "").replace("_", "")))
            except (ValueError, ConfigurationError):
                raise ConfigurationError(
                    f"expected a whole number of tokens > 0, an amount such as $5, or 'off', got {value!r}"
                ) from None
    used = session.spent_tokens
    line = f"token budget: none ({used} tokens used so far)"
    if session.budget is not None:
        line = f"token budget: {session.budget} tokens ({used} used so far)"
    money = session.money_budget
    if money is not None:
        spent = format_cost(session.spent_money)
        line += f"; money budget: {format_cost(money.limit)} ({spent} spent so far{_estimates(session)})"
    elif value is not None or len(session.prices()):
        # Both budgets named whenever one may have just changed ("off" removes both) or money counts.
        line += "; money budget: none"
    return line


def price(session: Session, model: str | None = None, *values: str) -> Output:
    """List the prices, show one model's, set it (``MODEL IN OUT``, dollars per 1M tokens) or remove
    it (``MODEL off``)."""
    table = session.prices()
    if model is None:
        rows = [f"{name}: {format_price(p)}" for name, p in table.items()]
        source = f" (file {table.source} and %flotorch price)" if table.source else ""
        if not rows:
            return "no prices set: %flotorch price MODEL IN OUT, or a FLOTORCH_PRICES file"
        return "\n".join([f"prices in dollars per 1M tokens{source}:", *rows])
    if values == ("off",):
        table.remove(model)
        return f"{model}: no price (its cost shows as unknown)"
    if len(values) == 1:
        raise ConfigurationError("give both prices, input and output: %flotorch price MODEL IN OUT")
    if values:
        table.set(model, *values)
    return f"{model}: {format_price(table.get(model))}"


def provenance(session: Session) -> Output:
    """Every answer of this session with its provenance, as a table."""
    return session.answers._repr_mimebundle_()


def history(session: Session) -> Output:
    """The ``%%flotorch`` conversation, each answer with its footer."""
    conversation = session.conversation
    if not conversation.turns:
        return "no conversation yet: run a %%flotorch cell first"
    return {
        "text/plain": conversation.to_markdown(title="Conversation", totals=False),
        "text/html": conversation.history_html(),
    }


def reset(session: Session) -> Output:
    """Clear the conversation and the ledger; say what was cleared and what was kept."""
    turns, calls = session.clear()
    return (
        f"reset: cleared the conversation ({turns} turns) and the usage ledger ({calls} calls); "
        "configuration and budget unchanged"
    )


def export(session: Session, path: str) -> Output:
    """Write the conversation to a Markdown file (overwritten if it exists)."""
    target = Path(path).expanduser()
    if target.suffix.lower() not in (".md", ".markdown"):
        raise ConfigurationError(f"the file must end in .md, got {path!r}")
    if not target.parent.is_dir():
        raise ConfigurationError(f"the folder {str(target.parent)!r} does not exist")
    conversation = session.conversation
    if not conversation.turns:
        raise ConfigurationError("no conversation to export yet; run a %%flotorch cell first")
    text = conversation.to_markdown(title="FloTorch conversation", totals=False)
    target.write_text(text, encoding="utf-8")
    return f"exported {len(conversation)} turns to {target}"


def record(session: Session, directory: str) -> Output:
    """Record every exchange to ``directory``: exactly what ``FLOTORCH_RECORD=directory`` does."""
    target = Path(directory).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise ConfigurationError(f"{str(target)!r} is a file, not a folder")
    session.setenv(_config.ENV_REPLAY, None)
    session.setenv(_config.ENV_RECORD, str(target))
    session.close()
    return f"recording every exchange to {target} (FLOTORCH_RECORD); %flotorch live stops"


def replay(session: Session, directory: str) -> Output:
    """Answer from the recordings in ``directory``: what ``FLOTORCH_REPLAY=directory`` does."""
    target = Path(directory).expanduser().resolve()
    if not target.is_dir():
        raise ConfigurationError(f"no such folder {str(target)!r}; record one with %flotorch record DIR")
    session.setenv(_config.ENV_RECORD, None)
    session.setenv(_config.ENV_REPLAY, str(target))
    session.close()
    return f"replaying answers from {target} (FLOTORCH_REPLAY): no network; an unrecorded prompt fails"


def live(session: Session) -> Output:
    """Stop recording and replaying."""
    session.setenv(_config.ENV_RECORD, None)
    session.setenv(_config.ENV_REPLAY, None)
    session.close()
    base = session.base_url
    return f"live: requests go to {_config.display_url(base) if base else 'the configured gateway'}"


def cache(session: Session, path: str | None = None) -> Output:
    """Show, set (``PATH``, checked now) or stop (``off``) the answer cache: ``FLOTORCH_CACHE``."""
    from ..cache import ENV_CACHE, AnswerCache, CacheError

    # Through the session, as record/replay do, so that reset() turns the cache off again.
    if path is not None and path.lower() in ("off", "none"):
        session.setenv(ENV_CACHE, None)
        session.close()
        return "answer cache off: every request goes to the gateway"
    if path is not None:
        target = Path(path).expanduser().resolve()
        try:
            found = AnswerCache(target).open()
        except CacheError as exc:
            raise ConfigurationError(str(exc)) from None
        session.setenv(ENV_CACHE, str(target))
        session.close()
        return f"answer cache: {target} ({len(found)} answers); repeated requests are answered from it"
    current = os.environ.get(ENV_CACHE)
    if not current:
        return "answer cache: off (%flotorch cache PATH turns it on)"
    return f"answer cache: {current} (FLOTORCH_CACHE)"


class Command(NamedTuple):
    """How ``%flotorch NAME`` is run: everything ``magics.py`` checks before calling ``function``."""

    function: Callable[..., Output]
    #: The fewest and the most words it takes.
    least: int
    most: int
    #: What follows ``%flotorch`` in its usage line.
    usage: str
    #: Whether it reads ``-...`` options of its own; elsewhere such a word is a mistyped option
    #: (``model --help``), refused rather than taken as the value.
    options: bool = False


#: name -> its ``Command``; ``login`` is handled by ``magics.py``.
COMMANDS: dict[str, Command] = {
    "config": Command(config, 0, 0, "config"),
    "model": Command(model, 0, 1, "model [NAME]"),
    "base_url": Command(base_url, 0, 1, "base_url [URL]"),
    "usage": Command(usage, 0, 0, "usage"),
    "budget": Command(budget, 0, 1, "budget [N|$N|off]"),
    "price": Command(price, 0, 3, "price [MODEL [IN OUT|off]]"),
    "provenance": Command(provenance, 0, 0, "provenance"),
    "history": Command(history, 0, 0, "history"),
    "reset": Command(reset, 0, 0, "reset"),
    "export": Command(export, 1, 1, "export PATH.md"),
    "record": Command(record, 1, 1, "record DIR"),
    "replay": Command(replay, 1, 1, "replay DIR"),
    "live": Command(live, 0, 0, "live"),
    "cache": Command(cache, 0, 1, "cache [PATH|off]"),
    "log": Command(call_log.log, 0, 2, "log [on [PATH]|off]"),
    "logs": Command(call_log.logs, 0, 12, call_log.LOGS_USAGE, options=True),
}
