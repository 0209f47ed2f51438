"""Pure: the text answers of ``offline/assistant`` — short, deterministic, and about the prompt.

There is no language model here. The assistant recognises what kind of answer a message asks for
(greeting, summary, haiku, list/steps, code, translation, arithmetic, a fact about a number, what it
is, a follow-up example, question, tool result follow-up, memory of the conversation) and answers
from its small knowledge (``_data``, ``_numbers``, ``_lists``) or fills a template with the prompt's
own words, so notebooks show answers that read sensibly and that tests can predict. A system prompt
can make it talk like a pirate or answer in one sentence (``_phrasing``). Answers built from a
template say that they come from the offline model. The templates and word lists are data
(``data/phrases.toml``, ``data/words.toml``); this module decides which one a message gets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from ._data import fact_for, knowledge, list_for, lookup, phrase, phrases, word_list
from ._lists import bullets
from ._numbers import arithmetic, number_fact
from ._phrasing import styled, translation
from ._text import first_sentence, keywords, topic_of, words
from ._validate import Message, Tool, last_user

__all__ = ["answer", "tool_followup"]

_NAME_RE = re.compile(r"\b(?:my name is|i am|i'm|call me)\s+([A-Z][a-zA-Z\-]+)", re.IGNORECASE)
_MATH_ASK = re.compile(r"\b(?:what(?:'s| is)|calculate|compute|evaluate|solve|how much is)\b", re.IGNORECASE)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_IDENTITY = re.compile(
    r"\b(?:which|what) (?:model|llm|ai)\b|\bwho (?:made|built|created|trained|are) you\b|\bwhat are you\b",
    re.IGNORECASE,
)


def answer(messages: Sequence[Message], model: str = "offline/assistant") -> str:
    """The assistant's text reply to a conversation whose last message is from the user."""
    start = last_user(messages)
    last = messages[start].text.strip() if start >= 0 else ""
    earlier = [m for m in messages[:start] if m.role in ("user", "assistant")]
    return styled(_compose(last, earlier, model), messages)


def tool_followup(messages: Sequence[Message], tools: Sequence[Tool]) -> str:
    """The reply after tool results: it reports what the tools returned, answering the user's request."""
    # Every result since the user asked: a loop of several tool turns answers from all of them.
    start = last_user(messages)
    results = [m for m in messages[start + 1 :] if m.role == "tool"]
    names = _tool_names(messages)
    request = first_sentence(messages[start].text, 20) if start >= 0 else "your request"
    parts = []
    for result in results:
        name = names.get(result.tool_call_id or "", "the tool")
        parts.append(f"`{name}` returned {_describe_result(result.text)}")
    joined = "; ".join(parts) if parts else "the tool returned nothing"
    return styled(phrase("tool_followup", request=request, results=joined), messages)


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
        return phrase("empty")
    memory = _memory(lowered, earlier)
    if memory:
        return memory
    if _IDENTITY.search(last):
        return phrase("identity", model=model)
    if "haiku" in said:
        return _haiku(last)
    if word_list("summary_words") & set(said):
        return _summary(last, earlier)
    if word_list("translate_words") & set(said):
        return translation(last)
    if word_list("code_words") & set(said) or ("python" in said and word_list("make_words") & set(said)):
        return _code(last)
    computed = arithmetic(last) if _MATH_ASK.search(last) and not _DATE.search(last) else None
    computed = computed or (number_fact(last) if word_list("fact_words") & set(said) else None)
    if computed:
        return computed
    if _wants_list(said, lowered):
        return bullets(last)
    if said[0] in word_list("greetings") and len(said) <= 6:
        return _greeting(lowered)
    if said[0] in word_list("thanks_words") and len(said) <= 6:
        return phrase("thanks")
    fact = lookup("facts", said)
    if fact:
        shown = word_list("show_words") & set(said)
        return f"{fact['text']} {phrase('glossary')}" + (f"\n\n{fact['example']}" if shown else "")
    example = _example(said, earlier)
    if example:
        return example
    if said[0] in word_list("question_words") or last.rstrip().endswith("?"):
        # "Explain in a few sentences why ..." asks "why": the first question word leads.
        lead = next((w for w in said[:8] if w in word_list("question_words") and w != "explain"), said[0])
        return _explanation(last, lead)
    return _fallback(last, earlier)


def _wants_list(said: list[str], lowered: str) -> bool:
    """ "List three ...", "Give me a list of ...", tips/steps/ideas, or "Name the planets" (a known list)."""
    if word_list("list_words") & set(said) or said[0] == "list":
        return True
    if re.search(r"\blist (?:of|some|the)\b", lowered):
        return True
    return said[0] in ("name", "enumerate") and list_for(said) is not None


