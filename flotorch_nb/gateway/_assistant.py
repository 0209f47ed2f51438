"""Pure: the text answers of ``offline/assistant`` — short, deterministic, and about the prompt.

There is no language model here. The assistant recognises what kind of answer a message asks for
(greeting, summary, haiku, list/steps, code, translation, arithmetic, a fact about a number, what it
is, a follow-up example, question, tool result follow-up, memory of the conversation) and answers
from its small knowledge (``_facts``, ``_numbers``, ``_lists``) or fills a template with the prompt's
own words, so notebooks show answers that read sensibly and that tests can predict. A system prompt
can make it talk like a pirate or answer in one sentence (``_phrasing``). Answers built from a
template say that they come from the offline model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ._facts import fact_for, find_fact, list_for
from ._json_mode import json_object
from ._lists import bullets
from ._numbers import arithmetic, number_fact
from ._phrasing import styled, translation
from ._snippets import SNIPPETS, generic_snippet
from ._text import first_sentence, keywords, topic_of, words
from ._validate import Message, Tool

__all__ = ["answer", "json_answer", "tool_followup"]

_GREETINGS = frozenset({"hi", "hello", "hey", "greetings", "howdy", "hiya", "yo", "morning", "evening"})
_QUESTION_WORDS = frozenset(
    {
        "what",
        "why",
        "how",
        "when",
        "where",
        "who",
        "which",
        "can",
        "could",
        "is",
        "are",
        "does",
        "do",
        "should",
        "would",
        "will",
        "explain",
    }
)
_CODE_WORDS = frozenset({"code", "function", "script", "snippet", "implement", "program"})
_MAKE_WORDS = frozenset({"write", "create", "make", "give", "show", "generate", "build"})
_NAME_RE = re.compile(r"\b(?:my name is|i am|i'm|call me)\s+([A-Z][a-zA-Z\-]+)", re.IGNORECASE)
_LIST_WORDS = frozenset({"steps", "step", "bullet", "bullets", "checklist", "tips", "ideas"})
_MATH_ASK = re.compile(r"\b(?:what(?:'s| is)|calculate|compute|evaluate|solve|how much is)\b", re.IGNORECASE)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_IDENTITY = re.compile(
    r"\b(?:which|what) (?:model|llm|ai)\b|\bwho (?:made|built|created|trained|are) you\b|\bwhat are you\b",
    re.IGNORECASE,
)
_EXAMPLE_WORDS = frozenset({"example", "examples", "instance"})
_AUXILIARIES = frozenset(
    {"do", "does", "did", "is", "are", "was", "were", "can", "should", "would", "has", "have", "will"}
)
_GLOSSARY = "(Offline answer from the gateway's small built-in glossary, not a model.)"


def answer(messages: Sequence[Message], model: str = "offline/assistant") -> str:
    """The assistant's text reply to a conversation whose last message is from the user."""
    system = " ".join(m.text for m in messages if m.role in ("system", "developer")).lower()
    users = [m for m in messages if m.role == "user"]
    last = users[-1].text.strip() if users else ""
    earlier = [m for m in messages[: _last_index(messages, "user")] if m.role in ("user", "assistant")]
    reply = _compose(last, earlier, model)
    return styled(reply, system)


def json_answer(prompt: str, text: str, model: str) -> dict[str, Any]:
    """The JSON object of a JSON-mode answer: the keys the prompt names (see ``_json_mode``)."""
    return json_object(prompt, text)


def tool_followup(messages: Sequence[Message], tools: Sequence[Tool]) -> str:
    """The reply after tool results: it reports what the tools returned, answering the user's request."""
    results: list[Message] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.insert(0, message)
    names = _tool_names(messages)
    users = [m for m in messages if m.role == "user"]
    request = first_sentence(users[-1].text, 20) if users else "your request"
    parts = []
    for result in results:
        name = names.get(result.tool_call_id or "", "the tool")
        parts.append(f"`{name}` returned {_describe_result(result.text)}")
    joined = "; ".join(parts) if parts else "the tool returned nothing"
    system = " ".join(m.text for m in messages if m.role in ("system", "developer")).lower()
    reply = (
        f"Based on the tool results, here is the answer to “{request}”: {joined}. "
        "(Offline model: I report the tool output as-is.)"
    )
    return styled(reply, system)


def _last_index(messages: Sequence[Message], role: str) -> int:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == role:
            return index
    return len(messages)


def _tool_names(messages: Sequence[Message]) -> dict[str, str]:
    names: dict[str, str] = {}
    for message in messages:
        for call in message.tool_calls:
            function = call.get("function")
            if isinstance(call.get("id"), str) and isinstance(function, dict):
                names[call["id"]] = str(function.get("name", "the tool"))
    return names


