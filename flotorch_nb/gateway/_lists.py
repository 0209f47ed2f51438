"""Pure: list and step answers of ``offline/assistant``, phrased the way a person would write them.

"List three steps to make tea" must read "Here are three steps to make tea:" followed by steps that
make tea, not "3 steps for make tea". Known lists and everyday procedures come from ``_data``;
anything else gets a general outline or general steps, said to be general; the templates and the
introductions are in ``data/phrases.toml``. The task after "to" is a verb phrase ("to *make tea*") and
fills verb templates; any other subject fills noun templates, so every sentence stays grammatical.
"""

from __future__ import annotations

import re

from ._data import list_for, phrases, procedure_for
from ._text import NUMBER_WORDS, asked_count, topic_of, words

__all__ = ["NUMBER_WORDS", "bullets", "number_word", "wants_steps"]

_DEFAULT_ITEMS = 4
_TASK = re.compile(r"\b(?:steps?|instructions|how)\b.*?\bto\s+([a-z][^.?!\n:;()]*)", re.IGNORECASE)
_SUBJECT = re.compile(r"\b(?:steps?|instructions|checklist)\s+(?:for|of|on)\s+([^.?!\n:;()]+)", re.IGNORECASE)


def number_word(n: int) -> str:
    """``three`` for 3 (up to ten), digits above."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def wants_steps(prompt: str) -> bool:
    """Whether the prompt asks for steps (numbered) rather than a list of points."""
    said = set(words(prompt))
    return bool(said & {"step", "steps", "instructions"}) or bool(re.search(r"\bhow to\b", prompt, re.I))


def _numbered(items: list[str]) -> str:
    return "\n".join(f"{index}. {item}" for index, item in enumerate(items, start=1))


def bullets(prompt: str) -> str:
    """The answer to a request for a list or for steps."""
    said = words(prompt)
    count = asked_count(prompt)
    templates = phrases()["lists"]
    if wants_steps(prompt):
        return _steps(prompt, said, count)
    known = list_for(said)
    if known:
        name, items = known
        n = min(count or len(items), len(items))
        # A name with "the" is the whole list (all of it, or some of all); any other is a sample.
        whole = "known_all" if n == len(items) else "known_some"
        intro: str = templates[whole if name.startswith("the ") else "known_sample"]
        shown = intro.format(n=number_word(n), all=number_word(len(items)), name=name.removeprefix("the "))
        return shown + "\n\n" + "\n".join(f"- {item}" for item in items[:n])
    n = count or _DEFAULT_ITEMS
    topic = topic_of(prompt)
    lines = "\n".join(f"- {aspect.format(t=topic)}" for aspect in templates["aspects"][:n])
    note = templates["general_note"].format(what="points")
    return f"{templates['outline'].format(topic=topic, n=number_word(n))}\n\n{lines}\n\n{note}"


def _steps(prompt: str, words: list[str], count: int | None) -> str:
    said = phrases()["lists"]
    known = procedure_for(words)
    if known:
        task, steps = known
        n = min(count or len(steps), len(steps))
        intro = said["steps"].format(n=number_word(n), plural=_plural(n), task=f"to {task}")
        return f"{intro}\n\n" + _numbered(list(steps[:n]))
    task_match = _TASK.search(prompt)
    if task_match:
        task = " ".join(task_match.group(1).split())
        templates, intro = said["verb_steps"], f"to {task}"
    else:
        subject = _SUBJECT.search(prompt)
        task = " ".join(subject.group(1).split()) if subject else topic_of(prompt)
        templates, intro = said["noun_steps"], f"for {task}"
    n = min(count or _DEFAULT_ITEMS, len(templates))
    body = _numbered([template.format(t=task) for template in templates[:n]])
    note = said["general_note"].format(what="steps")
    return f"{said['steps'].format(n=number_word(n), plural=_plural(n), task=intro)}\n\n{body}\n\n{note}"


def _plural(n: int) -> str:
    return "step" if n == 1 else "steps"
