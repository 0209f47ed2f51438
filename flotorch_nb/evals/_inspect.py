"""``EvalResult.to_inspect``: one inspect-ai eval log per model, written with inspect-ai's own types.

Each log is an ``inspect_ai.log.EvalLog`` (spec: task, model, dataset; results: each scorer's
``mean`` and ``stderr`` with the same rule as ``summary``; one ``EvalSample`` per sample x epoch with
its input, target, answer as ``ModelOutput``, scores as ``inspect_ai.scorer.Score`` and token usage)
written by ``inspect_ai.log.write_eval_log``, so ``read_eval_log`` and ``inspect view`` open it.
A sample without an answer carries inspect's ``EvalError`` with our error's type and message.
inspect-ai is imported here only (``pip install 'flotorch_nb[evals]'``).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._records import Record, ResultView

__all__ = ["write_logs"]

TASK = "flotorch_eval"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def write_logs(result: ResultView, directory: Path) -> list[Path]:
    """Write one ``.eval`` log per model into ``directory`` (created); their paths, in model order."""
    from inspect_ai._util.error import EvalError as InspectError
    from inspect_ai.log import (
        EvalConfig,
        EvalDataset,
        EvalLog,
        EvalMetric,
        EvalResults,
        EvalSample,
        EvalScore,
        EvalSpec,
        EvalStats,
        write_eval_log,
    )
    from inspect_ai.model import ChatMessageAssistant, ChatMessageUser, ModelOutput, ModelUsage
    from inspect_ai.scorer import Score

    directory.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    run_id = uuid.uuid4().hex
    # One pass each over the records: the estimates (as ``summary`` draws them) and each model's records.
    estimates = {(row["model"], row["scorer"]): row for row in result.summary_rows()}
    by_model: dict[str, list[Record]] = {model: [] for model in result.models}
    for record in result.records:
        by_model.setdefault(record.model, []).append(record)
    paths = []
    for model in result.models:
        samples = []
        for record in by_model[model]:
            prompt = result.prompts[record.sample] or ""
            target = result.samples[record.sample].get(result.target) if result.target else None
            usage = None
            if record.input_tokens is not None and record.output_tokens is not None:
                usage = ModelUsage(
                    input_tokens=record.input_tokens,
                    output_tokens=record.output_tokens,
                    total_tokens=record.input_tokens + record.output_tokens,
                )
            output = ModelOutput.from_content(model, record.answer or "")
            output.usage = usage
            messages: list[Any] = [ChatMessageUser(content=prompt)]
            if record.answer is not None:
                messages.append(ChatMessageAssistant(content=record.answer, model=model))
            sample_scores = {
                name: Score(value=value, explanation=why)
                for name, (value, why) in record.scores.items()
                if value is not None
            }
            error = None
            if record.answer is None:
                error = InspectError(
                    message=f"{record.error_type}: {record.error}", traceback="", traceback_ansi=""
                )
            samples.append(
                EvalSample(
                    id=record.sample + 1,
                    epoch=record.epoch + 1,
                    input=prompt,
                    target="" if target is None else str(target),
                    messages=messages,
                    output=output,
                    scores=sample_scores,
                    metadata={"source": record.source, "latency_ms": record.latency_ms, "cost": record.cost},
                    model_usage={model: usage} if usage is not None else {},
                    error=error,
                )
            )
        scores = []
        for scorer in result.scorers:
            est = estimates[(model, scorer)]
            scores.append(
                EvalScore(
                    name=scorer,
                    scorer=scorer,
                    reducer="mean" if result.epochs > 1 else None,
                    scored_samples=est["n"],
                    unscored_samples=len(result.samples) - est["n"],
                    metrics={
                        "mean": EvalMetric(name="mean", value=est["mean"]),
                        "stderr": EvalMetric(name="stderr", value=est["se"]),
                    },
                )
            )
        log = EvalLog(
            status="success" if not result.stats.get("interrupted") else "cancelled",
            eval=EvalSpec(
                run_id=run_id,
                created=created,
                task=TASK,
                dataset=EvalDataset(name="flotorch_nb", samples=len(result.samples)),
                model=model,
                config=EvalConfig(epochs=result.epochs),
                metadata={"template": result.template, "target": result.target},
            ),
            results=EvalResults(
                total_samples=len(result.samples) * result.epochs,
                completed_samples=sum(1 for s in samples if s.error is None),
                scores=scores,
            ),
            stats=EvalStats(started_at=created, completed_at=created),
            samples=samples,
        )
        path = directory / f"{created.replace(':', '-')}_{TASK}_{_safe(model)}.eval"
        write_eval_log(log, str(path))
        paths.append(path)
    return paths