def _describe_result(text: str) -> str:
    """Quote a tool result; JSON objects are also read out as ``key: value`` pairs."""
    shown = text.strip()
    try:
        data = json.loads(shown)
    except ValueError:
        return f"“{shown}”"
    if isinstance(data, dict) and data and all(not isinstance(v, dict | list) for v in data.values()):
        pairs = ", ".join(f"{k}: {v}" for k, v in data.items())
        return f"{shown} ({pairs})"
    return shown


def _compose(last: str, earlier: list[Message], model: str) -> str:
    lowered = last.lower()
    said = words(last)
    if not said:
        return (
            "I received an empty message. Ask me something and I will answer — offline and deterministically."
        )
    memory = _memory(lowered, earlier)
    if memory:
        return memory
    if _IDENTITY.search(last):
        return (
            f"I am {model}, a deterministic offline model built into the flotorch_nb gateway by its "
            "developers: no language model and no network, just the same answer to the same question."
        )
    if "haiku" in said:
        return _haiku(last)
    if any(w in said for w in ("summarize", "summarise", "summary", "tldr", "tl")):
        return _summary(last, earlier)
    if "translate" in said or "translation" in said:
        return translation(last)
    if _CODE_WORDS & set(said) or ("python" in said and _MAKE_WORDS & set(said)):
        return _code(last)
    computed = arithmetic(last) if _MATH_ASK.search(last) and not _DATE.search(last) else None
    computed = computed or (number_fact(last) if {"fact", "facts", "trivia"} & set(said) else None)
    if computed:
        return computed
    if _wants_list(said, lowered):
        return bullets(last)
    if said[0] in _GREETINGS and len(said) <= 6:
        return _greeting(lowered)
    if said[0] in ("thanks", "thank") and len(said) <= 6:
        return "You're welcome! Ask me anything else; I'm the FloTorch offline assistant, here all day."
    fact = find_fact(said)
    if fact:
        shown = {"example", "record", "show", "instance"} & set(said)
        return f"{fact.text} {_GLOSSARY}" + (f"\n\n{fact.example}" if shown else "")
    example = _example(said, earlier)
    if example:
        return example
    if said[0] in _QUESTION_WORDS or last.rstrip().endswith("?"):
        # "Explain in a few sentences why ..." asks "why": the first question word leads.
        lead = next((w for w in said[:8] if w in _QUESTION_WORDS and w != "explain"), said[0])
        return _explanation(last, lead)
    return _fallback(last, earlier)


def _wants_list(said: list[str], lowered: str) -> bool:
    """ "List three ...", "Give me a list of ...", tips/steps/ideas, or "Name the planets" (a known list)."""
    if _LIST_WORDS & set(said) or said[0] == "list" or re.search(r"\blist (?:of|some|the)\b", lowered):
        return True
    return said[0] in ("name", "enumerate") and list_for(said) is not None


def _greeting(lowered: str) -> str:
    if re.search(r"\bhow are (?:you|ya)\b", lowered):
        return (
            "Hello, I'm doing well, thank you for asking! I'm the FloTorch offline assistant, a "
            "deterministic stand-in for a real model: ask me to summarize, list steps, write a haiku or "
            "some Python."
        )
    return (
        "Hello! I'm the FloTorch offline assistant, a deterministic stand-in for a real model. "
        "Ask me to summarize, list steps, write a haiku or some Python, and I'll do my best."
    )


def _example(said: list[str], earlier: list[Message]) -> str | None:
    """ "Can you give me an example?": an example of what the conversation was about, if it is known."""
    if not _EXAMPLE_WORDS & set(said) or len(said) > 12:
        return None
    for message in reversed(earlier):
        fact = find_fact(words(message.text))
        if fact:
            return f"{fact.example} (Offline example from the gateway's small built-in glossary.)"
    return None


def _memory(lowered: str, earlier: list[Message]) -> str | None:
    if "my name" in lowered and ("what" in lowered or "remember" in lowered or "who am i" in lowered):
        for message in reversed(earlier):
            match = _NAME_RE.search(message.text) if message.role == "user" else None
            if match:
                return (
                    f"Your name is {match.group(1).capitalize()} — you told me earlier in this conversation."
                )
        return "You haven't told me your name in this conversation yet."
    turns = sum(1 for m in earlier if m.role == "user")
    if re.search(r"\bhow many (?:messages|turns|questions)\b", lowered):
        plural = "s" if turns != 1 else ""
        return f"Before this message you sent me {turns} message{plural} in this conversation."
    if re.search(r"\b(?:again|before|earlier|previous|repeat)\b", lowered):
        previous = next((m.text for m in reversed(earlier) if m.role == "assistant" and m.text.strip()), None)
        if previous:
            return f"As I said before: {first_sentence(previous, 40)}"
    match = _NAME_RE.search(lowered)
    if match and match.group(1) not in ("a", "an", "the", "not", "so", "very", "here"):
        return (
            f"Nice to meet you, {match.group(1).capitalize()}! I'm the FloTorch offline assistant; "
            "I'll remember your name for this conversation."
        )
    return None


