"""Draining engine generators headless: the path the CLI, tests and benchmarks take."""

from __future__ import annotations

from collections.abc import Callable, Generator


def run(generator: Generator, on_event: Callable | None = None):
    """Iterate an engine generator to its end and return its result (its return value).

    If ``on_event`` raises (or Ctrl-C lands in it), the generator is closed before the
    exception goes on, so that its clean-up (a training saves its best model) runs now."""
    events = mapped(generator, on_event or (lambda event: None))
    try:
        while True:
            try:
                next(events)
            except StopIteration as stop:
                return stop.value
    finally:
        events.close()
        generator.close()  # also where ``events`` never started


def mapped(generator: Generator, change: Callable) -> Generator:
    """The events of an engine generator, each passed through ``change``, and its result;
    the generator is closed when this one is (Cancel reaches it)."""
    try:
        while True:
            try:
                event = next(generator)
            except StopIteration as stop:
                return stop.value
            yield change(event)
    finally:
        generator.close()
