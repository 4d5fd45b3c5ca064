"""Engine-free evaluation: emitted actions scored against ground-truth labels (issue 8).

``evaluate`` gives precision, recall, false-positive rate, time to action and latency per scenario and
overall (``report.py`` defines every number); ``compare_policies`` diffs two policies rule by rule for
shadow-mode promotion (``shadow.py``); ``count_subjects`` counts the organic subjects the false-positive
rate divides by.
"""

from streamwarden.operators.evaluation.report import (
    SUBJECT_KINDS,
    EvaluationReport,
    LatencyReport,
    OverallReport,
    ScenarioReport,
    SubjectCounts,
    count_subjects,
    evaluate,
    percentile,
)
from streamwarden.operators.evaluation.shadow import PolicyDiff, RuleDiff, compare_policies

__all__ = [
    "SUBJECT_KINDS",
    "EvaluationReport",
    "LatencyReport",
    "OverallReport",
    "PolicyDiff",
    "RuleDiff",
    "ScenarioReport",
    "SubjectCounts",
    "compare_policies",
    "count_subjects",
    "evaluate",
    "percentile",
]
