"""Moved: the event-grammar and Response-object validator is now the :mod:`conformance` package.

It judges any Responses producer, not only this translator, so it left the translation core. This
module re-exports its public names for one release so existing imports keep working; it will then be
removed. Import from :mod:`conformance` instead (see docs/conformance.md, "Where the kit lives").
"""

from __future__ import annotations

import warnings

from conformance import (
    EVENT_FIELDS,
    PROFILES,
    RESPONSE_REQUIRED,
    RULES,
    Violation,
    assert_valid,
    format_violations,
    parse_sse,
    validate_events,
    validate_response,
    validate_sse,
)

__all__ = [
    "EVENT_FIELDS",
    "PROFILES",
    "RESPONSE_REQUIRED",
    "RULES",
    "Violation",
    "assert_valid",
    "format_violations",
    "parse_sse",
    "validate_events",
    "validate_response",
    "validate_sse",
]

warnings.warn(
    "translator.validate moved to the conformance package; import from conformance instead",
    DeprecationWarning,
    stacklevel=2,
)
