"""Pure: which tools ``offline/assistant`` calls for a prompt, and with which arguments.

A prompt asks for a tool when its words meet the tool's name (weighing three times), description or
parameter names (``score``). The prompt is read in parts, cut at commas, semicolons and "and"/"also"/
"plus" outside quotes: each part that asks for a tool is one call, and a part that names no tool but
brings a new value of a kind its neighbour already had ("the weather in Paris *and Rome*") is another
call of the same tool. So "weather in Paris and in Rome" is two ``get_weather`` calls in one turn, and
"weather in Oslo and the stock price of ACME" one call of each tool; "add 2.5 and 40" stays one call
(numbers never start a call). With ``tool_choice="auto"`` and no tool named, the best-scoring tool is
still called when the prompt carries a value for it (a name, a quote, a number...: "Should I take a
coat in Oslo?"), else the model answers in text ("Tell me a joke").

"Then" orders the work: "find Ada's id, then list her orders" asks for the first part's tools on the
first turn and the next part's once their results are in (values come from that part of the prompt
and from the results so far); when every part is done, the answer is text from the results.
Arguments are filled from the JSON schema with the values found in the call's part of the prompt
(``_schema_fill``); an enum value mentioned anywhere in the call's step wins (each "then" step
names its own: "cool, then heat" is one call with each). Same request, same calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ._data import split_words, word_list
from ._text import Hints, hints_from, stem, words
from ._validate import Message, Tool, last_user

__all__ = ["MAX_CALLS", "ToolCallAsk", "choose_tool", "phase_of", "planned_calls"]

#: The most calls one turn makes, whatever the prompt lists.
MAX_CALLS = 8
_MAX_PARTS = 64  # parts read one by one; a longer prompt's rest is read as one (it is a document)
_PARTS = re.compile(r"[,;]|\b(?:and|also|plus)\b|&", re.IGNORECASE)
_PHASES = re.compile(r"\b(?:and then|then|after that|afterwards)\b", re.IGNORECASE)
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|(?<!\w)'[^']*'(?!\w)")


@dataclass(frozen=True, slots=True)
class ToolCallAsk:
    """One call the prompt asks for: the tool and the prompt facts its arguments are filled from."""

    tool: Tool
    hints: Hints


def choose_tool(tools: Sequence[Tool], prompt: str, tool_choice: str) -> Tool:
    """The forced tool, else the one whose name/description/parameters share most words with the prompt.

    Ties go to the tool listed first, so the choice is stable.
    """
    if tool_choice.startswith("function:"):
        name = tool_choice.removeprefix("function:")
        return next(tool for tool in tools if tool.name == name)
    said = _said(prompt)
    return max(tools, key=lambda tool: score(_wanted(tool), said))  # max() keeps the first of equals


#: A tool's (stemmed) name, description and parameter words: what a prompt asks for it by.
_Wanted = tuple[set[str], set[str], set[str]]


def _wanted(tool: Tool) -> _Wanted:
    stop = word_list("stopwords")
    name = {stem(w) for w in split_words(tool.name) if w not in stop}
    described = {stem(w) for w in words(tool.description) if w not in stop}
    props = tool.parameters.get("properties")
    params = {stem(w) for p in props for w in split_words(p)} if isinstance(props, dict) else set()
    return name, described, params


def score(wanted: _Wanted, said: set[str]) -> int:
    """How much a prompt's (stemmed) words ask for a tool (its ``_wanted``): name words count 3, others 1."""
    name, described, params = wanted
    return 3 * len(name & said) + len(described & said) + len(params & said)


def phase_of(messages: Sequence[Message]) -> tuple[str, int, str]:
    """The last user message, how many tool-call turns answered it so far, and their results' text."""
    start = last_user(messages)
    after = messages[start + 1 :]
    turns = sum(1 for m in after if m.role == "assistant" and m.tool_calls)
    results = "\n".join(m.text for m in after if m.role == "tool")
    return (messages[start].text if start >= 0 else ""), turns, results


