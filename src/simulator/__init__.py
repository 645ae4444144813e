"""An OpenAI-compatible HTTP simulator for tests, the benchmark and demos.

Scripted replies and faults on the real wire (see `simulator.replies`). It has unguarded control
routes (`/_sim/script`, `/_sim/log`), so the served app never mounts nor imports it; with no API
key the app answers with `core.model.simulated` instead. `python -m simulator` serves it alone.
"""

from simulator.agent import default_reply
from simulator.replies import (
    FAULTS,
    LogEntry,
    Reply,
    ToolCallSpec,
    WireOptions,
    check_reply,
    split_words,
)
from simulator.server import Simulator, create_simulator

__all__ = [
    "FAULTS",
    "LogEntry",
    "Reply",
    "Simulator",
    "ToolCallSpec",
    "WireOptions",
    "check_reply",
    "create_simulator",
    "default_reply",
    "split_words",
]
