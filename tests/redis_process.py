"""A redis-server a test starts, stops and starts again on the same port: the event bus under a restart."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from components.cluster.launcher import free_ports


class RedisProcess:
    """A redis-server this test starts, stops and starts again on the same port, its data kept on disk (AOF), as a
    restarted Redis pod with a volume keeps it."""

    def __init__(self, directory: Path) -> None:
        (self.port,) = free_ports(1)
        self.directory, self.proc = directory, None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
