"""Patch samplers for the worker-process tests of test_train.py.

A spawned DataLoader worker unpickles its sampler by importing the module that defines
it; a test module would import its conftest there, which can be another folder's, so
the samplers live in this module of their own, which imports nothing of the tests.
"""

import numpy as np


class AbortingSampler:
    """A patch sampler whose native code crashes: the worker process aborts."""

    rng = None

    def batch(self, n):
        import os

        os.abort()


class AbortingAtExitSampler:
    """Worker 1 aborts on its way out, after it was stopped, while worker 0 takes two
    seconds to exit, so that the parent is still waiting for worker 0 when it happens."""

    rng = None

    def batch(self, n):
        import atexit
        import functools
        import os
        import time

        from torch.utils.data import get_worker_info

        if not getattr(self, "armed", False):
            atexit.register(os.abort if get_worker_info().id == 1
                            else functools.partial(time.sleep, 2.0))
            self.armed = True
        return tuple(np.zeros((n, 1, 8, 8), np.float32) for _ in range(3))
