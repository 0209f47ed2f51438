"""``%%flotorch`` (ask a model) and ``%flotorch`` (configure, usage, budget, history) for IPython.

Loaded by ``%load_ext flotorch_nb``. Unlike chat magics that print errors, a failed request here
*raises* (a typed ``FlotorchError``), so a notebook run by nbmake/nbclient in CI fails when the
gateway does; IPython shows it as one line (``_render_traceback_``), not as frames of library code
(``%xmode Verbose`` brings them back). Mistakes in options or configuration raise IPython's
``UsageError``: one line saying how to fix it, no traceback, and nothing sent. Answers stream into
the cell as they arrive (as plain text in a terminal) and end as the cell's value, the
``LLMResponse``, in every format: one plain rich output (sanitized HTML + text, JSON for
``-f json``) that survives save, reopen and HTML export.

``-m a,b,c`` (or ``--compare``) asks several models at once and shows them side by side
(``compare_cell``). Every final answer carries its provenance in its output metadata, and its
footer the cost while a price table is in use.

Budgets and usage are not this module's business: the session's client refuses a call once a
budget is spent and records every call (``call_label("magic")`` names the source).
"""

from __future__ import annotations

import argparse
import getpass
import keyword
import os
from collections import ChainMap
from typing import Any, Literal

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from .. import _config
from .._errors import ConfigurationError, FlotorchError, InvalidRequestError
from .._interpolate import interpolate
from .._pipeline._hooks import call_label
from .._records import output_metadata
from .._text import terminal_safe, utf8_safe
from . import answer_cell, autostart, call_log, commands, compare_cell
from .chat import error_line
from .conversation import Conversation, Turn
from .ledger import capture
from .options import (
    EVAL_ONLY,
    EVAL_REFUSES,
    call_params,
    concurrency_option,
    configuration_fix,
    parse_options,
    refuse,
)
from .session import Session, get_session

__all__ = ["FlotorchMagics", "load_ipython_extension", "unload_ipython_extension"]

FORMATS = ("markdown", "text", "code", "json")
_TRUE = {"1", "true", "yes", "on"}


