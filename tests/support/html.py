"""XSS payloads and the checks that rendered HTML is inert (what the sanitizer promises)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<IMG SRC=x OnErRoR=alert(1)>",
    "<img src=x onerror\n=alert(1)>",
    "<img/src=x/onerror=alert(1)>",
    "<img src=x onerror=alert(1)",  # unclosed tag
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<math href=javascript:alert(1)>x</math>",
    "[x](javascript:alert(1))",
    "[x](JAVASCRIPT:alert(1))",
    "[x](<javascript:alert(1)>)",
    "[x](jav&#x09;ascript:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](javascript&colon;alert(1))",
    "[x][r]\n\n[r]: javascript:alert(1)",
    "<javascript:alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="  javascript:alert(1)">x</a>',
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    '<a href="jav\tascript:alert(1)">x</a>',
    '<a href="java\x00script:alert(1)">x</a>',
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    '<a href="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">x</a>',
    "![x](data:image/png;base64,iVBORw0KGgo=)",
    '<a href="https://ok.example" onclick="alert(1)">x</a>',
    '[x](https://ok.example "t\\" onmouseover=\\"alert(1)")',
    '![x](https://example.com/a.png "\\" onerror=\\"alert(1)")',
    '![x" onerror="alert(1)](https://example.com/a.png)',
    '<iframe src="javascript:alert(1)"></iframe>',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<object data="javascript:alert(1)"></object>',
    '<embed src="javascript:alert(1)">',
    "<style>body{background:url(javascript:alert(1))}</style>",
    '<div style="width: expression(alert(1))">x</div>',
    '<p style="background:url(javascript:alert(1))">x</p>',
    "<form action=javascript:alert(1)><button>go</button></form>",
    '<form><button formaction="javascript:alert(1)">go</button></form>',
    "<details open ontoggle=alert(1)>",
    '<!--<img src="--><img src=x onerror=alert(1)//">',
    "<!--[if gte IE 4]><script>alert(1)</script><![endif]-->",
    '<base href="javascript:alert(1)//">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<link rel=stylesheet href="javascript:alert(1)">',
    "<body onload=alert(1)>",
    "<input autofocus onfocus=alert(1)>",
    "<video><source onerror=alert(1)></video>",
    "<template><img src=x onerror=alert(1)></template>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<xss onpointerenter=alert(1)>hover</xss>",
    '<table background="javascript:alert(1)"><tr><td>x</td></tr></table>',
    "<marquee onstart=alert(1)>x</marquee>",
    "<<script>script>alert(1)<</script>/script>",
    '```"><img src=x onerror=alert(1)>\ncode\n```',
    "```python onmouseover=alert(1)\ncode\n```",
    "| a |\n|---|\n| <img src=x onerror=alert(1)> |",
    "**<img src=x onerror=alert(1)>**",
    '<a href="https://ok.example" target="_blank" rel="opener">x</a>',
]


FORBIDDEN_TAGS = {
    "script",
    "iframe",
    "object",
    "embed",
    "style",
    "svg",
    "math",
    "base",
    "meta",
    "form",
    "img",
    "link",
    "input",
    "button",
    "textarea",
    "template",
    "frame",
    "frameset",
    "video",
    "audio",
    "source",
    "body",
    "html",
    "head",
    "title",
    "noscript",
    "xss",
    "marquee",
    "details",
}


ALLOWED_TAGS = {
    "a",
    "blockquote",
    "br",
    "code",
    "del",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "strong",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
}


ALLOWED_ATTRIBUTES = {"href", "title", "rel", "start", "class", "align"}


URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "background", "data", "poster"}


class _Collect(HTMLParser):
    """Record every tag and attribute (entity-decoded) and any comment or declaration."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.other: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_comment(self, data: str) -> None:
        self.other.append(f"comment {data!r}")

    def handle_decl(self, decl: str) -> None:
        self.other.append(f"decl {decl!r}")

    def handle_pi(self, data: str) -> None:
        self.other.append(f"pi {data!r}")

    def unknown_decl(self, data: str) -> None:
        self.other.append(f"unknown decl {data!r}")


def _url_is_safe(value: str) -> bool:
    # Browsers drop leading C0 controls/space and every tab/newline inside a URL before reading the scheme.
    cleaned = "".join(ch for ch in value if ch not in "\t\n\r").lstrip("\x00\x01\x02\x03 \x0b\x0c").lower()
    return cleaned.startswith(("http://", "https://", "mailto:"))


# Markup the panel and footer add around model output (built from escaped values, never model text).
OWN_TAGS = {"div", "span", "b", "strong", "details", "summary"}


OWN_ATTRIBUTES = {"class", "style", "title"}


def assert_safe_html(out: str, *, own_markup: bool = False) -> None:
    """Fail if ``out`` holds anything that could run script or load a resource on its own.

    ``own_markup`` also admits the wrapper tags flotorch_nb itself adds (with class/style/title only);
    the model's part is still held to the strict allow-list.
    """
    parser = _Collect()
    parser.feed(out)
    parser.close()
    assert parser.other == [], out
    for tag, attrs in parser.tags:
        if own_markup and tag in OWN_TAGS:
            assert {name for name, _ in attrs} <= OWN_ATTRIBUTES, out
            continue
        assert tag not in FORBIDDEN_TAGS, out
        assert tag in ALLOWED_TAGS, out
        for name, value in attrs:
            assert not name.startswith("on"), out
            assert name != "style", out
            assert name in ALLOWED_ATTRIBUTES, out
            if name in URL_ATTRIBUTES:
                assert value is not None and _url_is_safe(value), out
            if name == "class":
                assert tag == "code" and value is not None and value.startswith("language-"), out
            if name == "rel":
                assert value == "noopener noreferrer nofollow", out


def own_markup_removed(html: str) -> str:
    """The comparison's own table tags carry inline styles; model text never can (the sanitizer drops
    class and style), so strip ours and hold the rest to the strict checker."""
    return re.sub(r'<(table|th|td)(?: class="flotorch-compare[-\w]*")? style="[^"<>]*">', r"<\1>", html)
