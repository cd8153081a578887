"""A step run in a thread of its own while the caller does another one.

Predict overlaps steps that wait outside Python or release the GIL (ffmpeg, CTranslate2,
numpy's FFT, OpenCV, file writes) with steps that hold it (dlib, the Python that formats
CSV). The thread is not a daemon: a process that exits early on an error waits for a step
still in flight instead of tearing down the C++ code running it.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable


class Background:
    """fn(*args) started now in a thread; result() waits for it and returns its value or
    raises what it raised. seconds: how long it ran, finished_at: time.perf_counter() when
    it ended (both None while it runs)."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "kfusion-background"):
        self.seconds: float | None = None
        self.finished_at: float | None = None
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name=name)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        t0 = time.perf_counter()
        try:
            self._value = fn(*args)
        except BaseException as e:   # handed to whoever asks for the result
            self._error = e
        finally:
            self.finished_at = time.perf_counter()
            self.seconds = self.finished_at - t0

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