@magics_class
class FlotorchMagics(Magics):
    """The ``flotorch`` line and cell magics; all state lives in the process-wide ``Session``."""

    @property
    def session(self) -> Session:
        """The session shared with the chat panel."""
        return get_session()

    @property
    def ip(self) -> Any:
        """The shell (``Magics.shell`` is typed optional; a registered magic always has one)."""
        assert self.shell is not None
        return self.shell

    # -- %%flotorch ------------------------------------------------------------------------------
    @magic_arguments("%flotorch")
    @argument(
        "-m",
        "--model",
        help="model id for this cell (default: %%flotorch model / FLOTORCH_MODEL_ID); a comma list "
        "(-m a,b,c) asks every model at once and shows the answers side by side",
    )
    @argument("-t", "--temperature", type=float, help="sampling temperature, 0 to 2")
    @argument("--max-tokens", type=int, help="upper bound on the answer's tokens")
    @argument("-s", "--system", help='system prompt (quote it: -s "You are terse.")')
    @argument(
        "-f",
        "--format",
        choices=FORMATS,
        default="markdown",
        help="how the answer is shown: markdown (default, rendered), text (plain, unrendered), code "
        "(first code block, also inserted as a new cell below), json (parsed; JSON mode requested); "
        "the cell's value is the LLMResponse in every format",
    )
    @argument("--schema", metavar="NAME", help="pydantic BaseModel class in the notebook: structured output")
    @argument(
        "--validation-retries",
        type=int,
        metavar="N",
        help="with --schema: ask again up to N times, naming the validation errors, when the answer "
        "does not validate (the answer is then not streamed)",
    )
    @argument("-o", "--output", metavar="VAR", help="also store the LLMResponse in variable VAR")
    @argument("-c", "--continue", dest="cont", action="store_true", help="send the conversation so far first")
    @argument(
        "-n", "--new", action="store_true", help="start a new conversation (the default; explicit form)"
    )
    @argument("--no-stream", action="store_true", help="wait for the whole answer instead of streaming it")
    @argument("--no-interpolate", action="store_true", help="send {braces} exactly as written")
    @argument(
        "--compare",
        action="store_true",
        help="side by side, one column per model of -m (implied by a comma in -m); without -m the "
        "models of FLOTORCH_COMPARE_MODELS",
    )
    @argument(
        "--keep-errors",
        action="store_true",
        help="with several models: a model's error stays in its column and the cell does not fail",
    )
    @argument(
        "--map",
        metavar="NAME",
        help="run the cell as a template once per item of the list/Series/DataFrame NAME ({item}, or "
        "column names); the cell's value is the BatchResult (with -m a,b,c: one run per model, and "
        "a ModelBatches: a column group per model, agreement when the answers are labels)",
    )
    @argument(
        "--concurrency",
        type=concurrency_option,
        help='with --map/--eval: requests in flight at once (default 16), or "auto" to find the '
        "gateway's limit",
    )
    @argument(
        "--eval",
        metavar="DATA",
        help="evaluate: the cell is the template over DATA (a list of dicts/DataFrame/Dataset in the "
        "notebook, or a .csv/.jsonl path), each -m model answers, --score/--judge grade; the value is "
        "an EvalResult (summary, CI, chart, worst samples; .compare(a, b) for a paired test)",
    )
    @argument("--target", metavar="COL", help="with --eval: the reference column")
    @argument(
        "--score", metavar="LIST", help="with --eval: scorers, e.g. exact_match,includes,numeric,json_valid"
    )
    @argument("--judge", metavar="RUBRIC", help="with --eval: an LLM judge with this rubric (quote it)")
    @argument(
        "--judge-model", metavar="M", help="with --eval --judge: the judge model (default: the first -m)"
    )
    @argument(
        "--fallback",
        metavar="M2,M3",
        help="models to ask in turn when the model still fails after its retries (429, 5xx, timeout, "
        "connection, context length, empty or invalid answer); the answer says which one answered",
    )
    @argument(
        "--tools",
        metavar="F,G",
        help="let the model call these notebook functions (or MCP toolsets) until it answers; each call "
        "is shown as a card; the cell's value is the ToolRun",
    )
    @argument(
        "--approve",
        action="store_true",
        help="with --tools: ask before every call (Approve / Deny buttons in JupyterLab, y/n in a terminal)",
    )
    @argument("--max-steps", type=int, help="with --tools: at most this many model turns (default 10)")
    @argument(
        "--agent",
        metavar="NAME",
        help="run the pydantic-ai Agent NAME on the prompt; its tool calls shown as cards",
    )
    @cell_magic("flotorch")  # type: ignore[arg-type]  # IPython types the marker as a union
    def flotorch_cell(self, line: str, cell: str, awaited: bool = False) -> Any:
        """Send the cell as a prompt to a FloTorch model and show the answer as it streams in.

        Interpolation: {name}, {obj.attr}, {seq[0]}, {d['key']}, {In[3]} and {Out[3]} are replaced by
        values from the notebook; anything else in braces (code, JSON, unknown names) is left as
        written, and {{name}} gives a literal {name}. --no-interpolate turns this off.

        Conversation: each cell is a fresh single turn by default, and that exchange becomes the
        conversation; -c/--continue sends the conversation so far before the prompt (so follow-up
        questions work); -n/--new says "fresh" explicitly. -s replaces the system prompt.

        Output: the answer streams in as a preview (plain text in terminal IPython), which is then
        replaced by the cell's value (Out[n], _): the LLMResponse, shown once with a footer (model,
        tokens, latency, OFFLINE mark), in the cell's format: sanitized Markdown (default), plain
        text (-f text), the first code block (-f code) or JSON (-f json, --schema; .parsed holds
        the parsed value or the schema instance; NaN/Infinity, which JSON cannot hold, are
        refused). -o VAR also stores it in VAR, and {Out[n]} / {VAR} quote its text later.

        Compare: -m a,b,c (or --compare) sends the prompt to every model at once: one column per
        model, streaming, then a chart of latency and tokens and the side-by-side table (answers,
        tokens, latency, cost) as the cell's value (a Comparison; -o VAR keeps it). A model that
        fails shows its typed error in its column; the cell then fails unless --keep-errors.

        Provenance and cost: every final answer keeps model, gateway, request id, time, tokens,
        latency, source and request hash in its output metadata (saved with the notebook); with a
        price table (%flotorch price, FLOTORCH_PRICES) footers show the cost, or "cost unknown".

        Errors: option or configuration mistakes raise UsageError before anything is sent; gateway
        failures raise the typed FlotorchError so the cell fails (and CI notices), shown as one line
        (%xmode Verbose shows the traceback); a spent %flotorch budget raises BudgetExceededError.
        Every call is counted in %flotorch usage, a failed or interrupted one with what it cost.
        Options are split like a shell's, but backslashes stay as typed (Windows paths work).
        """
        args = parse_options(self.flotorch_cell, line, "%%flotorch")
        session = self.session
        if args.output is not None and (not args.output.isidentifier() or keyword.iskeyword(args.output)):
            raise UsageError(f"%%flotorch: -o needs a Python variable name, got {args.output!r}")
        if args.eval is not None:  # an evaluation: flotorch_nb.notebook.eval_cell
            return self._eval(args, cell)
        grading = [f"--{n.replace('_', '-')}" for n in EVAL_ONLY if getattr(args, n) is not None]
        if grading:  # a plain answer or a batch would ignore them
            raise UsageError(
                f"%%flotorch: {', '.join(grading)} go with --eval DATA (they grade an evaluation)"
            )
        if args.map is not None:  # batch over a dataset: flotorch_nb.notebook.mapping
            return self._map(args, cell)
        if args.cont and args.new:
            raise UsageError("%%flotorch: -c/--continue and -n/--new contradict each other; use one")
        if args.max_tokens is not None:
            _config.check_whole(args.max_tokens, "%%flotorch: --max-tokens", 1, UsageError)
        schema = self._schema_class(args.schema) if args.schema else None
        if schema is not None and args.format not in ("markdown", "json"):
            raise UsageError(
                f"%%flotorch: --schema gives structured output; it cannot be combined with -f {args.format}"
            )
        prompt = cell if args.no_interpolate else interpolate(cell, self._namespace())
        if not prompt.strip():
            raise UsageError("%%flotorch: the cell is empty; write the prompt on the lines below %%flotorch")
        # What came in must stay showable and exportable: no lone surrogates past this point.
        prompt = utf8_safe(prompt)
        system = utf8_safe(args.system) if args.system is not None else None

        default = os.environ.get(_config.ENV_COMPARE_MODELS) or session.model_id
        models = compare_cell.models_of(args.model, default, compare=args.compare)
        if args.keep_errors and not models:
            raise UsageError("%%flotorch: --keep-errors is for comparisons (-m a,b,c)")
        try:
            client = session.client(models[0] if models else args.model)
        except ConfigurationError as exc:
            raise configuration_fix(session, exc, model_given=bool(args.model)) from None
        if args.fallback is not None:  # this cell's client: a copy of the session's, same ledger hooks
            client = _with_fallbacks(client, args.fallback)

        fmt = "json" if schema is not None else args.format
        conversation = session.conversation
        if args.cont and system is None:
            system = conversation.system
        messages = (conversation if args.cont else Conversation()).messages(prompt, system)
        params = call_params(args)
        if args.tools or args.agent or args.approve or args.max_steps is not None:
            return self._tool_cell(args, client, messages, params, prompt, system, models, awaited)
        if models:
            if schema is not None or fmt != "markdown":
                raise UsageError("%%flotorch: a comparison shows Markdown answers; drop -f and --schema")
            with call_label("magic"):
                return compare_cell.cell(
                    self.ip,
                    client,
                    messages,
                    models,
                    params,
                    stream=not args.no_stream,
                    keep_errors=args.keep_errors,
                    output=args.output,
                )
        # JSON mode for -f json so a real model answers with JSON only (the offline one honours it too).
        response_format: Any = schema
        if schema is None and fmt == "json":
            response_format = {"type": "json_object"}

        turn = Turn(prompt, model=args.model or client.model_id)
        # A re-ask cannot take back text already shown: validation retries answer in one piece.
        streamed = not args.no_stream and "validation_retries" not in params
        with call_label("magic"), capture() as spent:
            try:
                resp = answer_cell.ask(
                    self.ip, client, turn, messages, response_format, params, fmt, stream=streamed
                )
            except InvalidRequestError as exc:  # refused before any I/O: an option mistake
                raise UsageError(f"%%flotorch: {exc}") from None
            except BaseException as exc:
                ended: Literal["stopped", "error"] = "error" if isinstance(exc, Exception) else "stopped"
                turn.end(ended, error_line(exc), spent[-1] if spent else None)
                self._commit(turn, system, fresh=not args.cont)
                if isinstance(exc, FlotorchError):
                    answer_cell.one_line_traceback(exc, self.ip)
                raise
        turn.finish(resp, spent[-1] if spent else None)
        turn.provenance = resp.provenance
        self._commit(turn, system, fresh=not args.cont)
        if args.output:
            self.ip.user_ns[args.output] = resp  # kept even if -f json finds no JSON below
        try:
            value = answer_cell.cell_value(
                self.ip,
                resp,
                fmt,
                streamed=streamed,
                footer=turn.footer,
                metadata=output_metadata([turn.provenance] if turn.provenance else []),
            )
        except FlotorchError as exc:
            answer_cell.one_line_traceback(exc, self.ip)
            raise
        if args.output:
            self.ip.user_ns[args.output] = value  # the very object that is Out[n]
        return value

    def _tool_cell(
        self,
        args: Any,
        client: Any,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        prompt: str,
        system: str | None,
        models: Any,
        awaited: bool,
    ) -> Any:
        """``--tools`` / ``--agent``: the loop (or the agent) with its tool cards; see ``tool_cell``."""
        from . import tool_cell

        if args.tools and args.agent:
            raise UsageError("%%flotorch: --tools and --agent are two ways to use tools; pick one")
        if not (args.tools or args.agent):
            raise UsageError("%%flotorch: --approve and --max-steps go with --tools f,g")
        if models or args.schema or args.format != "markdown":
            raise UsageError(
                "%%flotorch --tools/--agent: a single Markdown answer; drop -m a,b, -f and --schema"
            )
        if args.max_steps is not None:
            _config.check_whole(args.max_steps, "%%flotorch: --max-steps", 1, UsageError)
        if args.agent:
            if args.approve or args.max_steps is not None or args.cont:
                raise UsageError("%%flotorch --agent: --approve, --max-steps and -c belong to --tools")
            agent = tool_cell.check_agent(args.agent, self.ip.user_ns)
            with tool_cell.cell_failures(self.ip):
                value = tool_cell.run_agent(agent, prompt)
        else:
            tools = tool_cell.resolve_tools(args.tools, self.ip.user_ns)
            options: dict[str, Any] = {
                "max_steps": args.max_steps or 10,
                "stream": not args.no_stream,
                "params": params,
            }
            if awaited and args.approve:
                return self._awaited_tools(args, client, messages, tools, options, prompt, system)
            with tool_cell.cell_failures(self.ip):
                run = tool_cell.run_tools(self.ip, client, messages, tools, approve=args.approve, **options)
            return self._settle_run(run, args, prompt, system)
        if args.output:
            self.ip.user_ns[args.output] = value
        return value

    async def _awaited_tools(
        self,
        args: Any,
        client: Any,
        messages: list[dict[str, Any]],
        tools: list[Any],
        options: dict[str, Any],
        prompt: str,
        system: str | None,
    ) -> Any:
        from . import tool_cell

        with tool_cell.cell_failures(self.ip):
            run = await tool_cell.run_tools_awaited(client, messages, tools, **options)
        return self._settle_run(run, args, prompt, system)

    def _settle_run(self, run: Any, args: Any, prompt: str, system: str | None) -> Any:
        """A finished tool run becomes the conversation's turn (its final answer), counted with the
        tokens of every step; kept in ``-o VAR``; the cell's value."""
        turn = Turn(prompt, model=run.response.model if run.response is not None else "")
        turn.finish_run(run)
        self._commit(turn, system, fresh=not args.cont)
        if args.output:
            self.ip.user_ns[args.output] = run
        return run

    def _map(self, args: Any, cell: str) -> Any:
        """``--map NAME``: the cell as a template over a dataset; the value is the BatchResult."""
        from .map_cell import run_mapped
        from .mapping import MapUsageError

        if args.cont or args.no_stream or args.format not in ("markdown", "json"):
            raise UsageError("%%flotorch --map: -c, --no-stream and -f text/code do not apply to a batch")
        refuse(args, ("--tools", "--agent", "--approve", "--max-steps"), "--map", "a batch")
        if args.fallback is not None:
            raise UsageError(
                "%%flotorch --map: --fallback is for one answer or a comparison; for a batch use "
                "FlotorchLLM(..., fallbacks=[...]).batch(...)"
            )
        schema = self._schema_class(args.schema) if args.schema else None
        params = call_params(args)
        response_format: Any = schema or ({"type": "json_object"} if args.format == "json" else None)
        default = os.environ.get(_config.ENV_COMPARE_MODELS) or self.session.model_id
        models = compare_cell.models_of(args.model, default, compare=args.compare) or (args.model,)
        try:
            result, chart = run_mapped(
                self.session,
                self.ip.user_ns,
                args.map,
                cell.strip("\n"),
                models,
                system=args.system,
                concurrency=args.concurrency,
                response_format=response_format,
                params=params,
            )
        except MapUsageError as exc:
            raise UsageError(f"%%flotorch {exc}") from None
        except ConfigurationError as exc:
            raise configuration_fix(self.session, exc, model_given=bool(args.model)) from None
        if chart is not None:
            display(chart)  # the latency distribution and errors, above the summary
        if args.output:
            self.ip.user_ns[args.output] = result
        return result

    def _eval(self, args: Any, cell: str) -> Any:
        """``--eval DATA``: the cell as the template of an evaluation; the value is the EvalResult."""
        from .eval_cell import EvalUsageError, run_eval

        refuse(args, EVAL_REFUSES, "--eval", "an evaluation")
        given = args.model or self.session.model_id
        if not given:
            raise configuration_fix(self.session, ConfigurationError("no model"))
        models = compare_cell.model_list(given)
        try:
            result = run_eval(
                self.session,
                self.ip.user_ns,
                args.eval,
                cell.strip("\n"),
                models,
                target=args.target,
                score=args.score,
                judge=args.judge,
                judge_model=args.judge_model,
                concurrency=args.concurrency,
                params=call_params(args),
            )
        except EvalUsageError as exc:
            raise UsageError(f"%%flotorch {exc}") from None
        except ConfigurationError as exc:
            raise configuration_fix(self.session, exc, model_given=bool(args.model)) from None
        if args.output:
            self.ip.user_ns[args.output] = result
        return result

    def _commit(self, turn: Turn, system: str | None, *, fresh: bool) -> None:
        """Make the turn part of the conversation: the whole of it for a fresh cell, the next for -c."""
        conversation = self.session.conversation
        if fresh:
            conversation.clear()
        conversation.system = system
        conversation.add(turn)
        conversation.count(turn)

    def _namespace(self) -> Any:
        """The user's namespace for interpolation, with In[n] as typed (not IPython's transformed code)."""
        raw = getattr(self.ip.history_manager, "input_hist_raw", None)
        overlay = {"In": raw} if raw else {}
        return ChainMap(overlay, self.ip.user_ns)

    def _schema_class(self, name: str) -> type:
        """The pydantic class called ``name`` (dotted names allowed) in the user's namespace."""
        head, *rest = name.split(".")
        value: Any = self.ip.user_ns.get(head)
        for part in rest:
            value = getattr(value, part, None)
        if value is None:
            raise UsageError(
                f"%%flotorch: --schema {name}: no such name in the notebook; define the class first"
            )
        if not (isinstance(value, type) and callable(getattr(value, "model_json_schema", None))):
            raise UsageError(f"%%flotorch: --schema {name} is not a pydantic BaseModel class")
        return value

    # -- %flotorch -------------------------------------------------------------------------------
    @magic_arguments("flotorch")
    @argument("command", nargs="?", default="config", help="one of the subcommands above (default: config)")
    @argument("value", nargs=argparse.REMAINDER, help="the subcommand's arguments (logs: its own options)")
    @line_magic("flotorch")  # type: ignore[arg-type]  # IPython types the marker as a union
    @no_var_expand  # IPython would read "$5" as a variable: {name} is filled in below instead
    def flotorch_line(self, line: str) -> Any:
        """Configure FloTorch for this notebook and inspect usage.

        Subcommands:
          config            show model, base URL, key (never shown), mode, budget (the default)
          model [NAME]      show / set the default model of %%flotorch and the chat panel
          base_url [URL]    show / set the gateway URL (http or https)
          login             ask for the API key without echoing it; kept in memory for this
                            session only: never in the notebook, the environment or an output
          usage             tokens (and cost, with prices) used this session by every call of the
                            session's clients, per model, and a chart (stopped or failed calls, and
                            answers without usage, estimated)
          budget [N|$N|off] show / set a token budget (N) or a money budget ($N), or remove both;
                            calls that could pass it are refused before sending
          price [MODEL [IN OUT|off]]
                            list prices / show or set a model's (dollars per million input and
                            output tokens; also a FLOTORCH_PRICES file, TOML or JSON) / remove it
          provenance        every answer of this session: model, source, time, tokens, latency,
                            request id and hash (what each output saves in its metadata)
          history           the %%flotorch conversation, with each answer's model and tokens
          reset             clear the conversation and the usage ledger
          export PATH.md    write the conversation as Markdown (model and token footer per answer)
          record DIR        record every exchange to DIR (sets FLOTORCH_RECORD)
          replay DIR        answer from recordings in DIR, no network, no key (sets FLOTORCH_REPLAY)
          live              stop recording / replaying
          cache [PATH|off]  keep answers in the SQLite file PATH and answer repeats from it (sets
                            FLOTORCH_CACHE); a re-run --map batch then sends only what is missing
          log [on [PATH]|off]
                            record every call of this kernel (prompt, answer, tokens, cost, error,
                            cell; never the key) in the SQLite file PATH (calls.sqlite); sets FLOTORCH_LOG
          logs [-q TEXT] [-n N] [-m MODEL] [--since TIME] [--export PATH.jsonl]
                            the newest logged calls (words in the prompt or answer, a model, a time),
                            or all that match written as JSON lines
        """
        args = parse_options(self.flotorch_line, interpolate(line, self._namespace()), "%flotorch")
        command = args.command.replace("-", "_")
        if command == "login":
            if args.value:
                raise UsageError(
                    "%flotorch login takes no argument: the key is asked for, never typed in a cell"
                )
            return self._login()
        spec = commands.COMMANDS.get(command)
        if spec is None:
            names = ", ".join([*commands.COMMANDS, "login"])
            raise UsageError(f"%flotorch: unknown subcommand {args.command!r}; use one of: {names}")
        if not spec.options and any(value.startswith("-") for value in args.value):
            raise UsageError(f"%flotorch {command}: takes no options; usage: %flotorch {spec.usage}")
        if not spec.least <= len(args.value) <= spec.most:
            raise UsageError(f"%flotorch {command}: usage: %flotorch {spec.usage}")
        try:
            output = spec.function(self.session, *args.value)
        except ConfigurationError as exc:
            raise UsageError(f"%flotorch {command}: {exc}") from None
        # What a subcommand shows quotes answers and prompts (history, logs): a terminal prints the
        # plain text, so its control characters are shown as symbols, never obeyed.
        for item in output if isinstance(output, list) else [output]:
            if isinstance(item, str):
                print(terminal_safe(item))
            elif isinstance(item, dict):
                display({**item, "text/plain": terminal_safe(item["text/plain"])}, raw=True)
            else:
                display(item)  # an object that displays itself (a chart)

    def _login(self) -> None:
        try:
            key = getpass.getpass("FloTorch API key (input hidden): ")
        except Exception as exc:  # e.g. a frontend without input support (nbclient)
            raise UsageError(
                f"%flotorch login: this frontend cannot ask for input ({type(exc).__name__}); "
                "set FLOTORCH_API_KEY in the kernel's environment instead"
            ) from None
        if not key.strip():
            raise UsageError("%flotorch login: no key entered; nothing changed")
        try:
            self.session.configure(api_key=key)
        except ConfigurationError as exc:
            raise UsageError(f"%flotorch login: {exc}") from None
        print("API key set for this session (kept in memory only: not in the notebook or the environment)")


