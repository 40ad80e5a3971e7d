"""serve-api's server processes do not outlive their parent, even one killed by SIGKILL."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.conftest import env_for
from tests.helpers.servers import free_port, running, server_processes
from tests.helpers.waiting import wait_for
from workers.core.config import Settings


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_server_processes_exit_when_the_parent_is_killed(settings: Settings) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve-api", "--port", str(port), "--workers", "2"]
    with running(args, env_for(settings), health_url=url + "/healthz") as parent:
        wait_for(lambda: len(server_processes(parent.pid)) == 2, what="two server processes")
        workers = server_processes(parent.pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        wait_for(
            lambda: not any(_alive(pid) for pid in workers),
            what=f"the orphaned server processes {sorted(workers)} to exit",
        )
