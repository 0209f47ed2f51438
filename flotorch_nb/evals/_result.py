"""``EvalResult``: every answer of an evaluation with its scores, and the statistics drawn from them.

One ``Record`` per sample x model x epoch. A record without an answer (its call failed, or the run
stopped first) keeps its error; a scorer that could not score an answer leaves ``None`` with the
reason as its explanation. Nothing is dropped: ``summary`` and ``compare`` count such a value as 0
(``errors="zero"``, the default: a failure is not a success) or leave it out (``errors="exclude"``),
and report how many there were either way. With several epochs a sample's score is the mean over its
epochs, so n is always the number of samples.

A result holds plain data only (no client, no key): ``save`` writes it as JSON and ``load`` reads it
back; ``to_inspect`` writes inspect-ai logs (``_inspect``); in a notebook it shows its report
(``_report``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..batch._result import _percentile  # the batch summary's rule, so both agree
from ._errors import EvalError
from ._records import JudgeUsage, Record
from ._stats import CONFIDENCE, Estimate, Paired, estimate, is_binary, paired

if TYPE_CHECKING:
    import pandas

__all__ = ["EvalResult", "JudgeUsage", "Record"]

FORMAT = "flotorch-eval"
VERSION = 1
ERROR_POLICIES = ("zero", "exclude")


@dataclass
class _Groups:
    """The records grouped in one pass: per model x scorer, each sample's values (one per epoch) and
    how many records had none; per model, its answers' costs and the latencies of those sent."""

    values: dict[tuple[str, str], list[list[float]]]
    missing: dict[tuple[str, str], int]
    costs: dict[str, list[float | None]]
    latencies: dict[str, list[float]]

    def sample_means(self, model: str, scorer: str) -> list[float | None]:
        """One value per sample: the mean over its epochs (None: no value left)."""
        return [math.fsum(v) / len(v) if v else None for v in self.values[(model, scorer)]]


