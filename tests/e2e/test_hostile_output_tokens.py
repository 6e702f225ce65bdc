"""A backend that streams valid text without end, against a bridge process with the default
`[limits] upstream_max_output_tokens`: the answer ends `incomplete` (`max_output_tokens`) after about
1 MiB of text (262,144 tokens at 4 bytes each), long before the answer-size limit, with memory
bounded and other clients served (the measurement is that of the hostile-backend suite)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.bridge_process import BridgeProcess
from tests.support.hostile import measure, stream_response
from tests.support.hostile_backend import HostileBackend

pytestmark = pytest.mark.timeout(90)

MIB = 1024 * 1024
UPSTREAM_KEY = "sk-upstream-" + uuid.uuid4().hex
API_KEY = "sk-client-" + uuid.uuid4().hex
LIMITS = {"upstream_max_answer_bytes": 16 * MIB}  # upstream_max_output_tokens left at its default


@pytest.fixture
def bridge() -> Iterator[BridgeProcess]:
    with HostileBackend() as backend, \
            BridgeProcess(backend.base_url, upstream_key=UPSTREAM_KEY, api_key=API_KEY, limits=LIMITS) as proc:
        yield proc


def test_endless_text_ends_incomplete_at_the_output_token_ceiling(bridge: BridgeProcess) -> None:
    with measure(bridge, "endless stream (output-token ceiling)") as m:
        outcome = stream_response(bridge.url, {"model": "endless", "input": "hi", "stream": True}, API_KEY, 15.0)
        m.notes.append(f"received {outcome.received} bytes")
    m.assert_bounded()
    assert outcome.status == 200 and not outcome.timed_out, outcome
    assert outcome.terminal == "response.incomplete" and outcome.done, outcome
    # ~1 MiB of text, sent as deltas and again in the terminal response: far below the 16 MiB limit
    assert outcome.received < 8 * MIB, outcome.received
