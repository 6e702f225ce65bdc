"""The SDK-accumulator rule: the openai SDK's own stream accumulator does not raise on this stream.

The validator states the SDK's rules (docs/wire.md §1.7); this runs the real thing, so a report can say
"the official SDK fails on your stream with IndexError" and the project's tests can prove that what the
validator accepts the SDK accepts. The openai package is optional (a test dependency, not a runtime
one), and the accumulator lives in the SDK's private module layout: :func:`sdk_accumulator_problem`
turns any import problem into "not checked" rather than a false failure. May import: rules.
"""

from __future__ import annotations

import copy
from typing import Any

from conformance.rules import Violation

__all__ = ["SdkUnavailable", "sdk_accumulate", "sdk_accumulator_problem"]


class SdkUnavailable(ImportError):
    """The openai package (or the private accumulator module this relies on) cannot be imported."""


def _accumulator() -> tuple[Any, Any, str]:
    """(new accumulator state, event constructor, openai version), or SdkUnavailable."""
    try:
        import openai
        from openai._models import construct_type_unchecked
        from openai.lib.streaming.responses._responses import ResponseStreamState
        from openai.types.responses import ResponseStreamEvent
    except ImportError as exc:
        raise SdkUnavailable(f"the openai SDK's stream accumulator is not importable: {exc}") from exc
    # `omit` replaced NOT_GIVEN as the "argument not given" marker in newer SDKs; both mean the same here
    not_given = getattr(openai, "omit", None) or openai.NOT_GIVEN
    state = ResponseStreamState(input_tools=not_given, text_format=not_given)

    def construct(event: dict) -> Any:
        # what the SDK does with each decoded SSE payload; a copy, because the accumulator mutates the
        # objects it builds and the caller's events must stay as they were
        return construct_type_unchecked(type_=ResponseStreamEvent, value=copy.deepcopy(event))

    return state, construct, openai.__version__


def sdk_accumulate(events: list[dict]) -> Any:
    """Feed the events through the SDK's ``ResponseStreamState``; return its completed Response, or None.

    Raises whatever the SDK raises on a malformed stream (RuntimeError, IndexError, AssertionError), and
    SdkUnavailable without the openai package. None means no ``response.completed`` (incomplete, failed).
    """
    state, construct, _ = _accumulator()
    for event in events:
        state.handle_event(construct(event))
    return state._completed_response


def sdk_accumulator_problem(events: list[dict]) -> Violation | None:
    """The ``sdk-accumulator`` violation for these events (at the event the SDK raised on), or None.

    None also when the SDK is not installed: the rule is then not checked.
    """
    try:
        state, construct, version = _accumulator()
    except SdkUnavailable:
        return None
    for position, event in enumerate(events):
        try:
            state.handle_event(construct(event))
        except Exception as exc:  # whatever the SDK raises is the finding
            message = f"openai {version} ResponseStreamState raises {type(exc).__name__}: {exc}"
            return Violation(position, "sdk-accumulator", message)
    return None
