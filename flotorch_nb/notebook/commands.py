"""The ``%flotorch`` subcommands as plain functions of the session, free of IPython.

Each takes the ``Session`` and the subcommand's words and returns what to show: a line of text
(printed) or a MIME bundle (displayed). A bad argument raises ``ConfigurationError`` with the
reason; ``magics.py`` turns that into a ``UsageError`` and does the printing, so these functions
are easy to test and ``magics.py`` stays about IPython. ``login`` lives in ``magics.py`` because
asking for input is the notebook's business.

The key is never part of anything returned here: only where it comes from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .. import _config
from .._errors import ConfigurationError
from . import autostart
from .session import Session

__all__ = ["COMMANDS", "Command", "Output"]

#: A line to print, or a MIME bundle to display.
Output = str | dict[str, str]


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
    budget = "none" if session.budget is None else f"{session.budget} tokens ({session.spent_tokens} used)"
    size = f"{len(session.conversation)} turns, {len(session.ledger)} calls, {session.spent_tokens} tokens"
    rows = [
        ("model", session.model_id or "not set — %flotorch model NAME"),
        ("base URL", _config.display_url(base) if base else "not set — %flotorch base_url URL"),
        ("API key", key),
        ("mode", mode),
        ("budget", budget),
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


def usage(session: Session) -> Output:
    """The ledger table, with the budget line when a budget is set."""
    bundle = session.ledger._repr_mimebundle_()
    if session.budget is None:
        return bundle
    line = f"budget: {session.spent_tokens} of {session.budget} tokens used"
    return {
        "text/plain": f"{bundle['text/plain']}\n{line}",
        "text/html": f'{bundle["text/html"]}<div class="flotorch-budget">{line}</div>',
    }


def budget(session: Session, value: str | None = None) -> Output:
    """Show, set (``N``) or remove (``off``) the token budget."""
    if value is not None:
        if value.lower() in ("off", "none"):
            session.set_budget(None)
        else:
            try:
                session.set_budget(int(value.replace(",", "").replace("_", "")))
            except (ValueError, ConfigurationError):
                raise ConfigurationError(
                    f"expected a whole number of tokens > 0 or 'off', got {value!r}"
                ) from None
    used = session.spent_tokens
    if session.budget is None:
        return f"token budget: none ({used} tokens used so far)"
    return f"token budget: {session.budget} tokens ({used} used so far)"


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

    if path is not None and path.lower() in ("off", "none"):
        os.environ.pop(ENV_CACHE, None)
        session.close()
        return "answer cache off: every request goes to the gateway"
    if path is not None:
        target = Path(path).expanduser().resolve()
        try:
            found = AnswerCache(target).open()
        except CacheError as exc:
            raise ConfigurationError(str(exc)) from None
        os.environ[ENV_CACHE] = str(target)
        session.close()
        return f"answer cache: {target} ({len(found)} answers); repeated requests are answered from it"
    current = os.environ.get(ENV_CACHE)
    if not current:
        return "answer cache: off (%flotorch cache PATH turns it on)"
    return f"answer cache: {current} (FLOTORCH_CACHE)"


Command = tuple[Callable[..., Output], int, int, str]
#: name -> (function, fewest words, most words, usage); ``login`` is handled by ``magics.py``.
COMMANDS: dict[str, Command] = {
    "config": (config, 0, 0, "config"),
    "model": (model, 0, 1, "model [NAME]"),
    "base_url": (base_url, 0, 1, "base_url [URL]"),
    "usage": (usage, 0, 0, "usage"),
    "budget": (budget, 0, 1, "budget [N|off]"),
    "history": (history, 0, 0, "history"),
    "reset": (reset, 0, 0, "reset"),
    "export": (export, 1, 1, "export PATH.md"),
    "record": (record, 1, 1, "record DIR"),
    "replay": (replay, 1, 1, "replay DIR"),
    "live": (live, 0, 0, "live"),
    "cache": (cache, 0, 1, "cache [PATH|off]"),
}
