"""Drive an engine generator in a napari thread worker, with Cancel.

Every yielded event reaches ``on_event`` on the GUI thread. Cancel sets a flag that the
worker checks before asking the generator for its next event; it then closes the generator
in the worker thread (so its clean-up, such as saving the best model, never blocks the GUI)
and ``on_done`` is called with ``None``. A problem with the input (``NapariUNetError``) is
caught in the worker and shown as one notification sentence, without a traceback; anything
else is a bug and goes to napari's error reporting.

A run never outlives its panel or napari unfinished: closing the panel cancels it, and so
does closing napari's window (napari asks first, then cancels its tasks); when napari quits
or Python exits, each run still in flight is cancelled and waited for, so that its clean-up
(the best model saved, half-written results removed) ends before the process does — not
killed mid-step in a worker thread whose Qt objects are gone (an abort, a core dump).
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from functools import partial

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error
from qtpy.QtCore import QThread, QThreadPool, QTimer
from qtpy.QtWidgets import QApplication, QDockWidget, QHBoxLayout, QPushButton, QWidget
from superqt.utils import FunctionWorker, GeneratorWorker

from ..errors import NapariUNetError, os_error_sentence
from ..progress import mapped


def refuse(status, verdict: str, err: Exception) -> None:
    """A run refused before it starts: one notification, and the status line says it too
    (``"Not trained: ..."``), not what the last run said."""
    show_error(str(err))
    status.setText(f"{verdict}: {err}")


class _Refused:
    """What a run returns when the engine refused its input."""

    def __init__(self, message: str) -> None:
        self.message = message


def _drive(gen: Generator, cancel: threading.Event):
    try:
        while not cancel.is_set():
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            except NapariUNetError as err:
                return _Refused(str(err))
            except OSError as err:  # a file the system would not read or write (disk full)
                return _Refused(os_error_sentence(err))
            yield event
        return None
    finally:
        gen.close()


#: the longest napari's quit (or Python's exit) waits for the runs still in flight to end
WAIT_AT_EXIT_S = 120.0
_LIVE: set[_Waited] = set()


#: the threads our runs use: a pool of napari-unet's own, never Qt's global one
_POOL: QThreadPool | None = None


def run_pool() -> QThreadPool:
    """The thread pool of napari-unet's runs. Not Qt's global pool, which superqt's workers
    use by default: Qt's own image conversions on the GUI thread (napari's activity spinner,
    shown when a run starts) wait there for a free thread while holding Python's lock, so
    with that pool's threads (as many as the CPU's cores: 2 on a small laptop) all taken by
    runs that need that lock, napari froze for good at *Start*."""
    global _POOL
    if _POOL is None:
        _POOL = QThreadPool()
        _POOL.setMaxThreadCount(max(8, QThread.idealThreadCount()))
    return _POOL


class _Waited:
    """A worker that napari's quit and Python's exit wait for (:func:`finish_runs`): its
    thread says when it is done. It runs in :func:`run_pool`."""

    def start(self) -> None:
        if self in self._worker_set:  # as superqt's start, in our own pool
            raise RuntimeError("This worker is already started!")
        self.ended = threading.Event()
        _finish_runs_on_exit()
        _LIVE.add(self)
        self._worker_set.add(self)
        self._finished.connect(self._set_discard)
        if QThread.currentThread().loopLevel():  # in an event loop: once the caller is done
            QTimer.singleShot(1, partial(run_pool().start, self))
        else:
            run_pool().start(self)

    def run(self) -> None:
        try:
            super().run()
        finally:
            _LIVE.discard(self)
            self.ended.set()


class _Worker(_Waited, GeneratorWorker):
    """napari's generator worker, whose ``quit()`` (what napari calls on its tasks when its
    window closes) cancels as the Cancel button does, so that the generator is closed in the
    worker thread."""

    def __init__(self, func, gen: Generator, cancel: threading.Event) -> None:
        super().__init__(func, gen, cancel)
        self.cancel_event = cancel

    def quit(self) -> None:
        self.cancel_event.set()


class WaitedFunctionWorker(_Waited, FunctionWorker):
    """napari's function worker (a computation that cannot be cancelled, such as the
    separation view's), waited for at quit and at exit."""


def finish_runs(timeout: float = WAIT_AT_EXIT_S) -> None:
    """Cancel every run in flight and wait, at most ``timeout`` seconds in all, for their
    threads to end (at napari's quit and at Python's exit)."""
    deadline = time.monotonic() + timeout
    for worker in list(_LIVE):
        worker.quit()
    for worker in list(_LIVE):
        worker.ended.wait(max(0.0, deadline - time.monotonic()))


