"""One chat-panel turn that runs tools (``ChatPanel(tools=[...], approve=...)``) or a pydantic-ai agent
(``ChatPanel(agent=agent)``), drawn with the tool cards ``%%flotorch --tools`` shows.

The panel's turns are tasks on the kernel's event loop and no cell is running, so an Approve / Deny
prompt (``approval``) simply waits for its click in the turn's prompt area. The turn's footer is the
whole run's (every model turn's tokens and cost, ``tools._cards.run_footer``), so the panel's totals
cover every step; the answer alone goes back as history (the tool messages stay in the run). A turn
that fails or is stopped keeps the cards of the calls that ran. Labelled ``chat`` for the client's
hooks and ended on Stop or failure by ``chat.turn_calls``, as every panel turn is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..tools._cards import CardTracker
from ..tools._loop import arun
from .approval import widget_asker
from .chat import turn_calls
from .pacing import Throttle

if TYPE_CHECKING:
    from .panel_view import TurnView

__all__ = ["run_agent_turn", "run_tool_turn"]

RENDER_INTERVAL_S = 0.05


async def run_tool_turn(
    client: Any,
    view: TurnView,
    messages: list[dict[str, Any]],
    *,
    tools: Sequence[Any],
    approve: Any,
    max_steps: int,
    stream: bool,
    params: Mapping[str, Any],
) -> Any:
    """Run the loop for ``view.turn`` -> its ``ToolRun``; the cards and text drawn as they change."""
    turn = view.turn
    render = Throttle(view.render, RENDER_INTERVAL_S)

    def changed() -> None:
        turn.cards = tracker.cards(waiting=False)  # a waiting call is shown by its prompt
        turn.reply = tracker.text
        render()

    def show(prompt: Any) -> None:
        if view.prompts is not None:
            view.prompts.children = (*view.prompts.children, prompt)

    tracker = CardTracker(changed, stream=stream)
    with turn_calls(turn):
        try:
            run = await arun(
                client,
                messages,
                list(tools),
                max_steps=max_steps,
                approve=approve,
                ask=tracker.asking(widget_asker(show)),
                view=tracker,
                **{**params, "model": turn.model},
            )
        except (asyncio.CancelledError, Exception):
            render.cancel()
            turn.cards = tracker.cards()  # the calls that ran stay shown
            raise
        finally:
            _close_prompts(view)
    render.cancel()
    assert run.response is not None
    turn.finish_run(run)
    turn.cards = tracker.cards()
    return run


async def run_agent_turn(agent: Any, view: TurnView, history: list[Any] | None) -> Any:
    """Run ``agent`` on the turn's question (after ``history``, the agent's own messages) -> its result."""
    from ..pydantic_ai import agent_cards, agent_footer

    turn = view.turn
    with turn_calls(turn):
        result = await agent.run(turn.user, message_history=history or None)
    turn.cards = agent_cards(result.new_messages())
    turn.reply = str(result.output)
    turn.status = "done"
    turn.footer = agent_footer(result)
    return result


def _close_prompts(view: TurnView) -> None:
    """The turn is over: its prompts go (the cards say what was decided)."""
    if view.prompts is not None:
        view.prompts.children = ()