def _syllables(word: str) -> int:
    groups = re.findall(r"[aeiouy]+", word.lower())
    count = len(groups) - (1 if word.lower().endswith("e") and len(groups) > 1 else 0)
    return max(count, 1)


def _haiku(last: str) -> str:
    topic_words = topic_of(last, limit=2).split()
    topic = " ".join(topic_words) if topic_words != ["your", "request"] else "silence"
    syllables = sum(_syllables(w) for w in topic.split())
    # Line one pads the topic to five syllables; lines two and three are fixed at seven and five.
    lead = {4: "Morning light on", 3: "Soft light on", 2: "Morning:", 1: "Oh,"}.get(5 - syllables, "")
    line_one = f"{lead} {topic}".strip() if lead else topic.capitalize()
    if lead:
        line_one = line_one[0].upper() + line_one[1:]
    return f"{line_one}\nan offline mind hums softly\nno network needed"


def _summary(last: str, earlier: list[Message]) -> str:
    _, sep, after = last.partition(":")
    source = after.strip() if sep and len(after.split()) >= 5 else ""
    if not source:
        body = re.sub(
            r"^\s*(?:please\s+)?(?:summari[sz]e|give me a summary of|tl;?dr)\b[^\w]*", "", last, flags=re.I
        )
        source = body if len(body.split()) >= 8 else ""
    if not source:
        source = " ".join(m.text for m in earlier if m.role in ("user", "assistant"))
    fact = fact_for(words(last))
    if not source.strip() and fact:
        return f"{fact} (Offline answer from the gateway's small built-in glossary, not a model.)"
    if not source.strip():
        return (
            f"Offline summary: you asked me to summarize “{first_sentence(last, 20)}”, "
            "but there is no longer text to work from yet."
        )
    points = keywords(source, limit=4)
    return f"Offline summary: {first_sentence(source, 25)} Key points: {', '.join(points) or 'none found'}."


def _code(last: str) -> str:
    lowered = last.lower()
    found = next(((n, src) for keys, n, src in SNIPPETS if any(k in lowered for k in keys)), None)
    if found:
        name, source = found
    else:
        topic = topic_of(last, limit=3)
        stem = "_".join(w for w in topic.split() if w.isidentifier())[:40] or "topic"
        name = f"describe_{stem}"
        source = generic_snippet(name, topic)
    return (
        "Here is a small, runnable Python example (from the offline gateway):\n\n"
        f"```python\n{source}\n```\n\nCall `{name}` with your own input to try it."
    )


def _explanation(last: str, lead: str) -> str:
    fact = fact_for(words(last))
    if fact:
        return f"{fact} (Offline answer from the gateway's small built-in glossary, not a model.)"
    topic = topic_of(last)
    key = ", ".join(keywords(last, limit=4)) or topic
    look = "look at what causes it, what it changes, and what the alternatives would be."
    clause = re.search(r"\bwhy\s+([^?.!]+)", last, re.IGNORECASE)
    why = f"To understand the reasons behind {topic}, {look}"
    if clause:
        asked = " ".join(clause.group(1).split())
        first = asked.split()[0].lower()
        # "why do APIs use X" is a question; "why streaming helps users" is a clause.
        # Never open with the question itself: a reply cut to its first sentence must still answer.
        why = f"To answer “why {asked}”, {look}" if first in _AUXILIARIES else f"To see why {asked}, {look}"
    what = re.search(r"\bwhat (?:is|are) (?:an? |the )?([^?.!,;]+)", last, re.IGNORECASE)
    subject = " ".join(what.group(1).split()) if what else topic
    openings = {
        "why": why,
        "how": f"To approach “{topic}”, start from the goal, break it into small steps, "
        "and check each step before moving on.",
        "when": f"The right moment for {topic} is usually when the simple approach stops being enough "
        "and the benefit clearly outweighs the cost.",
        "where": f"You will usually find {topic} where the problem it solves actually shows up; start there.",
        "who": f"The people most involved with {topic} are the ones who build, run or depend on it.",
    }
    opening = openings.get(
        lead,
        f"In short, {subject} is best understood by looking at what it does, why it exists and how it is "
        "used.",
    )
    return (
        f"{opening} I am the FloTorch offline model, so this is a general explanation built from the key "
        f"words of your question ({key}) rather than researched facts."
    )


def _fallback(last: str, earlier: list[Message]) -> str:
    key = keywords(last, limit=5)
    turns = sum(1 for m in earlier if m.role == "user")
    follow = f" This is message {turns + 1} of our conversation." if turns else ""
    if not key:
        return (
            f"I read “{first_sentence(last, 20)}”. I'm the FloTorch offline assistant, "
            f"so I can only reflect it back to you.{follow}"
        )
    return (
        f"You wrote about {', '.join(key[:-1]) + ' and ' + key[-1] if len(key) > 1 else key[0]}. "
        f"I'm the FloTorch offline assistant: I answer deterministically from your words, without a real "
        f"language model, so treat this as a placeholder reply.{follow}"
    )
