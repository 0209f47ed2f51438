"""flotorch_nb._render: untrusted Markdown -> safe HTML, and the answer footer.

Every payload is checked on both layers: through ``render_markdown`` (markdown-it with raw HTML off,
then nh3) and straight through the nh3 cleaner, so the defence in depth is real and not just the first
layer escaping everything. The output is parsed with the stdlib HTML parser, which decodes entities in
attribute values the way a browser does.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest

from flotorch_nb._render import (
    Footer,
    _cleaner,
    answer_html,
    escape_text,
    footer_html,
    footer_text,
    render_markdown,
    text_table,
)
from flotorch_nb._text import one_line
from tests.support.html import XSS_PAYLOADS, _Collect, assert_safe_html


def test_the_payload_list_is_long_enough() -> None:
    assert len(XSS_PAYLOADS) >= 25
    assert len(set(XSS_PAYLOADS)) == len(XSS_PAYLOADS)


def test_checker_catches_unsafe_html() -> None:
    """The checker itself must fail on the things it claims to catch, or the tests below prove nothing."""
    for bad in [
        "<img src=x onerror=alert(1)>",
        '<a href="jav&#x09;ascript:alert(1)">x</a>',
        '<a href=" javascript:alert(1)">x</a>',
        '<p style="color:red">x</p>',
        "<svg></svg>",
        '<code class="evil">x</code>',
        "<!-- x -->",
        '<a href="/relative">x</a>',
    ]:
        with pytest.raises(AssertionError):
            assert_safe_html(bad)
    for bad in ['<span onclick="x">a</span>', '<div style="x" onmouseover="y">a</div>', "<svg></svg>"]:
        with pytest.raises(AssertionError):
            assert_safe_html(bad, own_markup=True)
    own = '<div class="flotorch-footer" style="color:red"><span title="t">x</span></div>'
    assert_safe_html(own, own_markup=True)


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_render_markdown_neutralises_payload(payload: str) -> None:
    assert_safe_html(render_markdown(payload))


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_cleaner_alone_neutralises_raw_html_payload(payload: str) -> None:
    """Second layer on its own: even if raw HTML reached nh3, nothing dangerous would survive."""
    assert_safe_html(_cleaner().clean(payload))


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_payload_inside_markdown_structure(payload: str) -> None:
    text = f"# Title\n\n- item {payload}\n\n> {payload}\n\n| h |\n|---|\n| {payload} |\n\n**{payload}**"
    assert_safe_html(render_markdown(text))


def test_raw_html_is_shown_as_text_not_dropped() -> None:
    out = render_markdown("Try <b>this</b> and <img src=x onerror=alert(1)>")
    assert "&lt;b&gt;this&lt;/b&gt;" in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out


def test_markdown_image_becomes_link_not_img() -> None:
    out = render_markdown("![a chart](https://example.com/chart.png)")
    assert "<img" not in out
    assert (
        '<a href="https://example.com/chart.png" rel="noopener noreferrer nofollow">image: a chart</a>' in out
    )


def test_headings_emphasis_and_lists_survive() -> None:
    out = render_markdown("# Title\n\n## Sub\n\n**bold** *it* ~~gone~~\n\n- a\n- b\n\n3. c\n4. d\n\n> quoted")
    for fragment in [
        "<h1>Title</h1>",
        "<h2>Sub</h2>",
        "<strong>bold</strong>",
        "<em>it</em>",
        "<s>gone</s>",
        "<ul>\n<li>a</li>\n<li>b</li>\n</ul>",
        '<ol start="3">',
        "<blockquote>",
    ]:
        assert fragment in out, (fragment, out)
    assert_safe_html(out)


def test_table_survives_with_alignment_but_without_style() -> None:
    out = render_markdown("| name | n |\n|:-----|--:|\n| a | 1 |")
    assert "<table>" in out
    assert '<th align="left">name</th>' in out
    assert '<td align="right">1</td>' in out
    assert "style" not in out
    assert_safe_html(out)


def test_fenced_code_keeps_language_class_and_escapes_angle_brackets() -> None:
    out = render_markdown("```python\nif a < b:\n    print('<script>')\n```")
    assert '<pre><code class="language-python">' in out
    assert "if a &lt; b:" in out
    assert "print('&lt;script&gt;')" in out
    assert "<script>" not in out


def test_code_class_with_junk_is_dropped_not_passed_through() -> None:
    out = render_markdown('```py" onclick="x\nz\n```')
    assert "<pre><code>z" in out
    assert "onclick" not in out.replace("&quot;", '"').split("<code")[0]
    assert_safe_html(out)


def test_inline_code_is_escaped() -> None:
    assert render_markdown("use `<div>` here") == "<p>use <code>&lt;div&gt;</code> here</p>\n"


def test_links_allowed_schemes_and_rel() -> None:
    out = render_markdown(
        "[site](https://example.com/a?b=1&c=2) [mail](mailto:me@example.com) <http://x.example>"
    )
    assert '<a href="https://example.com/a?b=1&amp;c=2" rel="noopener noreferrer nofollow">site</a>' in out
    assert '<a href="mailto:me@example.com" rel="noopener noreferrer nofollow">mail</a>' in out
    assert '<a href="http://x.example" rel="noopener noreferrer nofollow">http://x.example</a>' in out


def test_relative_and_other_scheme_links_lose_their_href() -> None:
    """Relative URLs would point into the Jupyter server (files, API); ftp/file are not for chat output."""
    out = render_markdown("[a](/api/contents) [b](../secret) [c](ftp://x.example) [d](file:///etc/passwd)")
    assert "href" not in out
    assert out.count('<a rel="noopener noreferrer nofollow">') == 3
    assert "[d](file:///etc/passwd)" in out  # markdown-it refuses file: links outright: left as text


def test_plain_text_is_paragraph() -> None:
    assert render_markdown("hello") == "<p>hello</p>\n"
    assert render_markdown("") == ""


@pytest.mark.parametrize("bad", [None, 1, b"bytes", ["x"]])
def test_render_markdown_rejects_non_str(bad: object) -> None:
    with pytest.raises(TypeError, match="render_markdown"):
        render_markdown(bad)  # type: ignore[arg-type]


def test_escape_text() -> None:
    assert escape_text("<b> & \"q\" 'a'") == "&lt;b&gt; &amp; &quot;q&quot; &#x27;a&#x27;"
    with pytest.raises(TypeError):
        escape_text(3)  # type: ignore[arg-type]


FOOTER: dict[str, Any] = {
    "model": "offline/assistant",
    "input_tokens": 12,
    "output_tokens": 34,
    "total_tokens": 46,
    "latency_s": 0.2104,
    "gateway_latency_ms": 3.4,
}


def footer(**change: Any) -> Footer:
    return Footer(**{**FOOTER, **change})


def test_footer_text_online() -> None:
    expected = "offline/assistant · in 12 · out 34 · total 46 tokens · 210 ms (gateway 3 ms)"
    assert footer_text(footer()) == expected


def test_footer_text_offline_badge_and_seconds() -> None:
    text = footer_text(footer(latency_s=2.5, gateway_latency_ms=None, offline=True))
    assert text == "OFFLINE gateway · offline/assistant · in 12 · out 34 · total 46 tokens · 2.50 s"


def test_footer_usage_unknown_and_estimated() -> None:
    text = footer_text(footer(input_tokens=0, output_tokens=0, total_tokens=0, usage_known=False))
    assert "tokens unknown" in text
    assert "in 0" not in text
    # A stopped reply's cost is an estimate: shown as one, never as the gateway's count.
    estimated = footer_text(footer(input_tokens=0, output_tokens=0, total_tokens=57, usage_known=False))
    assert "about 57 tokens (estimated)" in estimated and "in 0" not in estimated


@pytest.mark.parametrize(
    ("cost", "shown"),
    [
        (None, ""),
        ("unknown", " · cost unknown"),
        (Decimal("0.00123"), " · $0.0012"),
        (Decimal(0), " · $0.00"),
    ],
)
def test_footer_shows_the_cost_last_only_while_a_price_table_is_in_use(cost: Any, shown: str) -> None:
    value = footer(cost=cost)
    assert (
        footer_text(value)
        == "offline/assistant · in 12 · out 34 · total 46 tokens · 210 ms (gateway 3 ms)" + shown
    )
    assert footer_html(value).endswith(f"{shown}</div>")


@pytest.mark.parametrize("cost", [0.0012, "0.0012", "free", 1])
def test_a_footer_cost_is_a_decimal_unknown_or_none(cost: Any) -> None:
    with pytest.raises(TypeError, match="cost must be"):
        footer(cost=cost)


def test_footer_without_latency() -> None:
    text = footer_text(Footer("m", 1, 2, 3))
    assert text == "m · in 1 · out 2 · total 3 tokens"


def test_footer_html_structure_badge_and_escaping() -> None:
    out = footer_html(footer(model="<img src=x onerror=alert(1)>", offline=True))
    assert out.startswith('<div class="flotorch-footer"')
    assert '<span class="flotorch-offline-badge"' in out
    assert "OFFLINE gateway</span>" in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out
    assert "in 12 · out 34 · total 46 tokens" in out
    parser = _Collect()
    parser.feed(out)
    assert [tag for tag, _ in parser.tags] == ["div", "span"]
    assert not any(name.startswith("on") for _, attrs in parser.tags for name, _ in attrs)


@pytest.mark.parametrize("offline", [True, False])
@pytest.mark.parametrize("note", [None, "STOPPED"])
@pytest.mark.parametrize("usage_known", [True, False])
def test_footer_html_text_is_footer_text(offline: bool, note: str | None, usage_known: bool) -> None:
    """What a browser shows (textContent) is word for word the text/plain footer."""
    value = footer(offline=offline, note=note, usage_known=usage_known)
    parts: list[str] = []

    class Text(HTMLParser):
        def handle_data(self, data: str) -> None:
            parts.append(data)

    Text().feed(footer_html(value))
    assert "".join(parts) == footer_text(value)


def test_footer_note_is_shown_first_and_escaped() -> None:
    assert footer_text(footer(note="STOPPED")).startswith("STOPPED · offline/assistant")
    assert footer_text(footer().with_note("ERROR")).startswith("ERROR · ")
    assert "&lt;b&gt;" in footer_html(footer(note="<b>"))
    with pytest.raises(TypeError):
        footer(note=1)


def test_footer_html_online_has_no_badge() -> None:
    assert "OFFLINE" not in footer_html(footer())


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"model": None}, TypeError),
        ({"input_tokens": "12"}, TypeError),
        ({"output_tokens": 1.5}, TypeError),
        ({"total_tokens": True}, TypeError),
        ({"input_tokens": -1}, ValueError),
        ({"latency_s": "fast"}, TypeError),
        ({"latency_s": -0.1}, ValueError),
        ({"latency_s": float("nan")}, ValueError),
        ({"gateway_latency_ms": float("inf")}, ValueError),
    ],
)
def test_footer_rejects_bad_values_where_it_is_built(change: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        footer(**change)


def test_a_footer_is_a_frozen_value() -> None:
    import dataclasses

    value = footer()
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.model = "other"  # type: ignore[misc]
    assert value == footer() and value.with_note("X") != value


def test_answer_html_wraps_sanitized_content_and_footer() -> None:
    line = footer_html(footer())
    out = answer_html("**hi** <img src=x onerror=alert(1)>", line)
    assert out.startswith('<div class="flotorch-answer"><p><strong>hi</strong> &lt;img')
    assert out.endswith(line + "</div>")
    with pytest.raises(TypeError):
        answer_html("x", None)  # type: ignore[arg-type]


def test_lone_surrogates_are_shown_as_replacement_characters_everywhere() -> None:
    """Text from os.listdir() of a badly encoded name: valid in a str, impossible in UTF-8."""
    bad = "report\udcff.txt"
    named = footer(model=bad)
    for out in (escape_text(bad), render_markdown(bad), footer_text(named), footer_html(named)):
        out.encode("utf-8")  # what every display, notebook file and export needs
        assert "report\ufffd.txt" in out
    assert escape_text("pair \ud83d\ude00") == "pair \U0001f600"  # a surrogate pair is its character


def test_import_does_not_load_markdown_or_nh3() -> None:
    """The module is imported by the core's display code; parsing deps load on first render only."""
    code = (
        "import sys, flotorch_nb._render as r\n"
        "assert 'nh3' not in sys.modules and 'markdown_it' not in sys.modules, sorted(sys.modules)\n"
        "r.render_markdown('x')\n"
        "assert 'nh3' in sys.modules and 'markdown_it' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_single_newlines_stay_line_breaks() -> None:
    html = render_markdown("Soft light on the sea\nan offline mind hums softly\nno network needed")
    assert html.count("<br") == 2 and "no network needed" in html


def test_a_text_table_shows_control_characters_and_keeps_its_columns() -> None:
    """Every plain-text table (compare, evals, the call log, --map) goes through ``text_table``: an
    answer holding an escape sequence (clear screen, set title) cannot drive the terminal that
    prints it, nor shift the columns after it."""
    table = text_table([["answer", "model"], ["\x1b[2J\x1b]0;pwned\x07hi", "m"], ["plain", "n"]])
    assert "\x1b" not in table and "\x07" not in table
    head, first, second = table.splitlines()
    assert first.startswith("␛[2J␛]0;pwned␇hi")
    column = head.index("model")
    assert first[column:] == "m" and second[column:] == "n"


def test_a_one_line_excerpt_shows_control_characters() -> None:
    """Error excerpts, batch preview rows and approval lines are ``one_line`` excerpts."""
    assert one_line("line one\n\x1b[2Jline two\x07", 100) == "line one ␛[2Jline two␇"
    assert one_line("\x1b" * 10, 5) == "␛␛␛␛…"