@dataclass(eq=False)
class EvalResult:
    """The outcome of ``evaluate``: ``records`` (sample x model x epoch) and the dataset they came from.

    ``to_pandas()`` one row per record; ``summary()`` per model x scorer (mean, SE, 95 % CI, n,
    errors, cost, latency); ``compare(a, b)`` a paired test between two models; ``save``/``load``;
    ``to_inspect(dir)``. Shows a compact report in a notebook.
    """

    samples: list[dict[str, Any]]
    prompts: list[str | None]
    template: str
    target: str | None
    models: list[str]
    epochs: int
    scorers: list[str]
    #: scorer name -> True (values are 0/1), False (scores), None (judge by the values)
    binary: dict[str, bool | None]
    records: list[Record]
    judge_usage: dict[str, JudgeUsage] = field(default_factory=dict)
    #: Requests the answers sent and answers the cache gave, wall time, whether the run stopped early.
    stats: dict[str, Any] = field(default_factory=dict)

    # -- basic views -------------------------------------------------------------------------------
    @property
    def answered(self) -> int:
        """How many records have an answer."""
        return sum(1 for r in self.records if r.answer is not None)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def _check(self, model: str | None = None, scorer: str | None = None, errors: str = "zero") -> None:
        if model is not None and model not in self.models:
            raise EvalError(f"model {model!r} is not in this result: {', '.join(self.models)}")
        if scorer is not None and scorer not in self.scorers:
            raise EvalError(f"scorer {scorer!r} is not in this result: {', '.join(self.scorers) or '(none)'}")
        if errors not in ERROR_POLICIES:
            raise EvalError(f"errors= must be 'zero' or 'exclude', got {errors!r}")

    def _group(
        self, errors: str, models: Sequence[str] | None = None, scorers: Sequence[str] | None = None
    ) -> _Groups:
        """One pass over the records: what ``summary_rows``, ``compare`` and ``sample_scores`` read,
        for ``models`` x ``scorers`` (default: all)."""
        models = self.models if models is None else models
        scorers = self.scorers if scorers is None else scorers
        groups = _Groups(
            values={(m, s): [[] for _ in self.samples] for m in models for s in scorers},
            missing=dict.fromkeys(((m, s) for m in models for s in scorers), 0),
            costs={m: [] for m in models},
            latencies={m: [] for m in models},
        )
        for record in self.records:
            model = record.model
            if model not in groups.costs:
                continue
            if record.answer is not None:
                groups.costs[model].append(record.cost)
            if record.latency_ms is not None and record.source != "cache":
                groups.latencies[model].append(record.latency_ms)
            for scorer in scorers:
                value = record.scores.get(scorer, (None, None))[0]
                if value is None:
                    groups.missing[(model, scorer)] += 1
                    if errors == "zero":
                        value = 0.0
                if value is not None:
                    groups.values[(model, scorer)][record.sample].append(value)
        return groups

    def sample_scores(self, model: str, scorer: str, *, errors: str = "zero") -> list[float | None]:
        """One value per sample (the mean over epochs) for ``model`` and ``scorer``.

        A record without a value counts as 0 (``errors="zero"``) or is left out of its sample's mean
        (``"exclude"``; a sample with no value left is None).
        """
        self._check(model, scorer, errors)
        return self._group(errors, [model], [scorer]).sample_means(model, scorer)

    def _binary(self, scorer: str, values: Sequence[float]) -> bool:
        return self.binary.get(scorer) is not False and is_binary(values)

    def _estimate(self, values: list[float | None], scorer: str, confidence: float) -> Estimate:
        known = [v for v in values if v is not None]
        return estimate(known, binary=self._binary(scorer, known), confidence=confidence)

    def estimate(
        self, model: str, scorer: str, *, errors: str = "zero", confidence: float = CONFIDENCE
    ) -> Estimate:
        """The mean score of ``model`` on ``scorer`` with its SE and interval (``_stats.estimate``)."""
        return self._estimate(self.sample_scores(model, scorer, errors=errors), scorer, confidence)

    # -- summary -----------------------------------------------------------------------------------
    def summary_rows(self, *, errors: str = "zero", confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
        """``summary()`` as plain dicts (no pandas), drawn from one pass over the records."""
        self._check(errors=errors)
        groups = self._group(errors)
        rows = []
        for model in self.models:
            costs = groups.costs[model]
            known = [c for c in costs if c is not None]
            total = math.fsum(known) if known else None  # unpriced answers: counted in cost_unknown
            latencies = groups.latencies[model]
            for scorer in self.scorers:
                est = self._estimate(groups.sample_means(model, scorer), scorer, confidence)
                correct = est.mean * est.n if est.n else 0.0
                rows.append(
                    {
                        "model": model,
                        "scorer": scorer,
                        "mean": est.mean,
                        "se": est.se,
                        "ci_low": est.ci_low,
                        "ci_high": est.ci_high,
                        "n": est.n,
                        "errors": groups.missing[(model, scorer)],
                        "cost": total,
                        "cost_unknown": len(costs) - len(known),
                        "cost_per_sample": total / len(self.samples) if total is not None else None,
                        "cost_per_correct": total / correct if total is not None and correct > 0 else None,
                        "p50_latency_ms": _percentile(latencies, 0.5),
                        "p95_latency_ms": _percentile(latencies, 0.95),
                        "method": est.method,
                    }
                )
        return rows

    def summary(self, *, errors: str = "zero", confidence: float = CONFIDENCE) -> pandas.DataFrame:
        """Per model x scorer: mean, SE, CI (method stated in ``method``), n, errors (records with no
        value: counted as 0 with ``errors="zero"``, left out with ``"exclude"``), cost (total, per
        sample, per correct answer; judges' cost is in ``judge_usage``) and p50/p95 latency of the
        answers sent (cache hits have none)."""
        import pandas as pd

        return pd.DataFrame(self.summary_rows(errors=errors, confidence=confidence))

    # -- paired comparison -------------------------------------------------------------------------
    def compare(
        self,
        a: str,
        b: str,
        *,
        scorer: str | None = None,
        errors: str = "zero",
        confidence: float = CONFIDENCE,
    ) -> Paired:
        """A paired test of models ``a`` and ``b`` on the same samples (exact McNemar for binary
        scores, Wilcoxon signed-rank otherwise; see ``flotorch_nb.evals._stats``).

        ``scorer`` defaults to the only scorer. With ``errors="zero"`` a missing value counts as 0;
        with ``"exclude"`` a sample missing either model's value is left out of the pairs.
        """
        if scorer is None:
            if len(self.scorers) != 1:
                raise EvalError(f"compare(..., scorer=...): name one of {', '.join(self.scorers)}")
            scorer = self.scorers[0]
        self._check(a, scorer, errors)
        self._check(b, scorer, errors)
        if a == b:
            raise EvalError("compare needs two different models")
        groups = self._group(errors, [a, b], [scorer])
        pairs = [
            (x, y)
            for x, y in zip(groups.sample_means(a, scorer), groups.sample_means(b, scorer), strict=True)
            if x is not None and y is not None
        ]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        binary = self._binary(scorer, xs + ys)
        d, low, high, p, method, a_only, b_only, caveat = paired(xs, ys, binary=binary, confidence=confidence)
        n = len(pairs)
        return Paired(
            a=a,
            b=b,
            scorer=scorer,
            n=n,
            mean_a=math.fsum(xs) / n if n else math.nan,
            mean_b=math.fsum(ys) / n if n else math.nan,
            difference=d,
            ci_low=low,
            ci_high=high,
            p_value=p,
            method=method,
            a_only=a_only,
            b_only=b_only,
            errors_a=groups.missing[(a, scorer)],
            errors_b=groups.missing[(b, scorer)],
            caveat=caveat,
            confidence=confidence,
            errors=errors,
        )

    # -- tables ------------------------------------------------------------------------------------
    def to_pandas(self) -> pandas.DataFrame:
        """One row per sample x model x epoch: the sample's fields, prompt, target, model, epoch,
        answer, each scorer's value and ``<scorer>_explanation``, tokens, latency, cost, source, error."""
        import pandas as pd

        ours = {"sample", "prompt", "target", "model", "epoch", "answer", "input_tokens", "output_tokens"}
        ours |= {"latency_ms", "cost", "source", "request_id", "error_type", "error"}
        ours |= set(self.scorers) | {f"{s}_explanation" for s in self.scorers}
        rows = []
        for r in self.records:
            row: dict[str, Any] = {"sample": r.sample}
            for key, value in self.samples[r.sample].items():
                row[f"input_{key}" if key in ours else key] = value
            row["prompt"] = self.prompts[r.sample]
            row["target"] = self.samples[r.sample].get(self.target) if self.target else None
            row.update(model=r.model, epoch=r.epoch, answer=r.answer)
            for scorer in self.scorers:
                value, why = r.scores.get(scorer, (None, None))
                row[scorer], row[f"{scorer}_explanation"] = value, why
            row.update(
                input_tokens=r.input_tokens,
                output_tokens=r.output_tokens,
                latency_ms=r.latency_ms,
                cost=r.cost,
                source=r.source,
                request_id=r.request_id,
                error_type=r.error_type,
                error=r.error,
            )
            rows.append(row)
        frame = pd.DataFrame(rows)
        for name in ("input_tokens", "output_tokens"):
            if name in frame:
                frame[name] = frame[name].astype("Int64")
        return frame

    def worst(self, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` samples with the lowest mean score over every model and scorer (missing = 0)."""
        totals = [0.0] * len(self.samples)
        counts = [0] * len(self.samples)
        for r in self.records:
            for scorer in self.scorers:
                value = r.scores.get(scorer, (None, None))[0]
                totals[r.sample] += value or 0.0
                counts[r.sample] += 1
        means = [(i, totals[i] / counts[i]) for i in range(len(self.samples)) if counts[i]]
        return sorted(means, key=lambda pair: (pair[1], pair[0]))[:k]

    # -- keeping it --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (what ``save`` writes)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "samples": self.samples,
            "prompts": self.prompts,
            "template": self.template,
            "target": self.target,
            "models": self.models,
            "epochs": self.epochs,
            "scorers": self.scorers,
            "binary": self.binary,
            "records": [asdict(r) for r in self.records],
            "judge_usage": {k: asdict(v) for k, v in self.judge_usage.items()},
            "stats": self.stats,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the result as JSON (no client, no key: nothing secret is ever in a result)."""
        target = Path(path)
        text = json.dumps(self.to_dict(), ensure_ascii=False, default=str, allow_nan=True)
        target.write_text(text, encoding="utf-8")
        return target

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        """The result ``to_dict`` gave."""
        if data.get("format") != FORMAT:
            raise EvalError("not a saved flotorch_nb evaluation (EvalResult.save writes one)")
        records = []
        for raw in data["records"]:
            raw = dict(raw)
            raw["scores"] = {k: (v[0], v[1]) for k, v in raw.get("scores", {}).items()}
            records.append(Record(**raw))
        return cls(
            samples=list(data["samples"]),
            prompts=list(data["prompts"]),
            template=data["template"],
            target=data.get("target"),
            models=list(data["models"]),
            epochs=int(data["epochs"]),
            scorers=list(data["scorers"]),
            binary=dict(data["binary"]),
            records=records,
            judge_usage={k: JudgeUsage(**v) for k, v in data.get("judge_usage", {}).items()},
            stats=dict(data.get("stats", {})),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvalResult:
        """A result ``save`` wrote."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EvalError(f"cannot read the evaluation {path}: {exc}") from None
        return cls.from_dict(data)

    def to_inspect(self, directory: str | os.PathLike[str]) -> list[Path]:
        """One inspect-ai eval log per model in ``directory`` (``inspect view`` opens them); their paths."""
        from ._inspect import write_logs

        return write_logs(self, Path(directory))

    # -- display -----------------------------------------------------------------------------------
    def __repr__(self) -> str:
        from ._report import report_text

        return report_text(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """The report as plain text and sanitized HTML (every model text escaped), so it survives save,
        reopen and export."""
        from ._report import report_html, report_text

        summary = self.summary_rows()  # one table of estimates for both forms
        return {"text/plain": report_text(self, summary), "text/html": report_html(self, summary)}
