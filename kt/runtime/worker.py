"""Run the engine off the event loop: one worker thread, events handed to asyncio.

The HTTP loop stays responsive while the model computes (torch releases the GIL in
its kernels). The runtime issue moves the engine into its own process behind the
same `stream` interface.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

from kt.runtime.engine import Engine
from kt.runtime.request import SamplingParams, TokenEvent

_DONE = object()


class EngineWorker:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kt-engine")

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[TokenEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def run() -> None:
            try:
                for event in self.engine.generate(prompt_ids, params, cancel.is_set):
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except BaseException as e:  # handed to the awaiting request, never lost in the thread
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        loop.run_in_executor(self._executor, run)
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()  # the client left or the stream ended: stop computing for it

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
