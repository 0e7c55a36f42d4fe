# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fake monotonic clock for unit tests of polling loops.

Pass an instance as ``clock=`` and its ``sleep`` as ``sleep=``: sleeping moves the time on at once, so waits
and timeouts are exercised without real time passing. Not a test file (pytest collects only ``test_*.py``);
import it as ``ansible_collections.failsafe.recovery.tests.unit.fake_clock``.
"""

from __future__ import annotations


class FakeClock:
    """Starts at 0.0; calling it returns the time, ``sleep(seconds)`` adds to it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
