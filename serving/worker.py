"""Forward passes off the event loop: a model server answers health checks and metrics while it scores.

KServe calls a model's `predict` on the server's event loop; a synchronous one blocks it for the whole pass, so a
large ranking request held `/v2/health/live` for seconds, long enough for a liveness probe to restart a healthy pod.
`OffLoop.predict` runs the model's synchronous `predict_now` on the model's own single thread instead: the loop stays
free, and passes still run one at a time (two at once would share the same cores and add their peak memory).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor


class OffLoop:
    """Mixin for a `kserve.Model` that defines `predict_now(payload, headers)`."""

    _pool: ThreadPoolExecutor | None = None

    async def predict(self, payload, headers: dict[str, str] | None = None):
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-infer")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.predict_now, payload, headers)

    def predict_now(self, payload, headers: dict[str, str] | None = None):
        raise NotImplementedError
