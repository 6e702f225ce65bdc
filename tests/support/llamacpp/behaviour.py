"""What the tiny test model answers, per situation (tests/support/llamacpp/make_model.py wires it).

Kept apart from the generator (which needs numpy and gguf-py) so tests can import it anywhere.
"""

from __future__ import annotations

MODEL = "tiny-qwen3"
"""Any name works: llama-server serves its one model under every name."""

REASONING = "Let me think"
"""The `<think>` block every answer starts with (llama-server moves it to `reasoning_content`)."""

GREETING = "Hello! This tiny model says hello to everyone. How can I help you today?"
"""The answer when no tools are offered and no tool result is in the prompt."""

AFTER_TOOL = "Here is what the tool returned"
"""The answer once a tool result (`<tool_response>`) is in the prompt."""

WEATHER_ARGUMENTS = {"city": "Paris"}
"""The arguments of the call to a tool whose first parameter is `city`."""

SHELL_COMMAND = "touch llama.txt"
"""The `cmd` of the call to a tool whose first parameter is `cmd` (Codex's `exec_command`)."""

SHELL_FILE = "llama.txt"

TOOL_PREFERENCE = ("exec_command", "get_weather", "get_time")
"""The tool the model calls is the first of these that is offered (a grammar may force another)."""

GENERATED_TOKENS = 24
"""Tokens of the greeting answer: 6 of reasoning, 17 of text, the end-of-turn token."""

IMAGE_TOKENS = 4
"""Prompt positions one image takes with the tiny projector (tests/support/llamacpp/make_mmproj.py:
a 32x32 input in 16x16 patches). The model ignores them: an image changes no answer."""
