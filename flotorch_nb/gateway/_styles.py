"""Pure: how ``offline/concise`` and ``offline/verbose`` reshape the assistant's text answer.

Model comparison needs models that differ the way real ones do, deterministically: one that says the
essential in a line or two, one that adds context and caveats. Both start from ``offline/assistant``'s
answer, so they stay about the prompt; structured answers (tool calls, JSON) are not reshaped, since
they must validate, only the prose they are built from.
"""

from __future__ import annotations

import re

from ._data import phrases
from ._text import first_statement

__all__ = ["concise", "verbose"]

_LIST_LINE = re.compile(r"^(?:[-*] |\d+\. )")
_CODE = re.compile(r"```[\s\S]*?```")
_MAX_ITEMS = 3


def concise(reply: str) -> str:
    """The core of ``reply``: its code block, its first three list items, or its first sentence."""
    code = _CODE.search(reply)
    if code:
        return code.group(0)
    lines = reply.splitlines()
    items = [line for line in lines if _LIST_LINE.match(line)]
    if items:
        return "\n".join(items[:_MAX_ITEMS])
    if "\n" in reply.strip() and len(lines) <= 4:  # a poem: its lines are the answer
        return reply.strip()
    return first_statement(reply.split("\n\n")[0], 25)


def verbose(reply: str) -> str:
    """``reply``, then a paragraph of context and a short list of things to keep in mind.

    The addition is the same for every prompt on purpose: put into a template, a prompt's words too
    often read wrongly ("questions about make tea"), and the reply already carries the prompt.
    """
    addition: str = phrases()["styles"]["verbose"]
    return reply + addition
