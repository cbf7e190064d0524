"""One source for raftline's own settings that several parts read: where its data lives,
which task queue it serves, and the search attributes it indexes runs by."""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.common import SearchAttributeKey

DEFAULT_TASK_QUEUE = "raftline"


def raftline_home() -> Path:
    """RAFTLINE_HOME: the embedded server's database, the demo outbox, stored payloads."""
    return Path(os.environ.get("RAFTLINE_HOME") or Path.home() / ".local/share/raftline")


def task_queue() -> str:
    """RAFTLINE_TASK_QUEUE: workflows and default activities."""
    return os.environ.get("RAFTLINE_TASK_QUEUE") or DEFAULT_TASK_QUEUE


# Search attributes: the Web UI's filters and `raftline list --status`.
RAFT_STATUS = SearchAttributeKey.for_keyword("RaftStatus")
RAFT_STEP = SearchAttributeKey.for_keyword("RaftStep")
RAFT_PIPELINE = SearchAttributeKey.for_keyword("RaftPipeline")
RAFT_ROLLBACKS = SearchAttributeKey.for_int("RaftRollbacks")
RAFT_FORK_OF = SearchAttributeKey.for_keyword("RaftForkOf")
SEARCH_ATTRIBUTE_KEYS = (RAFT_STATUS, RAFT_STEP, RAFT_PIPELINE, RAFT_ROLLBACKS, RAFT_FORK_OF)
# name -> (the operator API's type, the `temporal` CLI's spelling of it)
SEARCH_ATTRIBUTES: dict[str, tuple[IndexedValueType.ValueType, str]] = {
    "RaftStatus": (IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD, "Keyword"),
    "RaftStep": (IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD, "Keyword"),
    "RaftPipeline": (IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD, "Keyword"),
    "RaftRollbacks": (IndexedValueType.INDEXED_VALUE_TYPE_INT, "Int"),
    "RaftForkOf": (IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD, "Keyword"),
}
