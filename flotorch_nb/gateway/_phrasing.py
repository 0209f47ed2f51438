"""Pure: how the offline models word things: the phrasebook, the voice a system prompt asks for, and
how ``offline/concise`` and ``offline/verbose`` reshape the assistant's answer.

A system prompt can ask for brevity ("answer in one sentence", "keep answers short"): the reply is cut
to its first sentence, or to a list's first three items, and still says it is an offline answer. It
can ask for a pirate: prose is rewritten word by word, code blocks are left runnable. The phrasebook
and the pirate's words are in ``data/phrases.toml``.

Model comparison needs models that differ the way real ones do, deterministically: ``concise`` says
the essential in a line or two, ``verbose`` adds context and caveats. Both start from
``offline/assistant``'s answer, so they stay about the prompt; structured answers (tool calls, JSON)
are not reshaped, since they must validate, only the prose they are built from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ._data import phrase, phrases
from ._text import first_statement, hints_from
from ._validate import Message

__all__ = ["concise", "styled", "translation", "verbose"]

_LIST_LINE = re.compile(r"^(?:[-*] |\d+\. )")
_CODE = re.compile(r"```[\s\S]*?```")
_BRIEF = re.compile(r"\b(?:one (?:line|sentence)|single sentence|brief|briefly|concise|terse|short)\b")


def translation(last: str) -> str:
    """The phrasebook translation of the quoted (or trailing) text, into the language the prompt names."""
    lowered = last.lower()
    books: dict[str, dict[str, str]] = phrases()["phrasebook"]
    language = next((lang for lang in books if lang in lowered), "french")
    quoted = hints_from(last).quoted
    source = (
        quoted[0]
        if quoted
        else re.sub(r"(?i)^.*?translate\s*|\s*(?:in)?to\s+\w+\W*$", "", last).strip() or last
    )
    phrasebook = books[language]
    translated = source.lower()
    for said in sorted(phrasebook, key=len, reverse=True):
        translated = re.sub(rf"\b{re.escape(said)}\b", phrasebook[said], translated)
    return phrase("translation", language=language.capitalize(), text=translated)


def styled(reply: str, messages: Sequence[Message]) -> str:
    """Apply the system prompt's requests: brevity first, then a pirate voice."""
    system = " ".join(m.text for m in messages if m.role in ("system", "developer")).lower()
    if _BRIEF.search(system) and "```" not in reply:
        lines = reply.splitlines()
        items = [line for line in lines if _LIST_LINE.match(line)]
        if items:  # a list stays a list: its introduction and first three items, on one line
            reply = " ".join([lines[0].strip(), *items[:3]])
        else:
            reply = first_statement(reply.split("\n\n")[0].replace("\n", " / "), 30)
        if "offline" not in reply.lower():
            reply += phrase("brief_note")
    if "pirate" in system:
        reply = _pirate(reply)
    return reply


def _pirate(text: str) -> str:
    pirate: dict[str, str] = phrases()["pirate"]

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        new = pirate.get(word.lower())
        if new is None:
            return word
        return new[0].upper() + new[1:] if word[0].isupper() else new

    parts = text.split("```")
    # Only prose is rewritten; code blocks (odd parts) stay runnable.
    parts = [re.sub(r"[A-Za-z]+", swap, p) if i % 2 == 0 else p for i, p in enumerate(parts)]
    return "Arr! " + "```".join(parts)


def concise(reply: str) -> str:
    """The core of ``reply``: its code block, its first three list items, or its first sentence."""
    code = _CODE.search(reply)
    if code:
        return code.group(0)
    lines = reply.splitlines()
    items = [line for line in lines if _LIST_LINE.match(line)]
    if items:
        return "\n".join(items[:3])
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
