"""The hub's task metrics as an `evaluate` module, loadable from this folder without the Hub:

    import evaluate
    metric = evaluate.load("<this folder>", "matthews_correlation")   # config: a metric name of hub.metrics
    metric.compute(predictions=["acceptable"], references=["unacceptable"], labels=["unacceptable", "acceptable"])

evaluate's own metric scripts live on the Hub, which an offline machine cannot reach; this module gives
the same interface (features, batching with add_batch, distributed use) on top of hub.metrics
(scikit-learn, scipy, seqeval). Span predictions are lists of {"start", "end", "label"}.
"""

import datasets
import evaluate

from hub.metrics import METRICS, compute_metric, joint_from_records

_LABEL = datasets.Value("string")
_TAGS = datasets.Sequence(datasets.Value("string"))
_SPANS = datasets.List({"start": datasets.Value("int64"), "end": datasets.Value("int64"),
                        "label": datasets.Value("string")})
_SPAN = {"start": datasets.Value("int64"), "end": datasets.Value("int64"), "label": datasets.Value("string")}
_JOINT = {"entities": _SPANS,  # SpERT's: relations name their entities by span and type
          "relations": datasets.List({"head": _SPAN, "tail": _SPAN, "label": datasets.Value("string")})}
_FEATURES = {
    "joint_f1": (_JOINT, _JOINT),
    "pearson_spearman": (datasets.Value("float64"), datasets.Value("float64")),
    "entity_f1": (_TAGS, _TAGS),
    "token_accuracy": (_TAGS, _TAGS),
    "squad": (_LABEL, _TAGS),
    "span_f1": (_SPANS, _SPANS),
}

_DESCRIPTION = "Official dev metrics of the hub's tasks (GLUE, CLUE, CoNLL, SQuAD/CMRC, SemEval-2010 Task 8)."
_KWARGS = """predictions, references: one per example; labels: the task's label names (binary F1 takes the
second as positive; macro F1 averages over them)."""


class HubMetric(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in METRICS:
            raise KeyError(f"unknown hub metric {self.config_name!r}; use one of {sorted(METRICS)}")
        prediction, reference = _FEATURES.get(self.config_name, (_LABEL, _LABEL))
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": prediction, "references": reference}),
        )

    def _compute(self, predictions, references, labels=None):
        if self.config_name == "span_f1":
            predictions, references = ([[(s["start"], s["end"], s["label"]) for s in row] for row in rows]
                                       for rows in (predictions, references))
        if self.config_name == "joint_f1":
            predictions, references = joint_from_records(predictions), joint_from_records(references)
        return compute_metric(self.config_name, predictions, references, labels)
