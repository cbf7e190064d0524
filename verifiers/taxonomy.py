"""Why a step failed, and what the retry is told so it does better."""

from __future__ import annotations

from raftline.models import ErrorClass

HINTS: dict[ErrorClass, str] = {
    ErrorClass.INCOMPLETE: (
        "Your previous output was incomplete. Include every required part and finish it."
    ),
    ErrorClass.FORMAT: (
        "Your previous output had the wrong format. Return exactly the required format."
    ),
    ErrorClass.GOAL_DRIFT: (
        "Your previous output drifted off the step's goal. Refocus on the stated goal only."
    ),
    ErrorClass.HALLUCINATION: (
        "Your previous output made claims the inputs do not support. "
        "Use only the information given."
    ),
    ErrorClass.CONTRADICTION: (
        "Your previous output contradicted an earlier committed step. "
        "Stay consistent with the earlier outputs."
    ),
    ErrorClass.SCOPE_CREEP: (
        "Your previous output did more than this step's scope. Do only what this step requires."
    ),
    ErrorClass.UNSAFE: (
        "Your previous output contained unsafe content (secrets, personal data or a policy "
        "violation). Remove it."
    ),
    ErrorClass.STEP_ERROR: "The previous attempt failed with an error.",
}


def hint_for(error_class: ErrorClass, specific: str | None = None) -> str:
    """The hint for a retry: a verifier's specific hint first, the class hint as fallback."""
    if error_class is ErrorClass.STEP_ERROR and specific:
        return f"{HINTS[error_class]} {specific}"
    return specific or HINTS[error_class]
