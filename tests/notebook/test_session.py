"""The notebook session (client, conversation, ledger, budget) and the offline fallback, without IPython.

Real HTTP against the offline gateway on loopback; the process environment is restored after each
test because the session and ``_offline`` read (and ``ensure_gateway`` writes) ``os.environ``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator

import pytest

from flotorch_nb import (
    BudgetExceededError,
    ConfigurationError,
    FlotorchLLM,
    LLMResponse,
)
from flotorch_nb.gateway import Fault, OfflineGateway
from flotorch_nb.notebook import autostart as _offline
from flotorch_nb.notebook.ledger import Ledger, LedgerEntry
from flotorch_nb.notebook.session import Session, get_session, reset

SECRET = "sk-" + "session-SECRET-0123456789"  # split: see tests.support.client.KEY


@pytest.fixture
def session() -> Iterator[Session]:
    s = Session()
    yield s
    s.close()


def ask(session: Session, prompt: str, model: str | None = None) -> LLMResponse:
    return session.client(model).invoke([{"role": "user", "content": prompt}])


# -- configuration and the client ------------------------------------------------------------------
def test_the_client_is_built_lazily_from_the_environment_and_reused(
    offline_env: OfflineGateway, session: Session
) -> None:
    client = session.client()
    assert isinstance(client, FlotorchLLM)
    assert (client.model_id, client.base_url) == ("offline/assistant", offline_env.url)
    assert session.client() is client
    assert ask(session, "hello").offline


def test_overrides_win_over_the_environment(
    gateway: OfflineGateway, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("FLOTORCH_MODEL_ID", "offline/assistant")
    session.configure(base_url=gateway.url + "/", model_id="offline/echo", api_key=SECRET)
    assert session.base_url == gateway.url
    assert session.api_key_source == "session"
    resp = ask(session, "repeat me")
    assert resp.content == "repeat me" and resp.model == "offline/echo"
    session.clear_overrides()
    assert session.base_url == "http://127.0.0.1:9" and session.api_key_source is None


def test_a_configuration_change_rebuilds_the_client_and_closes_the_old_one(
    offline_env: OfflineGateway, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = session.client()
    ask(session, "open the pool")
    assert old._client is not None
    session.configure(model_id="offline/echo")
    new = session.client()
    assert new is not old and new.model_id == "offline/echo"
    assert old._client is None  # closed
    # The environment is read each time: a user's %env after the first call counts too.
    monkeypatch.setenv("FLOTORCH_MODEL_ID", "offline/assistant")
    session.clear_overrides()
    assert session.client() is not new and session.client().model_id == "offline/assistant"


def test_a_per_model_client_shares_the_configuration(offline_env: OfflineGateway, session: Session) -> None:
    echo = session.client("offline/echo")
    assert echo.model_id == "offline/echo" and echo.base_url == offline_env.url
    assert session.client("offline/echo") is echo and session.client() is not echo


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"base_url": "ftp://gateway.example"}, "http"),
        ({"base_url": "not a url"}, "http"),
        ({"model_id": "  "}, "model_id"),
        ({"api_key": ""}, "api_key"),
    ],
)
def test_bad_overrides_are_refused_before_anything_is_stored(
    session: Session, overrides: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        session.configure(**overrides)
    assert session._model_id is None and session._base_url is None and session._api_key is None


def test_missing_configuration_is_named_and_refused_before_any_io(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert session.missing() == ["FLOTORCH_MODEL_ID", "FLOTORCH_API_KEY", "FLOTORCH_BASE_URL"]
    with pytest.raises(ConfigurationError, match="model_id"):
        session.client()
    monkeypatch.setenv("FLOTORCH_REPLAY", "/tmp/recordings")  # replay needs neither key nor URL
    assert session.missing() == ["FLOTORCH_MODEL_ID"]
    assert session.mode == "replay"


def test_the_key_never_appears_in_repr_or_str(offline_env: OfflineGateway, session: Session) -> None:
    session.configure(api_key=SECRET)
    session.client()
    for text in (repr(session), str(session), repr(session.client()), repr(session._api_key)):
        assert SECRET not in text
    assert "api_key='set (session)'" in repr(session)


# -- retiring a client: calls in flight finish, the pools close once idle ---------------------------

SLOW = {"offline": {"token_delay": 0.05}}  # per-request pacing: a stream of ~20 words takes ~1 s
WORDS = " ".join(f"word{i}" for i in range(20))


def _change(session: Session, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a notebook does while a chat-panel answer streams: a magic changes the configuration."""
    if how == "model":
        session.configure(model_id="offline/assistant")  # %flotorch model ...
    elif how == "env":
        monkeypatch.setenv("FLOTORCH_TIMEOUT", "30")  # %env FLOTORCH_TIMEOUT=30
    else:
        session.close()  # %flotorch record / replay / live
    session.client()  # the next cell or ChatPanel.send builds the new client


