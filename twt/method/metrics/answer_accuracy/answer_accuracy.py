"""Answer accuracy as an ``evaluate`` metric module, loaded from this directory (the hub is not reachable).

    metric = evaluate.load("twt/method/metrics/answer_accuracy")
    metric.compute(predictions=["7", None], references=["7", "3"])   # {"accuracy": 0.5, "correct": 1, ...}

Predictions and references are compared after ``twt.core.prompts.normalize_answer``; a missing prediction (no
``Answer:`` line) is wrong.
"""

import datasets
import evaluate


class AnswerAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Share of answers equal to the reference after normalisation.",
            citation="",
            inputs_description="predictions: extracted answers (or empty); references: gold answers.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        from twt.core.prompts import normalize_answer

        correct = sum(
            bool(p) and normalize_answer(p) == normalize_answer(r)
            for p, r in zip(predictions, references, strict=True)
        )
        return {
            "accuracy": correct / len(references) if references else 0.0,
            "correct": correct,
            "total": len(references),
        }
