"""One model per idea in the notebook layer, one place per rule, and one ``reset()`` for everything.

``%%flotorch`` and the chat panel share the conversation type and the usage type; the footer is a
typed value; "a non-empty name" is one check with one wording; and ``reset()`` returns the whole
process (session, conversation, ledger, budget, the autostarted gateway, the environment variables
the session set, pools left on closed event loops) to a clean state.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotorch_nb import ConfigurationError, FlotorchLLM, LLMResponse, Usage, _render
from flotorch_nb._transport import _pools
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.notebook import autostart, commands
from flotorch_nb.notebook.conversation import Conversation
from flotorch_nb.notebook.ledger import Totals
from flotorch_nb.notebook.session import Session, get_session, reset
from flotorch_nb.widgets import ChatPanel


def test_the_magic_and_the_panel_share_one_conversation_and_one_usage_type(
    offline_env: OfflineGateway,
) -> None:
    panel = ChatPanel()
    session = get_session()
    assert type(panel.conversation) is type(session.conversation) is Conversation
    assert type(panel.conversation.totals) is type(session.ledger.totals) is Totals
    assert all(type(row) is Totals for row in session.ledger.rows())


def test_the_footer_is_one_typed_value_everywhere() -> None:
    resp = LLMResponse("hi", {}, model="m", usage=Usage(1, 2, 3), latency_s=0.5, offline=True)
    footer = resp.footer()
    assert isinstance(footer, _render.Footer)
    assert footer == _render.Footer("m", 1, 2, 3, True, 0.5, None, True)
    assert _render.footer_text(footer) in resp._repr_mimebundle_()["text/plain"]


@pytest.mark.parametrize("blank", ["", "   ", 3])
def test_a_blank_name_is_refused_with_one_wording_everywhere(
    offline_env: OfflineGateway, blank: object
) -> None:
    session = Session()
    refusals = [
        lambda: session.configure(model_id=blank),  # type: ignore[arg-type]
        lambda: session.client(blank),  # type: ignore[arg-type]
        lambda: ChatPanel(model=blank),  # type: ignore[arg-type]
        lambda: setattr(ChatPanel(), "model", blank),
    ]
    for refuse in refusals:
        with pytest.raises(ConfigurationError, match=r"^model(_id)? must be a non-empty string$"):
            refuse()
    with pytest.raises(ConfigurationError, match=r"^api_key must be a non-empty string$"):
        session.configure(api_key="  ")
    # The client's with_model asks the same question, in the same words.
    with pytest.raises(ConfigurationError, match=r"^model_id must be a non-empty string$"):
        FlotorchLLM().with_model(blank)  # type: ignore[arg-type]


@pytest.fixture
def no_gateway() -> Iterator[None]:
    autostart.stop_gateway()
    yield
    autostart.stop_gateway()


def test_reset_returns_the_whole_process_to_a_clean_state(no_gateway: None, tmp_path: Path) -> None:
    before = {k: v for k, v in os.environ.items() if k.startswith("FLOTORCH_")}
    autostart.ensure_gateway()  # what %load_ext does with nothing configured
    session = get_session()
    session.configure(model_id="offline/echo")
    session.set_budget(10_000)
    commands.record(session, str(tmp_path / "cassettes"))  # sets FLOTORCH_RECORD
    client = session.client()
    client.invoke([{"role": "user", "content": "hi"}])
    session.conversation.start("hi", "offline/echo")
    # A pool left on a loop closed without cancelling its tasks (not asyncio.run()'s way) and behind
    # our back (not through its wrapped close(), as a loop type that cannot be wrapped would be).
    loop = asyncio.new_event_loop()
    loop.run_until_complete(client.ainvoke([{"role": "user", "content": "hi"}]))
    loop.run_until_complete(client.aclose())
    type(loop).close(loop)
    assert loop in _pools._LOOP_POOLS

    assert reset() is session
    assert autostart.gateway_url() is None
    assert {k: v for k, v in os.environ.items() if k.startswith("FLOTORCH_")} == before
    assert (session.model_id, session.budget, len(session.ledger), len(session.conversation)) == (
        None,
        None,
        0,
        0,
    )
    assert client._client is None
    assert not [lp for lp in _pools._LOOP_POOLS if lp.is_closed()]
