"""Pure text helpers shared by the offline models: tokens, keywords and facts pulled from a prompt.

Token counting is deliberately simple and documented so that tests (and people reading a usage
footer) can predict it: a token is a word (a run of ``\\w`` characters) or one punctuation character,
``"Hello, world!"`` is 4 tokens; a word longer than 8 characters counts one more token for every 4
characters (or part of them) after its eighth, so ``"tokenization"`` is 2. Long input therefore
counts about 4 characters a token, as real tokenizers do: a 1,000,000-character blob is ~250,000
tokens, not one, and budgets or rate limits tested against the offline gateway see plausible
numbers. Streaming emits one chunk per token, each chunk carrying the whitespace that precedes its
token, so the chunks concatenate back to the exact text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._data import word_list

# A word's first token is up to 8 characters (it starts where no word character precedes it);
# each further token of the same word is up to 4 characters.
TOKEN_RE = re.compile(r"(?<!\w)\w{1,8}|\w{1,4}|[^\w\s]")
# One streamed piece: leading whitespace + one token. Pieces tile the text without gaps.
_PIECE_RE = re.compile(r"\s*(?:(?<!\w)\w{1,8}|\w{1,4}|[^\w\s])")
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z0-9'\-]*")
# Numbers that stand alone: not parts of dates, times, versions or identifiers.
_NUMBER_RE = re.compile(
    r"(?<![\w\-/:.])-?\d+(?:\.\d+)?(?![\w\-/:]|\.\d)|\b(?:one|two|three|four|five|six|seven|eight|nine|ten)\b",
    re.IGNORECASE,
)
_QUOTED_RE = re.compile(r"\"([^\"]{1,200})\"|“([^”]{1,200})”|(?<!\w)'([^']{1,200})'(?!\w)")
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL_RE = re.compile(r"https?://[^\s\"'<>)]+")
_DATE_RE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_PROPER_RE = re.compile(r"\b[A-Z][a-zA-Z]+(?:[ -][A-Z][a-zA-Z]+)*")


#: Numbers as words, ``NUMBER_WORDS[3] == "three"`` (lists say "three steps", prompts say "three").
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NUMBER_WORDS = {word: n for n, word in enumerate(NUMBER_WORDS) if n}


def count_tokens(text: str) -> int:
    """Return the number of tokens in ``text`` (see the module docstring for the rule)."""
    return sum(1 for _ in TOKEN_RE.finditer(text))


def token_pieces(text: str) -> list[str]:
    """Split ``text`` into one piece per token; ``"".join(pieces) == text`` always holds."""
    pieces = _PIECE_RE.findall(text)
    covered = sum(map(len, pieces))
    if covered < len(text):  # trailing whitespace belongs to the last piece
        if pieces:
            pieces[-1] += text[covered:]
        else:
            pieces.append(text)
    return pieces


def truncate_tokens(text: str, limit: int) -> tuple[str, bool]:
    """Cut ``text`` after ``limit`` tokens; return the kept text and whether anything was cut."""
    end = 0
    for count, match in enumerate(_PIECE_RE.finditer(text), start=1):
        if count > limit:
            return text[:end], True
        end = match.end()
    return text, False


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters first), in order."""
    return [w.lower().strip("'-") for w in _WORD_RE.findall(text)]


def stem(word: str) -> str:
    """A crude stem so that "cities"/"city" and "weathers"/"weather" meet; enough for overlap scores."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def keywords(text: str, limit: int = 8) -> list[str]:
    """Distinct content words of ``text`` in order of first appearance (stop words removed)."""
    seen: dict[str, None] = {}
    stop = word_list("stopwords")
    for word in words(text):
        if len(word) > 1 and word not in stop and word not in seen:
            seen[word] = None
            if len(seen) >= limit:
                break
    return list(seen)


@dataclass(frozen=True, slots=True)
class Hints:
    """Facts found in a prompt that answers and generated values can reuse, all in prompt order."""

    text: str
    quoted: tuple[str, ...]
    proper: tuple[str, ...]
    numbers: tuple[float, ...]
    keywords: tuple[str, ...]
    emails: tuple[str, ...]
    urls: tuple[str, ...]
    dates: tuple[str, ...]
    #: More of the conversation, read only for an enum option it mentions (a tool call's whole prompt).
    context: str = ""

    @property
    def topic(self) -> str:
        """The prompt's main subject in a few words (used to make answers refer to the prompt)."""
        return topic_of(self.text)


