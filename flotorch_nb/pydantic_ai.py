"""pydantic-ai agents on our client: ``Agent(FlotorchModel(llm), tools=[...])``.

Interop beats imitation: people who already write pydantic-ai agents keep them, and every model request
the agent makes rides ``FlotorchLLM.ainvoke`` -- hooks, budgets and gates, the ledger, the answer cache,
record/replay and provenance apply to each step exactly as to a hand-written call. This module only
translates: pydantic-ai's messages and tool definitions to OpenAI chat messages, and our
``LLMResponse`` back to a ``ModelResponse`` with its usage. Errors from the client are not wrapped:
a gateway failure surfaces as our typed error (``RateLimitError``, ``BadRequestError``, ...).

``agent.run_stream`` rides ``llm.astream`` the same way. ``agent_cards`` turns a run's messages into
the tool cards ``%%flotorch --agent`` and ``ChatPanel(agent=...)`` show.

Imported only when used (``pydantic-ai`` is an extra), so ``import flotorch_nb`` stays light.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic_ai.messages import (
    BaseToolReturnPart,
    FinishReason,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponsePart,
    ModelResponseStreamEvent,
    RetryPromptPart,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import RunContext
from pydantic_ai.usage import RequestUsage

from ._errors import InvalidRequestError
from ._pipeline._stream import AsyncChatStream
from ._render import Footer
from .llm import FlotorchLLM, LLMResponse
from .tools._cards import CardData, result_text

__all__ = ["FlotorchModel", "agent_cards", "agent_footer"]

#: pydantic-ai setting name -> chat completions parameter (the ones an OpenAI-compatible gateway takes).
_SETTINGS = {
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "stop_sequences": "stop",
}
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_call",
    "content_filter": "content_filter",
}


class FlotorchModel(Model):
    """A pydantic-ai ``Model`` whose every request is one ``llm.ainvoke`` call."""

    def __init__(self, llm: FlotorchLLM, *, settings: ModelSettings | None = None) -> None:
        super().__init__(settings=settings)
        self._llm = llm

    @property
    def llm(self) -> FlotorchLLM:
        """The client every request goes through."""
        return self._llm

    @property
    def model_name(self) -> str:
        """The gateway model id (what the client sends as ``model``)."""
        return self._llm.model_id

    @property
    def system(self) -> str:
        """The provider name pydantic-ai reports (OpenTelemetry ``gen_ai.system``)."""
        return "flotorch"

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        """Send one chat completion through the client and map its answer back."""
        model_settings, model_request_parameters = self.prepare_request(
            model_settings, model_request_parameters
        )
        chat, tools, params = self._chat_request(messages, model_settings, model_request_parameters)
        response = await self._llm.ainvoke(chat, tools=tools, **params)
        return to_model_response(response, self.model_name)

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        """Stream one answer through ``llm.astream``: text as it arrives, tool calls and usage at the end
        (our stream yields content deltas and assembles tool calls into the final response)."""
        model_settings, model_request_parameters = self.prepare_request(
            model_settings, model_request_parameters
        )
        chat, tools, params = self._chat_request(messages, model_settings, model_request_parameters)
        stream = self._llm.astream(chat, tools=tools, **params)
        try:
            yield _FlotorchStream(model_request_parameters, stream, self.model_name)
        finally:
            await stream.aclose()

    def _chat_request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> tuple[list[dict[str, Any]], list[Any] | None, dict[str, Any]]:
        """The chat messages, tools and parameters of one request (the same for both paths)."""
        chat = to_chat_messages(messages)
        instructions = self._get_instruction_parts(messages, model_request_parameters) or []
        leading = next((i for i, m in enumerate(chat) if m["role"] != "system"), len(chat))
        chat[leading:leading] = [{"role": "system", "content": part.content} for part in instructions]
        tools: list[Any] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description or "",
                    "parameters": tool.parameters_json_schema,
                },
            }
            for tool in (*model_request_parameters.function_tools, *model_request_parameters.output_tools)
        ]
        params: dict[str, Any] = {
            wire: model_settings[name]  # type: ignore[literal-required]
            for name, wire in _SETTINGS.items()
            if model_settings and model_settings.get(name) is not None
        }
        if tools and not model_request_parameters.allow_text_output:
            params["tool_choice"] = "required"  # structured output comes back as an output tool's call
        return chat, tools or None, params


@dataclass
class _FlotorchStream(StreamedResponse):
    """pydantic-ai's view of one ``AsyncChatStream``."""

    _stream: AsyncChatStream
    _model_name: str
    _timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        async for delta in self._stream:
            for event in self._parts_manager.handle_text_delta(vendor_part_id="content", content=delta):
                yield event
        response = self._stream.response
        for call in response.tool_calls:
            yield self._parts_manager.handle_tool_call_part(
                vendor_part_id=call.id, tool_name=call.name, args=call.arguments, tool_call_id=call.id
            )
        if response.usage is not None:
            self._usage = RequestUsage(
                input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens
            )
        self.provider_response_id = response.id
        self.finish_reason = _FINISH.get(response.finish_reason or "")

    async def close_stream(self) -> None:
        await self._stream.aclose()

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def provider_name(self) -> str:
        return "flotorch"

    @property
    def provider_url(self) -> str | None:
        return None

    @property
    def timestamp(self) -> datetime:
        return self._timestamp


