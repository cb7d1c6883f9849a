"""Draining engine generators headless: the path the CLI, tests and benchmarks take."""

from __future__ import annotations

from collections.abc import Callable, Generator


def run(generator: Generator, on_event: Callable | None = None):
    """Iterate an engine generator to its end and return its result (its return value).

    If ``on_event`` raises (or Ctrl-C lands in it), the generator is closed before the
    exception goes on, so that its clean-up (a training saves its best model) runs now."""
    try:
        while True:
            try:
                event = next(generator)
            except StopIteration as stop:
                return stop.value
            if on_event is not None:
                on_event(event)
    finally:
        generator.close()