async def _closed(client: FlotorchLLM) -> bool:
    """Whether every pool of ``client`` is closed, letting this loop run the scheduled close first."""
    for _ in range(50):
        if client._client is None and not client._async_clients:
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["model", "env", "close"])
async def test_a_stream_in_flight_survives_a_reconfiguration_and_its_pool_closes_after(
    offline_env: OfflineGateway, session: Session, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The reviewer's case: ``%flotorch model X`` while a ChatPanel stream runs broke it (StreamError)."""
    monkeypatch.setenv("FLOTORCH_MODEL_ID", "offline/echo")
    old = session.client()
    stream = old.astream([{"role": "user", "content": WORDS}], extra_body=SLOW)
    deltas: list[str] = []
    async for delta in stream:
        deltas.append(delta)
        if len(deltas) == 2:
            _change(session, how, monkeypatch)
            assert session.client() is not old
            assert old._async_clients, "still open: the stream is using it"
    assert "".join(deltas) == WORDS == stream.response.content
    assert await _closed(old), "closed once the stream ended"
    assert old.in_flight == 0
    await session.client().aclose()


def test_a_sync_stream_in_another_thread_survives_a_reconfiguration(
    offline_env: OfflineGateway, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_MODEL_ID", "offline/echo")
    old = session.client()
    started, result = threading.Event(), []

    def read() -> None:
        stream = old.stream([{"role": "user", "content": WORDS}], extra_body=SLOW)
        text = ""
        for delta in stream:
            text += delta
            started.set()
        result.append(text)

    reader = threading.Thread(target=read)
    reader.start()
    assert started.wait(5)
    _change(session, "model", monkeypatch)  # no loop runs here: the sync pool is what matters
    assert old._client is not None, "not closed under the reader"
    reader.join(10)
    assert result == [WORDS]
    assert old._client is None, "closed by the end of its last call"


@pytest.mark.anyio
async def test_an_ainvoke_in_flight_and_a_retry_pause_survive_a_reconfiguration(
    offline_env: OfflineGateway, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = session.client()
    await old.ainvoke([{"role": "user", "content": "open the pool"}])
    offline_env.faults.add(Fault(delay=0.3), Fault(status=429, retry_after="0.3"))
    slow = asyncio.create_task(old.ainvoke([{"role": "user", "content": "hi"}]))
    retried = asyncio.create_task(old.ainvoke([{"role": "user", "content": "again"}]))
    await asyncio.sleep(0.1)  # both sent; one waits on the gateway, one will pause before its retry
    _change(session, "env", monkeypatch)
    assert (await slow).content and (await retried).content
    assert await _closed(old)


@pytest.mark.anyio
async def test_a_stopped_stream_on_a_retired_client_closes_it(
    offline_env: OfflineGateway, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chat panel's Stop cancels the reading task: that is the end of the call too."""
    monkeypatch.setenv("FLOTORCH_MODEL_ID", "offline/echo")
    old = session.client()
    first = asyncio.Event()

    async def read() -> None:
        async for _ in old.astream([{"role": "user", "content": WORDS}], extra_body=SLOW):
            first.set()

    task = asyncio.create_task(read())
    await asyncio.wait_for(first.wait(), 5)
    _change(session, "model", monkeypatch)
    assert old._async_clients
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _closed(old)


@pytest.mark.anyio
async def test_a_retired_client_kept_by_someone_still_works_and_closes_again(
    offline_env: OfflineGateway, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = session.client()
    await old.ainvoke([{"role": "user", "content": "open the pool"}])
    _change(session, "model", monkeypatch)
    assert await _closed(old), "idle: closed at once"
    await asyncio.sleep(0.05)  # whatever close was scheduled has run
    assert old.invoke([{"role": "user", "content": "late"}]).content
    assert (await old.ainvoke([{"role": "user", "content": "later"}])).content
    assert await _closed(old), "the pools those late calls opened are closed after them"


@pytest.mark.anyio
async def test_a_rebuild_inside_a_running_loop_closes_the_old_async_pool_too(
    offline_env: OfflineGateway, session: Session
) -> None:
    old = session.client()
    await old.ainvoke([{"role": "user", "content": "open an async pool, as the chat panel does"}])
    assert old._async_clients
    session.configure(model_id="offline/echo")
    assert session.client() is not old
    for _ in range(20):  # the close runs as a task on this loop
        if not old._async_clients:
            break
        await asyncio.sleep(0.01)
    assert old._async_clients == {} and old._client is None
    await session.client().aclose()


# -- conversation -------------------------------------------------------------------------------------
def test_only_completed_turns_are_history_and_each_reply_keeps_its_response(
    offline_env: OfflineGateway, session: Session
) -> None:
    conversation = session.conversation
    first = conversation.messages("one", system="be brief")
    assert first == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one"}]
    turn = conversation.start("one", "offline/assistant")
    turn.finish(r1 := session.client().invoke(first))
    failed = conversation.start("lost", "offline/assistant")
    failed.end("error", "ServerError: HTTP 500")
    second = conversation.messages("two", system="be brief")
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2] == r1.assistant_message() and turn.response is r1
    assert "lost" not in str(second)  # a failed turn stays visible but is never sent back
    assert conversation.messages("fresh") == [
        {"role": "user", "content": "one"},
        r1.assistant_message(),
        {"role": "user", "content": "fresh"},
    ]
    assert conversation.clear() == 2 and conversation.turns == []


# -- ledger and budget --------------------------------------------------------------------------------
def test_every_session_client_call_is_in_the_ledger_summed_per_model(
    offline_env: OfflineGateway, session: Session
) -> None:
    responses = [
        ask(session, "hello there"),
        ask(session, "tell me about rivers"),
        ask(session, "x", "offline/echo"),
    ]
    assert {e.source for e in session.ledger.entries} == {"code"}  # nobody labelled these calls
    rows = {row["model"]: row for row in session.ledger.as_rows()}
    assistant = [r for r in responses if r.model == "offline/assistant"]
    assert rows["offline/assistant"]["calls"] == 2
    for name in ("input_tokens", "output_tokens", "total_tokens"):
        assert rows["offline/assistant"][name] == sum(getattr(r.usage, name) for r in assistant)
    assert rows["offline/echo"]["total_tokens"] == responses[2].metadata["totalTokens"]
    total = sum(r.metadata["totalTokens"] for r in responses)
    assert session.spent_tokens == total == session.ledger.totals.total_tokens
    text = session.ledger.as_text()
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["model", "calls"]
    inputs = sum(r.metadata["inputTokens"] for r in responses)
    outputs = sum(r.metadata["outputTokens"] for r in responses)
    assert lines[-1].split() == ["total", "3", str(inputs), str(outputs), str(total), "0"]
    bundle = session.ledger._repr_mimebundle_()
    assert bundle["text/plain"] == text and f"<td>{total}</td>" in bundle["text/html"]


def test_answers_without_usage_are_counted_as_estimated_not_as_zero(
    offline_env: OfflineGateway, session: Session
) -> None:
    offline_env.faults.add(Fault(omit_usage=True))
    resp = ask(session, "no usage please")
    assert resp.usage is None
    (row,) = session.ledger.as_rows()
    assert row["calls"] == 1 and row["estimated"] == 1
    assert (row["input_tokens"], row["output_tokens"]) == (0, 0)
    assert row["total_tokens"] > 0  # an estimate counts against a budget; zero would be a lie


def test_the_ledger_html_escapes_model_names() -> None:
    ledger = Ledger()
    hostile = "<img src=x onerror=alert(1)>"
    ledger.record(LedgerEntry("test", hostile, 1, 2, 3, True, 0.1, False))
    html = ledger.as_html()
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert Ledger().as_text() == "no calls recorded yet"


def test_the_budget_refuses_calls_once_spent_and_says_how_to_continue(
    offline_env: OfflineGateway, session: Session
) -> None:
    session.check_budget()  # no budget: never refuses
    session.set_budget(10_000)
    resp = ask(session, "spend some tokens")
    session.check_budget()
    session.set_budget(resp.usage.total_tokens if resp.usage else 1)  # spent == budget: refused
    with pytest.raises(BudgetExceededError, match=r"budget spent: \d+ of \d+ tokens.*%flotorch budget off"):
        session.check_budget()
    sent = len(offline_env.requests)
    with pytest.raises(BudgetExceededError):
        ask(session, "one more")  # the client's hook refuses it: nothing is sent
    assert len(offline_env.requests) == sent and len(session.ledger) == 1
    session.set_budget(None)
    session.check_budget()
    for bad in (0, -5, True, 2.5, "100"):
        with pytest.raises(ConfigurationError, match="whole number"):
            session.set_budget(bad)  # type: ignore[arg-type]


def test_clear_empties_conversation_and_ledger_but_keeps_budget_and_configuration(
    offline_env: OfflineGateway, session: Session
) -> None:
    session.set_budget(500)
    session.configure(model_id="offline/echo")
    turn = session.conversation.start("hi", "offline/echo")
    turn.finish(ask(session, "hi"))
    assert session.clear() == (1, 1)
    assert (session.conversation.turns, len(session.ledger)) == ([], 0)
    assert session.budget == 500 and session.model_id == "offline/echo"


def test_get_session_is_process_wide_and_reset_returns_it_clean(offline_env: OfflineGateway) -> None:
    first = get_session()
    assert get_session() is first
    client = first.client()
    client.invoke([{"role": "user", "content": "hi"}])
    first.set_budget(10)
    first.configure(model_id="offline/echo")
    first.conversation.start("hi", "offline/echo")
    assert reset() is first and get_session() is first  # hooks on clients someone kept stay live
    assert client._client is None  # the session's client was closed
    assert (len(first.ledger), first.budget, first.conversation.turns) == (0, None, [])
    assert first.model_id == "offline/assistant"  # the override is gone: the environment decides


# -- the offline fallback -----------------------------------------------------------------------------
@pytest.fixture
def no_gateway() -> Iterator[None]:
    """A process with no embedded gateway before and after the test."""
    _offline.stop_gateway()
    yield
    _offline.stop_gateway()


def test_ensure_gateway_starts_one_offline_gateway_and_points_the_environment_at_it(no_gateway: None) -> None:
    banner = _offline.ensure_gateway()
    url = os.environ["FLOTORCH_BASE_URL"]
    assert banner == (
        "flotorch_nb: no FLOTORCH_API_KEY/FLOTORCH_BASE_URL set — using the OFFLINE gateway at "
        f"{url} (deterministic local models, not a real LLM)"
    )
    assert url == _offline.gateway_url() and url.startswith("http://127.0.0.1:")
    assert os.environ["FLOTORCH_API_KEY"] == _offline.OFFLINE_API_KEY
    assert os.environ["FLOTORCH_MODEL_ID"] == "offline/assistant"
    assert os.environ["FLOTORCH_COMPARE_MODELS"] == "offline/concise,offline/assistant,offline/verbose"
    assert _offline.ensure_gateway() == banner  # idempotent: the same gateway
    with FlotorchLLM() as llm:  # a plain client finds it through the environment
        resp = llm.invoke([{"role": "user", "content": "hi"}])
    assert resp.offline and resp.model == "offline/assistant"
    _offline.stop_gateway()
    assert _offline.gateway_url() is None
    assert not {
        "FLOTORCH_BASE_URL",
        "FLOTORCH_API_KEY",
        "FLOTORCH_MODEL_ID",
        "FLOTORCH_COMPARE_MODELS",
    } & set(os.environ)


def test_ensure_gateway_keeps_a_chosen_model_and_stop_leaves_user_changes(
    no_gateway: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_MODEL_ID", "offline/echo")
    _offline.ensure_gateway()
    assert os.environ["FLOTORCH_MODEL_ID"] == "offline/echo"
    os.environ["FLOTORCH_API_KEY"] = "changed-by-the-user"
    _offline.stop_gateway()
    assert os.environ["FLOTORCH_API_KEY"] == "changed-by-the-user"
    assert "FLOTORCH_BASE_URL" not in os.environ and os.environ["FLOTORCH_MODEL_ID"] == "offline/echo"


def test_a_configured_gateway_is_named_without_its_key(
    no_gateway: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_API_KEY", SECRET)
    monkeypatch.setenv("FLOTORCH_BASE_URL", "https://user:pw@gateway.example.com")
    monkeypatch.setenv("FLOTORCH_MODEL_ID", "openai/gpt-4o-mini")
    banner = _offline.ensure_gateway()
    assert (
        banner
        == "flotorch_nb: using FloTorch gateway at https://gateway.example.com (model openai/gpt-4o-mini)"
    )
    assert _offline.gateway_url() is None  # nothing started
    assert "FLOTORCH_COMPARE_MODELS" not in os.environ  # a real gateway's models are the user's choice
    monkeypatch.delenv("FLOTORCH_BASE_URL")
    assert "FLOTORCH_BASE_URL is not" in _offline.ensure_gateway()
    monkeypatch.delenv("FLOTORCH_API_KEY")
    monkeypatch.setenv("FLOTORCH_BASE_URL", "https://gateway.example.com")
    assert "FLOTORCH_API_KEY is not set" in _offline.ensure_gateway()
    assert _offline.gateway_url() is None


def test_replay_needs_no_gateway(no_gateway: None, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("FLOTORCH_REPLAY", str(tmp_path))
    banner = _offline.ensure_gateway()
    assert banner.startswith(f"flotorch_nb: replaying recorded answers from {tmp_path}")
    assert _offline.gateway_url() is None and "FLOTORCH_BASE_URL" not in os.environ
    assert os.environ["FLOTORCH_MODEL_ID"] == "offline/assistant"
    # Recordings of offline models replay the offline family's comparisons.
    assert os.environ["FLOTORCH_COMPARE_MODELS"] == "offline/concise,offline/assistant,offline/verbose"