_hooked = False


def _finish_runs_on_exit() -> None:
    global _hooked
    if not _hooked:
        _hooked = True
        QApplication.instance().aboutToQuit.connect(finish_runs)
        atexit.register(finish_runs)  # after napari's own: so it runs before them


class EngineRun:
    """One run of an engine generator; ``cancel()`` stops it at its next event."""

    def __init__(self, gen: Generator, *, on_event: Callable, on_done: Callable,
                 on_finished: Callable | None = None,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self._cancel = threading.Event()
        self.worker = create_worker(_drive, gen, self._cancel, _worker_class=_Worker,
                                    _start_thread=False)
        self.worker.yielded.connect(on_event)
        self.worker.returned.connect(lambda value: self._returned(value, on_done, on_refused))
        if on_finished is not None:
            self.worker.finished.connect(on_finished)

    def start(self) -> EngineRun:
        self.worker.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    @staticmethod
    def _returned(value, on_done: Callable, on_refused: Callable | None) -> None:
        if isinstance(value, _Refused):
            show_error(value.message)
            if on_refused is not None:
                on_refused(value.message)
        else:
            on_done(value)


class RunControls(QWidget):
    """Start and Cancel buttons that drive one :class:`EngineRun` at a time.

    ``launch`` starts a generator with a napari progress bar; ``progress`` moves the bar;
    the buttons are enabled and disabled as the run starts and ends.
    """

    def __init__(self, start_text: str, on_start: Callable, parent=None) -> None:
        super().__init__(parent)
        self.run: EngineRun | None = None
        self.pbar = None
        self.start_btn = QPushButton(start_text)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.start_btn.clicked.connect(on_start)
        self.cancel_btn.clicked.connect(self.cancel)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.start_btn)
        row.addWidget(self.cancel_btn)
        self.on_finished: Callable | None = None
        self._watching = False  # whether closing its panel cancels the run
        self._locked: tuple[QWidget, ...] = ()

    def lock_while_running(self, *widgets: QWidget) -> None:
        """Disable ``widgets`` (buttons that start other runs) while a run is in flight."""
        self._locked = widgets

    def launch(self, gen: Generator, *, desc: str, total: int, on_event: Callable,
               on_done: Callable, on_finished: Callable | None = None,
               on_refused: Callable[[str], None] | None = None) -> None:
        self.pbar = progress(total=total, desc=desc)
        self.on_finished = on_finished
        self.run = EngineRun(gen, on_event=on_event, on_done=on_done,
                             on_finished=self._finished, on_refused=on_refused).start()
        self._watch_panel()
        for widget in (self.start_btn, *self._locked):
            widget.setEnabled(False)
        self.cancel_btn.setEnabled(True)

    def _watch_panel(self) -> None:
        """Once docked: closing the panel cancels the run in flight, which nothing would
        show or stop any more (a plain function: the panel's widgets may be gone by then)."""
        dock = self.parent()
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parent()
        if dock is not None and not self._watching:
            self._watching = True
            dock.destroyed.connect(lambda *_, controls=self: controls.cancel())

    def progress(self, done: int, total: int | None = None) -> None:
        if self.pbar is not None:
            if total is not None:
                self.pbar.total = total
            self.pbar.n = done
            self.pbar.refresh()

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()

    def _finished(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None
        for widget in (self.start_btn, *self._locked):
            widget.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.run = None
        if self.on_finished is not None:
            self.on_finished()


@dataclass
class LayerDone:
    """One layer of several predicted: shown in the viewer when it reaches the GUI thread."""

    layer: object
    result: object


def _named(gen, name: str):
    """A prediction's events, their messages saying which layer they are about."""
    return mapped(gen, lambda event: replace(event, message=f"{name}: "
                                                           f"{event.message or 'predicting'}"))


def each_layer(jobs):
    """Run ``(layer, prediction)`` jobs in turn (the first one started already), yielding
    their progress and a :class:`LayerDone` after each; a layer the engine refuses is
    skipped and named in the list returned."""
    skipped = []
    for layer, gen in jobs:
        try:
            result = yield from _named(gen, layer.name)
        except NapariUNetError as err:
            skipped.append((layer.name, str(err)))
            continue
        yield LayerDone(layer, result)
    return skipped


def refused(error: NapariUNetError):
    """A prediction that refuses its layer when started (``next``): with several layers,
    :func:`each_layer` skips it and names it, as it does the engine's refusals."""
    raise error
    yield  # a generator, whose first step raises
