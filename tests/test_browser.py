"""The Temporal Web UI tells the story of a run: a real headless Chromium on the embedded UI.

Needs Debian's chromium (/usr/bin/chromium; .ci/run installs it). The screenshot is kept
in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftline.activities.registry import collect
from raftline.cli import DEMO_GOAL, DEMO_INPUTS, DEMO_PIPELINE
from raftline.client import RaftlineClient, temporal_client
from raftline.embedded import EmbeddedServer, free_port, port_open
from raftline.models import PipelineSpec, Task
from raftline.worker import build_worker
from tests.conftest import ARTIFACTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium: .ci/run installs Debian's (apt-get install -y chromium); "
    "it could not be installed here",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
]
# The UI is a single-page app: let it fetch and render before the DOM is taken (virtual
# time: an idle page does not wait it out). A busy machine gets a second, longer look.
BUDGETS_MS = (10_000, 30_000)


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The embedded dev server WITH its Web UI, on free ports, in memory."""
    logs = tmp_path_factory.mktemp("temporal-ui")
    server = EmbeddedServer(
        port=free_port(), ui_port=free_port(), db_file=None, log_file=logs / "server.log"
    ).start()
    assert server.ui_port is not None
    deadline = time.monotonic() + 30
    while not port_open("127.0.0.1", server.ui_port) and time.monotonic() < deadline:
        time.sleep(0.1)
    yield server
    server.stop()


def render(url: str, screenshot: Path, profile: Path, budget_ms: int) -> str:
    """The page's DOM after rendering, and a screenshot of it, from one Chromium run."""
    assert CHROMIUM is not None
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={screenshot}"]
    cmd.append(f"--virtual-time-budget={budget_ms}")
    proc = subprocess.run(
        [*cmd, "--dump-dom", url], capture_output=True, text=True, timeout=90, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def visible_text(dom: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


async def test_web_ui_shows_the_demo_run_and_its_raft_status(
    ui_server: EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAFTLINE_HOME", str(tmp_path))  # the demo's outbox
    client = await temporal_client(ui_server.address, tracing=False)
    queue = f"ui-{uuid.uuid4().hex[:8]}"
    workflow_id = f"board_memo-ui-{uuid.uuid4().hex[:6]}"
    spec = PipelineSpec.from_yaml(DEMO_PIPELINE)
    task = Task(goal=DEMO_GOAL, inputs=DEMO_INPUTS)
    async with build_worker(client, queue, collect()):
        result = await RaftlineClient(client, queue).run(spec, task, id=workflow_id)
    assert result.success and result.rollbacks == 1  # the demo's drift and recovery
    run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id

    # The workflow page, on its Search Attributes tab.
    url = (
        f"{ui_server.ui_url}/namespaces/default/workflows/{workflow_id}/{run_id}/search-attributes"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "web-ui-workflow.png"
    shot.unlink(missing_ok=True)
    for budget in BUDGETS_MS:
        dom = await asyncio.to_thread(render, url, shot, tmp_path / "chromium", budget)
        text = visible_text(dom)
        if workflow_id in text and "RaftStatus" in text:
            break

    assert workflow_id in text, text[:2000]
    assert "VerifiedPipeline" in text and "Completed" in text  # type and status badge
    assert re.search(r'"RaftStatus"\s*:\s*"completed"', text), text[:4000]
    assert re.search(r'"RaftPipeline"\s*:\s*"board_memo"', text)
    assert re.search(r'"RaftRollbacks"\s*:\s*1\b', text)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
