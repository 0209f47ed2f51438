"""Token counts of the offline gateway: short text counts words and punctuation (documented, easy to
predict); long runs of characters count about four characters a token, as real tokenizers do, so
budgets and rate limits tested against the offline gateway see plausible numbers."""

from __future__ import annotations

import httpx2
import pytest

from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.gateway._text import count_tokens, token_pieces, truncate_tokens

CHAT = "/api/openai/v1/chat/completions"
AUTH = {"Authorization": "Bearer tokens-test-key"}


@pytest.mark.parametrize(
    "text",
    [
        "x" * 1_000_000,  # one enormous "word": a blob, base64, a minified file
        "ab" * 500_000,
        ("0123456789abcdef" * 62_500),
        "supercalifragilistic" * 50_000,
    ],
)
def test_a_long_run_counts_about_four_characters_a_token(text: str) -> None:
    tokens = count_tokens(text)
    assert 3.5 <= len(text) / tokens <= 4.5, tokens


def test_long_prose_counts_at_most_about_five_characters_a_token() -> None:
    text = "The quick brown fox jumps over the lazy dog, again and again. " * 16_000  # ~1 MB
    assert 3 <= len(text) / count_tokens(text) <= 5.5


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("Hello, world!", 4), ("tokenization", 2), ("internationalization", 4), ("a" * 8, 1), ("a" * 9, 2)],
)
def test_short_words_stay_one_token_and_long_ones_grow_smoothly(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


def test_pieces_and_truncation_agree_with_the_count_for_long_words() -> None:
    text = "  " + "y" * 30 + " short, " + "z" * 9 + "\n"
    pieces = token_pieces(text)
    assert "".join(pieces) == text
    assert len(pieces) == count_tokens(text) == 1 + 6 + 1 + 1 + 2
    assert truncate_tokens(text, 2) == ("  " + "y" * 12, True)  # cut inside the long word


def test_the_usage_of_a_million_character_prompt_is_plausible() -> None:
    prompt = "x" * 1_000_000
    with OfflineGateway() as gw, httpx2.Client(base_url=gw.url, headers=AUTH, timeout=30) as client:
        body = {"model": "offline/echo", "messages": [{"role": "user", "content": prompt}], "max_tokens": 5}
        usage = client.post(CHAT, json=body).json()["usage"]
    assert 200_000 <= usage["prompt_tokens"] <= 300_000
    assert usage["completion_tokens"] == 5
