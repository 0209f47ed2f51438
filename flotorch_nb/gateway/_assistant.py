"""Pure: the text answers of ``offline/assistant`` — short, deterministic, and about the prompt.

There is no language model here. The assistant recognises what kind of answer a message asks for
(greeting, summary, haiku, list/steps, code, translation, question, tool result follow-up, memory of
the conversation) and fills a small template with the prompt's own words, so notebooks show answers
that read sensibly and that tests can predict. A system prompt can make it talk like a pirate or
answer in one sentence. Every answer says, one way or another, that it comes from the offline model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ._facts import fact_for
from ._snippets import SNIPPETS, generic_snippet
from ._text import ASPECTS, first_sentence, hints_from, keywords, topic_of, words
from ._validate import Message, Tool

__all__ = ["answer", "json_answer", "tool_followup"]

_GREETINGS = frozenset({"hi", "hello", "hey", "greetings", "howdy", "hiya", "yo", "morning", "evening"})
_QUESTION_WORDS = frozenset({"what", "why", "how", "when", "where", "who", "which", "can", "could",
                             "is", "are", "does", "do", "should", "would", "will", "explain"})  # fmt: skip
_PHRASEBOOK = {
    "french": {"hello": "bonjour", "world": "monde", "thank you": "merci", "goodbye": "au revoir",
               "good morning": "bonjour", "yes": "oui", "no": "non", "cat": "chat", "dog": "chien",
               "friend": "ami", "please": "s'il vous plaît", "love": "amour", "water": "eau"},
    "spanish": {"hello": "hola", "world": "mundo", "thank you": "gracias", "goodbye": "adiós",
                "good morning": "buenos días", "yes": "sí", "no": "no", "cat": "gato", "dog": "perro",
                "friend": "amigo", "please": "por favor", "love": "amor", "water": "agua"},
    "german": {"hello": "hallo", "world": "Welt", "thank you": "danke", "goodbye": "auf Wiedersehen",
               "good morning": "guten Morgen", "yes": "ja", "no": "nein", "cat": "Katze", "dog": "Hund",
               "friend": "Freund", "please": "bitte", "love": "Liebe", "water": "Wasser"},
    "italian": {"hello": "ciao", "world": "mondo", "thank you": "grazie", "goodbye": "arrivederci",
                "good morning": "buongiorno", "yes": "sì", "no": "no", "cat": "gatto", "dog": "cane",
                "friend": "amico", "please": "per favore", "love": "amore", "water": "acqua"},
}  # fmt: skip
_PIRATE = {"hello": "ahoy", "hi": "ahoy", "you": "ye", "your": "yer", "my": "me", "is": "be",
           "are": "be", "friend": "matey", "yes": "aye", "the": "th'"}  # fmt: skip
_CODE_WORDS = frozenset({"code", "function", "script", "snippet", "implement", "program"})
_MAKE_WORDS = frozenset({"write", "create", "make", "give", "show", "generate", "build"})
_NAME_RE = re.compile(r"\b(?:my name is|i am|i'm|call me)\s+([A-Z][a-zA-Z\-]+)", re.IGNORECASE)


def answer(messages: Sequence[Message]) -> str:
    """The assistant's text reply to a conversation whose last message is from the user."""
    system = " ".join(m.text for m in messages if m.role in ("system", "developer")).lower()
    users = [m for m in messages if m.role == "user"]
    last = users[-1].text.strip() if users else ""
    earlier = [m for m in messages[: _last_index(messages, "user")] if m.role in ("user", "assistant")]
    reply = _compose(last, earlier)
    return _styled(reply, system)


def json_answer(prompt: str, text: str, model: str) -> dict[str, Any]:
    """The JSON object of a JSON-mode answer (``response_format: {"type": "json_object"}``)."""
    return {"answer": text, "model": model, "offline": True}


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
    return _styled(reply, system)


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