def to_chat_messages(messages: Sequence[ModelMessage]) -> list[dict[str, Any]]:
    """pydantic-ai's history as OpenAI chat messages (pure); a part we cannot send is an
    ``InvalidRequestError`` before any I/O rather than being dropped silently."""
    chat: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                chat.append(_request_part(part))
        else:
            chat.append(_assistant(message))
    return chat


def _request_part(part: object) -> dict[str, Any]:
    if isinstance(part, SystemPromptPart):
        return {"role": "system", "content": part.content}
    if isinstance(part, UserPromptPart):
        if isinstance(part.content, str):
            return {"role": "user", "content": part.content}
        texts = [item for item in part.content if isinstance(item, str)]
        if len(texts) != len(part.content):
            raise InvalidRequestError(
                "FlotorchModel sends text user prompts only; this prompt holds other content"
            )
        return {"role": "user", "content": "\n".join(texts)}
    if isinstance(part, BaseToolReturnPart):  # a tool's result, or a retry prompt naming the call
        return {"role": "tool", "tool_call_id": part.tool_call_id, "content": part.model_response_str()}
    raise InvalidRequestError(f"FlotorchModel cannot send a pydantic-ai {type(part).__name__}")


def _assistant(message: ModelResponse) -> dict[str, Any]:
    text = "".join(part.content for part in message.parts if isinstance(part, TextPart))
    calls = [
        {
            "id": part.tool_call_id,
            "type": "function",
            "function": {"name": part.tool_name, "arguments": part.args_as_json_str()},
        }
        for part in message.parts
        if isinstance(part, ToolCallPart)
    ]
    turn: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        turn["tool_calls"] = calls
    return turn


def to_model_response(response: LLMResponse, model_name: str) -> ModelResponse:
    """Our ``LLMResponse`` as pydantic-ai's ``ModelResponse``: text, tool calls and usage (pure)."""
    parts: list[ModelResponsePart] = []
    if response.content:
        parts.append(TextPart(content=response.content))
    parts.extend(
        ToolCallPart(tool_name=call.name, args=call.arguments, tool_call_id=call.id)
        for call in response.tool_calls
    )
    usage = response.usage
    return ModelResponse(
        parts=parts,
        usage=RequestUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
        if usage
        else RequestUsage(),
        model_name=response.model or model_name,
        provider_name="flotorch",
        provider_response_id=response.id,
        finish_reason=_FINISH.get(response.finish_reason or ""),
    )


# -- showing a run with the tool cards ---------------------------------------------------------------
def agent_cards(messages: Sequence[ModelMessage]) -> list[CardData]:
    """Every tool call of an agent run as a tool card (pure): each ``ToolCallPart`` of the model's
    responses, with the ``ToolReturnPart`` (its result; with an ``outcome`` other than "success" its
    error: bad arguments, a ``ModelRetry``, a denial) or ``RetryPromptPart`` that answered it: the
    first answer after the call with its ``tool_call_id`` (ids may repeat across turns)."""
    calls: list[ToolCallPart] = []
    outcomes: dict[int, BaseToolReturnPart | RetryPromptPart] = {}
    for message in messages:
        if isinstance(message, ModelResponse):
            calls.extend(part for part in message.parts if isinstance(part, ToolCallPart))
            continue
        for part in message.parts:
            if isinstance(part, BaseToolReturnPart | RetryPromptPart) and part.tool_call_id:
                waiting = (
                    i
                    for i, c in enumerate(calls)
                    if c.tool_call_id == part.tool_call_id and i not in outcomes
                )
                index = next(waiting, None)
                if index is not None:
                    outcomes[index] = part
    cards: list[CardData] = []
    for index, call in enumerate(calls):
        outcome = outcomes.get(index)
        arguments = call.args_as_json_str()
        failed = getattr(outcome, "outcome", "success")  # pydantic-ai 2: a retry is a failed return
        if isinstance(outcome, RetryPromptPart) or (outcome is not None and failed != "success"):
            error = result_text(outcome.content)
            state: Literal["error", "denied"] = "denied" if failed == "denied" else "error"
            cards.append(CardData(call.tool_name, arguments, error=error, state=state))
        elif outcome is not None:
            cards.append(CardData(call.tool_name, arguments, result=result_text(outcome.content)))
        else:
            cards.append(CardData(call.tool_name, arguments, error="no result", state="error"))
    return cards


def agent_footer(result: Any) -> Footer:
    """The footer of an agent run: the model, and the tokens of every request it made."""
    usage = result.usage  # a property in pydantic-ai 2 (a method before)
    if not hasattr(usage, "input_tokens"):
        usage = usage()
    model = getattr(result.response, "model_name", None) or "unknown model"
    return Footer(
        model=model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
    )