def _apply_nest_asyncio() -> str | None:
    """Let ``asyncio.run()`` work inside a cell (the seed's own example); return a warning if not."""
    if os.environ.get(_config.ENV_NO_NEST_ASYNCIO, "").strip().lower() in _TRUE:
        return None
    try:
        import nest_asyncio2

        nest_asyncio2.apply()
    except Exception as exc:  # e.g. uvloop, which cannot be patched
        return (
            f"flotorch_nb: nest-asyncio not applied ({type(exc).__name__}: {exc}); "
            "use `await ...` in cells instead of asyncio.run()"
        )
    return None


def _with_fallbacks(client: Any, spec: str) -> Any:
    """``client`` with ``--fallback m2,m3`` (a copy: its own pools, the same ledger hooks)."""
    models = [m.strip() for m in spec.split(",") if m.strip()]
    if not models:
        raise UsageError("%%flotorch: --fallback needs model ids, e.g. --fallback model-b,model-c")
    try:
        return client.copy(fallbacks=models)
    except ConfigurationError as exc:
        raise UsageError(f"%%flotorch: --fallback {spec}: {exc}") from None


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext flotorch_nb``: register the magics, apply nest-asyncio, choose the gateway.

    Safe to call again (``%reload_ext``): registering replaces the magics, nest-asyncio patches once,
    and the offline gateway is started at most once per process.
    """
    ipython.register_magics(FlotorchMagics)
    call_log.watch_cells(ipython)  # the call log knows which cell made each call
    from ..tools._approval import use_in_kernel
    from .approval import widget_asker
    from .tool_cell import await_approval_cells

    use_in_kernel(widget_asker)  # await llm.arun(..., approve=True) in a cell: the Approve / Deny widget
    # %%flotorch --tools --approve awaits in a kernel, so the Approve button's click can arrive.
    transformers = getattr(ipython, "input_transformers_post", None)
    if transformers is not None and await_approval_cells not in transformers:
        transformers.append(await_approval_cells)
    warning = _apply_nest_asyncio()
    if warning:
        print(warning)
    print(autostart.ensure_gateway())


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext flotorch_nb``: remove the magics (the session and gateway stay for the kernel)."""
    from .tool_cell import await_approval_cells

    transformers = getattr(ipython, "input_transformers_post", [])
    if await_approval_cells in transformers:
        transformers.remove(await_approval_cells)
    magics = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        magics[kind].pop("flotorch", None)
    ipython.magics_manager.registry.pop("FlotorchMagics", None)