def hints_from(text: str) -> Hints:
    """Extract :class:`Hints` from ``text``; pure and deterministic."""
    quoted = tuple(next(g for g in m.groups() if g) for m in _QUOTED_RE.finditer(text))
    leading: list[str] = []
    inner: list[str] = []
    stop, not_names = word_list("stopwords"), word_list("not_names")
    for sentence in re.split(r"(?<=[.!?:;])\s+|\n+", text):
        for match in _PROPER_RE.finditer(sentence):
            phrase = match.group(0)
            first, _, rest = phrase.partition(" ")
            if first.lower() in stop:  # "What Paris..." -> "Paris"
                phrase = rest
            if not phrase or phrase.lower() in stop or phrase in not_names:
                continue
            # A lone capitalised word that starts a sentence ("Extract", "Summarize") is usually
            # not a name, so such words only come after the names found inside sentences.
            (leading if match.start() == 0 and " " not in phrase else inner).append(phrase)
    proper = inner + leading
    numbers = tuple(
        float(_NUMBER_WORDS.get(m.group(0).lower(), 0) or m.group(0)) for m in _NUMBER_RE.finditer(text)
    )
    return Hints(
        text=text,
        quoted=quoted,
        proper=tuple(dict.fromkeys(proper)),
        numbers=numbers,
        keywords=tuple(keywords(text, limit=12)),
        emails=tuple(_EMAIL_RE.findall(text)),
        urls=tuple(_URL_RE.findall(text)),
        dates=tuple(_DATE_RE.findall(text)),
    )


_TOPIC_MARKERS = re.compile(r"\b(?:about|on|of|for|regarding|to|is|are)\s+([^\d.,!?;:\n][^.,!?;:\n]*)", re.I)


def topic_of(text: str, limit: int = 5) -> str:
    """The subject of a request, as the prompt phrases it.

    The words after the first "about"/"on"/"of"/"to"/"is"... ("a haiku about *the ocean*"), at most
    ``limit`` words; without such a marker, the prompt's first keywords.
    """
    line = text.strip().splitlines()[0] if text.strip() else ""
    match = _TOPIC_MARKERS.search(line)
    if match:
        phrase = [w for w in re.findall(r"[\w'\-]+", match.group(1))][:limit]
        stop = word_list("stopwords")
        while phrase and phrase[-1].lower() in stop:
            phrase.pop()
        if any(w.lower() not in stop for w in phrase):
            return " ".join(phrase)
    instructions = word_list("instruction_words")
    found = [w for w in keywords(text, limit=limit + 4) if w not in instructions][:limit]
    return " ".join(found) if found else "your request"


def asked_count(text: str, most: int = 10) -> int | None:
    """How many items ``text`` asks for ("three steps", "5 tips"): its first whole number >= 1, at most
    ``most``; None when it names none."""
    for number in hints_from(text).numbers:
        if number.is_integer() and number >= 1:
            return min(int(number), most)
    return None


def first_sentence(text: str, max_words: int = 25) -> str:
    """The first sentence of ``text``, shortened to ``max_words`` words (with an ellipsis)."""
    flat = " ".join(text.split())
    match = re.match(r"(.+?[.!?])(?:\s|$)", flat)
    sentence = match.group(1) if match else flat
    parts = sentence.split()
    if len(parts) > max_words:
        return " ".join(parts[:max_words]).rstrip(",;:") + "…"
    return sentence


def first_statement(text: str, max_words: int = 25) -> str:
    """The first sentence that is not a question (else the last one), shortened like ``first_sentence``.

    A reply that opens by repeating the question ("Why is the sky blue? Because ...") is shortened to
    its answer, never to the question.
    """
    rest = " ".join(text.split())
    while True:
        sentence = first_sentence(rest, max_words)
        rest = rest[len(sentence) :].strip()
        if not sentence.endswith("?") or not rest:
            return sentence