def planned_calls(
    tools: Sequence[Tool],
    prompt: str,
    tool_choice: str,
    *,
    turn: int = 0,
    results: str = "",
    parallel: bool = True,
) -> list[ToolCallAsk]:
    """The calls to make on tool turn ``turn`` of ``prompt`` (none: answer in text)."""
    if tool_choice.startswith("function:"):
        return [ToolCallAsk(choose_tool(tools, prompt, tool_choice), _hints(prompt, prompt, results))]
    phases = [p for p in _cut(prompt, _PHASES) if p.strip()] or [prompt]
    asks = _asks(tools, phases[turn], results) if turn < len(phases) else []
    if not asks and (tool_choice == "required" or (turn == 0 and _kinds(hints_from(prompt)))):
        asks = [ToolCallAsk(choose_tool(tools, prompt, tool_choice), _hints(prompt, prompt, results))]
    return asks[:1] if not parallel else asks[:MAX_CALLS]


def _asks(tools: Sequence[Tool], phase: str, results: str) -> list[ToolCallAsk]:
    groups: list[tuple[Tool, list[str], set[str]]] = []  # a call: its tool, its parts, kinds of value seen
    leading: list[str] = []
    # A long document is cut only as far as it is read: its rest stays whole, as written.
    pieces = _pieces(phase, _PARTS, most=_MAX_PARTS)
    parts = [piece.strip() for _, piece in pieces]
    wanted = [(tool, _wanted(tool)) for tool in tools]  # once, not for every part
    for index, part in enumerate(parts):
        if index >= _MAX_PARTS or len(groups) > MAX_CALLS:  # a long document: the rest is context
            # The rest as written (its commas kept): glued with spaces, "Oslo, Bergen" read as one name.
            (groups[-1][1] if groups else leading).append(phase[pieces[index][0] :].strip())
            break
        said, kinds = _said(part), _kinds(hints_from(part))
        best, points = max(((tool, score(w, said)) for tool, w in wanted), key=lambda pair: pair[1])
        if points > 0 and (all(tool is not best for tool, _, _ in groups) or kinds):
            groups.append((best, [*leading, part], set(kinds)))
            leading = []
        elif groups and kinds & groups[-1][2] - {"numbers"}:  # "... in Paris and Rome": a new place
            groups.append((groups[-1][0], [part], set(kinds)))
        elif groups:
            groups[-1][1].append(part)
            groups[-1][2].update(kinds)
        else:
            leading.append(part)
    asks: list[ToolCallAsk] = []
    seen: set[tuple[str, str]] = set()
    for tool, texts, _ in groups:
        hints = _hints(" ".join(texts), phase, results)
        key = (tool.name, json.dumps(hints.proper + hints.quoted) + repr(hints.numbers))
        if key not in seen:
            seen.add(key)
            asks.append(ToolCallAsk(tool, hints))
    return asks


def _cut(text: str, at: re.Pattern[str]) -> list[str]:
    """``text`` split where ``at`` matches outside quotes (a comma inside 'red, green' stays)."""
    return [piece for _, piece in _pieces(text, at)]


def _pieces(text: str, at: re.Pattern[str], *, most: int | None = None) -> list[tuple[int, str]]:
    """``_cut``'s pieces with where each starts in ``text`` (so a rest can be taken as written); with
    ``most``, only the first ``most`` pieces are cut off and the rest is one more piece."""
    masked = _QUOTED.sub(lambda m: "x" * len(m.group(0)), text)
    pieces: list[tuple[int, str]] = []
    start = 0
    for match in at.finditer(masked):
        if len(pieces) == most:
            break
        pieces.append((start, text[start : match.start()]))
        start = match.end()
    return [*pieces, (start, text[start:])]


def _said(text: str) -> set[str]:
    stop = word_list("stopwords")
    return {stem(w) for w in words(text) if w not in stop}


def _kinds(hints: Hints) -> set[str]:
    """The kinds of value a text carries (a name, a quote, an email, a URL, a date, a number)."""
    return {
        kind for kind in ("proper", "quoted", "emails", "urls", "dates", "numbers") if getattr(hints, kind)
    }


def _hints(part: str, context: str, results: str) -> Hints:
    """The facts a call's arguments come from: its part first, then earlier results; enums see ``context``
    (the call's "then" step, or the whole prompt when the prompt is not read in steps)."""
    return replace(hints_from(f"{part}\n{results}" if results else part), context=context)