def _greeting(lowered: str) -> str:
    return phrase("greeting_how_are_you" if re.search(r"\bhow are (?:you|ya)\b", lowered) else "greeting")


def _example(said: list[str], earlier: list[Message]) -> str | None:
    """ "Can you give me an example?": an example of what the conversation was about, if it is known."""
    if not word_list("example_words") & set(said) or len(said) > 12:
        return None
    for message in reversed(earlier):
        fact = lookup("facts", words(message.text))
        if fact:
            return phrase("glossary_example", example=fact["example"])
    return None


def _memory(lowered: str, earlier: list[Message]) -> str | None:
    if "my name" in lowered and ("what" in lowered or "remember" in lowered or "who am i" in lowered):
        for message in reversed(earlier):
            match = _NAME_RE.search(message.text) if message.role == "user" else None
            if match:
                return phrase("name_recalled", name=match.group(1).capitalize())
        return phrase("name_unknown")
    turns = sum(1 for m in earlier if m.role == "user")
    if re.search(r"\bhow many (?:messages|turns|questions)\b", lowered):
        plural = "s" if turns != 1 else ""
        return phrase("turns", turns=turns, plural=plural)
    if re.search(r"\b(?:again|before|earlier|previous|repeat)\b", lowered):
        previous = next((m.text for m in reversed(earlier) if m.role == "assistant" and m.text.strip()), None)
        if previous:
            return phrase("repeat", previous=first_sentence(previous, 40))
    match = _NAME_RE.search(lowered)
    if match and match.group(1) not in word_list("not_a_name"):
        return phrase("name_learned", name=match.group(1).capitalize())
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
    missing = 5 - syllables
    lead = phrases()["haiku"]["leads"][missing - 1] if 1 <= missing <= 4 else ""
    line_one = f"{lead} {topic}".strip() if lead else topic.capitalize()
    if lead:
        line_one = line_one[0].upper() + line_one[1:]
    return f"{line_one}\n{phrase('haiku_tail')}"


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
        return f"{fact} {phrase('glossary')}"
    if not source.strip():
        return phrase("summary_empty", request=first_sentence(last, 20))
    points = ", ".join(keywords(source, limit=4)) or "none found"
    return phrase("summary", first=first_sentence(source, 25), points=points)


def _code(last: str) -> str:
    lowered = last.lower()
    snippets = knowledge()["snippets"]
    found = next((s for s in snippets if any(t in lowered for t in s["triggers"])), None)
    if found:
        name, source = found["name"], found["source"]
    else:
        topic = topic_of(last, limit=3)
        stem = "_".join(w for w in topic.split() if w.isidentifier())[:40] or "topic"
        name = f"describe_{stem}"
        source = phrases()["snippets"]["generic"].format(name=name, topic=topic)
    return phrase("code", source=source, name=name)


def _explanation(last: str, lead: str) -> str:
    fact = fact_for(words(last))
    if fact:
        return f"{fact} {phrase('glossary')}"
    said = phrases()["explanations"]
    topic = topic_of(last)
    key = ", ".join(keywords(last, limit=4)) or topic
    look = said["look"]
    clause = re.search(r"\bwhy\s+([^?.!]+)", last, re.IGNORECASE)
    what = re.search(r"\bwhat (?:is|are) (?:an? |the )?([^?.!,;]+)", last, re.IGNORECASE)
    subject = " ".join(what.group(1).split()) if what else topic
    if lead == "why" and clause:
        asked = " ".join(clause.group(1).split())
        # "why do APIs use X" is a question, "why streaming helps users" a clause; neither opens the
        # reply, so a reply cut to its first sentence still answers (finding 13).
        kind = "why_question" if asked.split()[0].lower() in word_list("auxiliaries") else "why_clause"
        opening = said[kind].format(asked=asked, look=look)
    else:
        template = said[lead] if lead in ("why", "how", "when", "where", "who") else said["other"]
        opening = template.format(topic=topic, subject=subject, look=look)
    return f"{opening} {phrase('explanation_tail', keys=key)}"


def _fallback(last: str, earlier: list[Message]) -> str:
    key = keywords(last, limit=5)
    turns = sum(1 for m in earlier if m.role == "user")
    follow = phrase("follow", n=turns + 1) if turns else ""
    if not key:
        return phrase("fallback_unknown", said=first_sentence(last, 20), follow=follow)
    keys = ", ".join(key[:-1]) + " and " + key[-1] if len(key) > 1 else key[0]
    return phrase("fallback", keys=keys, follow=follow)
