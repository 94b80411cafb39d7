"""Prompt templates: the one place that decides how a task's record becomes model input and reference output.

Every prompt ends with its cue ("Diagnosis:", "Feedback:") and no target starts with whitespace: the trainer
joins them with one space, and generation continues from the cue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PromptTemplate:
    """``str.format`` templates filled from one record's fields; ``target_without[field]`` is the target template
    for a record whose optional ``field`` is empty."""

    prompt: str
    target: str
    target_without: Mapping[str, str] = field(default_factory=dict)


TEMPLATES: dict[str, PromptTemplate] = {
    "rca": PromptTemplate(
        prompt=(
            "Error codes: {error_codes}\n"
            "Symptoms: {symptoms}\n"
            "Logs:\n{logs}\n"
            "Metadata: {metadata}\n"
            "Diagnosis:"
        ),
        target="Cause: {cause} Fix: {resolution}",
        target_without={"resolution": "Cause: {cause}"},
    ),
    "saf": PromptTemplate(
        prompt=(
            "Question: {question}\n"
            "Reference answer: {reference_answer}\n"
            "Student answer: {provided_answer}\n"
            "Feedback:"
        ),
        target="{verification_feedback}. {answer_feedback}",
    ),
}


def template(task: str) -> PromptTemplate:
    try:
        return TEMPLATES[task]
    except KeyError:
        known = ", ".join(sorted(TEMPLATES))
        raise KeyError(f"no prompt template for task {task!r}; known: {known}") from None


def format_prompt(task: str, record: Mapping[str, object]) -> str:
    return template(task).prompt.format_map(record)


def format_target(task: str, record: Mapping[str, object]) -> str:
    chosen = template(task)
    target = next((text for name, text in chosen.target_without.items() if not record.get(name)), chosen.target)
    return target.format_map(record)
