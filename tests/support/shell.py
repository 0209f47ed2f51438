"""An IPython InteractiveShell that records what cells display, as the magic tests drive it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell

from flotorch_nb import (
    LLMResponse,
)
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.notebook import magics as flotorch_magics
from flotorch_nb.notebook.session import reset
from tests.support.html import assert_safe_html  # noqa: F401

SECRET = "sk-" + "live-SECRET-9f8e7d6c5b4a"  # split: see tests.support.client.KEY


XSS = '<img src=x onerror="window.pwned=1"> **bold** <script>window.pwned=2</script>'


@dataclass
class Event:
    kind: str  # "publish", "clear" or "result" (the cell's value: its execute_result)
    data: dict[str, Any] = field(default_factory=dict)
    transient: dict[str, Any] = field(default_factory=dict)
    update: bool = False
    wait: bool = False


class RecordingPublisher(CapturingDisplayPublisher):
    """Every display/update/clear_output, in order; nothing is dropped when output is cleared."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events: list[Event] = []

    def publish(
        self,
        data: Any,
        metadata: Any = None,
        source: Any = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        self.events.append(Event("publish", dict(data), dict(transient or {}), update))
        super().publish(data, metadata, source, transient=transient, update=update)

    def clear_output(self, wait: bool = False) -> None:
        self.events.append(Event("clear", wait=wait))
        super().clear_output(wait)

    @property
    def published(self) -> list[Event]:
        return [e for e in self.events if e.kind == "publish"]

    @property
    def results(self) -> list[Event]:
        return [e for e in self.events if e.kind == "result"]

    def write_result(self, format_dict: dict[str, Any], md_dict: Any = None) -> None:
        """Stands in for ``DisplayHook.write_format_data``: what ipykernel sends as execute_result."""
        self.events.append(Event("result", dict(format_dict)))

    def everything(self) -> str:
        return json.dumps([e.data for e in self.events], default=str)


@dataclass
class Shell:
    ip: InteractiveShell
    pub: RecordingPublisher

    def cell(self, line: str, body: str) -> Any:
        """Run ``%%flotorch line`` with ``body`` and return the cell's value (exceptions propagate)."""
        return self.ip.run_cell_magic("flotorch", line, body)

    def line(self, line: str) -> Any:
        return self.ip.run_line_magic("flotorch", line)

    def run(self, source: str) -> Any:
        """Run a whole cell as the kernel does (history, Out[n], ``_``); return its ExecutionResult."""
        return self.ip.run_cell(source, store_history=True)


@pytest.fixture
def shell(offline_env: OfflineGateway, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shell]:
    ip = InteractiveShell.instance()
    # nest-asyncio patches asyncio for the whole process: it is tested in a subprocess instead.
    monkeypatch.setenv("FLOTORCH_NO_NEST_ASYNCIO", "1")
    monkeypatch.setenv("FLOTORCH_MAX_RETRIES", "0")  # an injected failure fails at once
    pub = RecordingPublisher(shell=ip)
    monkeypatch.setattr(ip, "display_pub", pub)
    monkeypatch.setattr(ip.displayhook, "write_format_data", pub.write_result)
    names = set(ip.user_ns)
    flotorch_magics.load_ipython_extension(ip)
    reset()
    yield Shell(ip, pub)
    reset()
    for name in set(ip.user_ns) - names:  # the shell is shared: leave no variables behind
        del ip.user_ns[name]


def data_of(value: Any) -> dict[str, Any]:
    """What a value displays (``_repr_mimebundle_`` may return (data, metadata), as a cell's does)."""
    bundle = value._repr_mimebundle_()
    return bundle[0] if isinstance(bundle, tuple) else bundle


def html_of(resp: LLMResponse) -> str:
    return data_of(resp)["text/html"]