def _compose(last: str, earlier: list[Message]) -> str:
    lowered = last.lower()
    said = words(last)
    if not said:
        return (
            "I received an empty message. Ask me something and I will answer — offline and deterministically."
        )
    memory = _memory(lowered, earlier)
    if memory:
        return memory
    if "haiku" in said:
        return _haiku(last)
    if any(w in said for w in ("summarize", "summarise", "summary", "tldr", "tl")):
        return _summary(last, earlier)
    if "translate" in said or "translation" in said:
        return _translation(last)
    if _CODE_WORDS & set(said) or ("python" in said and _MAKE_WORDS & set(said)):
        return _code(last)
    if any(w in said for w in ("list", "steps", "step", "bullet", "bullets", "checklist", "tips", "ideas")):
        return _bullets(last)
    if said[0] in _GREETINGS and len(said) <= 6:
        return (
            "Hello! I'm the FloTorch offline assistant, a deterministic stand-in for a real model. "
            "Ask me to summarize, list steps, write a haiku or some Python, and I'll do my best."
        )
    if said[0] in _QUESTION_WORDS or last.rstrip().endswith("?"):
        # "Explain in a few sentences why ..." asks "why": the first question word leads.
        lead = next((w for w in said[:8] if w in _QUESTION_WORDS and w != "explain"), said[0])
        return _explanation(last, lead)
    return _fallback(last, earlier)


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


def _translation(last: str) -> str:
    lowered = last.lower()
    language = next((lang for lang in _PHRASEBOOK if lang in lowered), "french")
    quoted = hints_from(last).quoted
    source = (
        quoted[0]
        if quoted
        else re.sub(r"(?i)^.*?translate\s*|\s*(?:in)?to\s+\w+\W*$", "", last).strip() or last
    )
    phrasebook = _PHRASEBOOK[language]
    translated = source.lower()
    for phrase in sorted(phrasebook, key=len, reverse=True):
        translated = re.sub(rf"\b{re.escape(phrase)}\b", phrasebook[phrase], translated)
    return (
        f"{language.capitalize()}: «{translated}» — translated with the offline gateway's small phrasebook; "
        "words it does not know are left as they are."
    )


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


def _bullets(last: str) -> str:
    numbers = [int(n) for n in hints_from(last).numbers if float(n).is_integer() and 1 <= n <= 7]
    count = numbers[0] if numbers else 4
    topic = topic_of(last)
    if "step" in last.lower():
        lines = [f"{index}. {step.format(t=topic)}." for index, step in enumerate(_STEPS[:count], start=1)]
        return f"Here are {count} steps for {topic} (an offline checklist):\n\n" + "\n".join(lines)
    lines = [f"- {aspect.format(t=topic)}" for aspect in ASPECTS[:count]]
    return f"Here is an offline list about {topic}:\n\n" + "\n".join(lines)


_STEPS = (
    "Decide what success looks like for “{t}”",
    "Gather what you need for “{t}”",
    "Start with the smallest version that works",
    "Check the result against the goal and fix what is off",
    "Automate the parts you will repeat",
    "Write down what you learned",
    "Share the result and ask for feedback",
)


def _explanation(last: str, lead: str) -> str:
    fact = fact_for(words(last))
    if fact:
        return f"{fact} (Offline answer from the gateway's small built-in glossary, not a model.)"
    topic = topic_of(last)
    key = ", ".join(keywords(last, limit=4)) or topic
    openings = {
        "why": f"There are usually a few reasons behind {topic}: it solves a concrete problem, "
        "it trades one cost for another, and it fits how people already work.",
        "how": f"To approach “{topic}”, start from the goal, break it into small steps, "
        "and check each step before moving on.",
        "when": f"The right moment for {topic} is usually when the simple approach stops being enough "
        "and the benefit clearly outweighs the cost.",
        "where": f"You will usually find {topic} where the problem it solves actually shows up; start there.",
        "who": f"The people most involved with {topic} are the ones who build, run or depend on it.",
    }
    opening = openings.get(
        lead,
        f"In short, {topic} is best understood by looking at what it does, why it exists and how it is used.",
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


def _styled(reply: str, system: str) -> str:
    """Apply the system prompt's requests: brevity first, then a pirate voice."""
    brief = re.search(
        r"\b(?:one (?:line|sentence)|single sentence|brief|briefly|concise|terse|short)\b", system
    )
    if brief and "```" not in reply:
        reply = first_sentence(reply.split("\n\n")[0].replace("\n", " / "), 30)
        if "offline" not in reply.lower():
            reply += " (offline answer)"
    if "pirate" in system:
        reply = _pirate(reply)
    return reply


def _pirate(text: str) -> str:
    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        new = _PIRATE.get(word.lower())
        if new is None:
            return word
        return new[0].upper() + new[1:] if word[0].isupper() else new

    parts = text.split("```")
    # Only prose is rewritten; code blocks (odd parts) stay runnable.
    parts = [re.sub(r"[A-Za-z]+", swap, p) if i % 2 == 0 else p for i, p in enumerate(parts)]
    return "Arr! " + "```".join(parts)
