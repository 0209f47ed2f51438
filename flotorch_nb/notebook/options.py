"""How the magics read their options, and what they say when configuration is missing (IPython only for
``UsageError``): kept apart so ``magics.py`` stays about what a cell does."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from IPython.core.error import UsageError

from .. import _config
from .session import Session

__all__ = [
    "EVAL_ONLY",
    "EVAL_REFUSES",
    "call_params",
    "concurrency_option",
    "configuration_fix",
    "parse_options",
    "refuse",
    "split_words",
]


def split_words(line: str) -> list[str]:
    """``line`` split into words shell-style: quotes group and are removed, and nothing else changes.

    Backslashes are kept as typed (``shlex.split`` would read ``C:\\Users\\me`` as escapes and
    give ``C:Usersme``): Windows paths and regular expressions arrive intact. A quote inside a word is
    written with the other kind of quotes around it.
    """
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""  # a "#" in a prompt option is text
    lexer.escape = ""
    return list(lexer)


def parse_options(func: Any, line: str, magic: str) -> Any:
    """Parse ``line`` with the magic's argparse parser, shell-style (see ``split_words``)."""
    try:
        tokens = split_words(line)
    except ValueError as exc:  # e.g. an unbalanced quote
        raise UsageError(f"{magic}: cannot split the options ({exc}); check the quotes") from None
    try:
        return func.parser.parse_args(tokens)
    except UsageError as exc:
        raise UsageError(f"{magic}: {exc} — see {magic}? for the options") from None


def concurrency_option(text: str) -> int | str:
    """``--concurrency``: a whole number >= 1, or ``auto`` (what ``batch(concurrency=...)`` takes).

    An argparse ``type``: a typo is a UsageError while the line is parsed, before any request."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a whole number >= 1 or "auto", not {text!r}')
    return value


def configuration_fix(session: Session, exc: Exception, *, model_given: bool = False) -> UsageError:
    """A one-line UsageError saying what configuration is missing and how to provide it."""
    fixes = {
        _config.ENV_MODEL_ID: "%flotorch model NAME (or -m NAME)",
        _config.ENV_API_KEY: "%flotorch login",
        _config.ENV_BASE_URL: "%flotorch base_url https://...",
    }
    missing = [name for name in session.missing() if not (model_given and name == _config.ENV_MODEL_ID)]
    if missing:
        how = "; ".join(fixes[name] for name in missing)
        return UsageError(
            f"FloTorch is not configured: {' and '.join(missing)} not set. Fix: {how} "
            "(or set the environment variables; with none of them set, %reload_ext flotorch_nb "
            "starts the offline gateway)"
        )
    return UsageError(f"FloTorch configuration error: {exc}")


#: The options that grade an evaluation (``--eval``), refused anywhere else.
EVAL_ONLY = ("target", "score", "judge", "judge_model")

#: Whether an option was given, for the kinds of cell that would otherwise drop it without a word.
_GIVEN: dict[str, Callable[[Any], bool]] = {
    "--map": lambda args: args.map is not None,
    "--tools": lambda args: bool(args.tools),
    "--agent": lambda args: bool(args.agent),
    "--approve": lambda args: bool(args.approve),
    "--max-steps": lambda args: args.max_steps is not None,
    "-c": lambda args: bool(args.cont),
    "-s": lambda args: args.system is not None,
    "--schema": lambda args: bool(args.schema),
    "--validation-retries": lambda args: args.validation_retries is not None,
    "-f": lambda args: args.format != "markdown",
    "--compare": lambda args: bool(args.compare),
    "--keep-errors": lambda args: bool(args.keep_errors),
    "--fallback": lambda args: args.fallback is not None,
}

#: An evaluation: its own prompts, models and grading; no conversation, tools or fallbacks.
EVAL_REFUSES = (
    "--map",
    "--tools",
    "--agent",
    "--approve",
    "--max-steps",
    "-c",
    "-s",
    "--schema",
    "--validation-retries",
    "-f",
    "--compare",
    "--keep-errors",
    "--fallback",
)


def refuse(args: Any, options: Sequence[str], magic: str, what: str) -> None:
    """A ``UsageError`` naming those of ``options`` the cell was given, which ``what`` does not use."""
    given = [option for option in options if _GIVEN[option](args)]
    if given:
        raise UsageError(f"%%flotorch {magic}: {', '.join(given)}: options that do not apply to {what}")


def call_params(args: Any) -> dict[str, Any]:
    """The call parameters a cell's options set (``-t 0`` is a temperature, not "unset")."""
    if args.validation_retries is not None and not args.schema:
        raise UsageError(
            "%%flotorch: --validation-retries re-asks when an answer fails --schema; add --schema"
        )
    given = (
        ("temperature", args.temperature),
        ("max_tokens", args.max_tokens),
        ("validation_retries", args.validation_retries),
    )
    return {name: value for name, value in given if value is not None}
