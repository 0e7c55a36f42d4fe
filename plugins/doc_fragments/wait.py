# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The wait options every waiting module takes.
    DOCUMENTATION = r"""
options:
  wait:
    description:
      - Wait until the change is complete and verified before returning.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait at most. A timeout fails with the last observed state of every object waited on.
    type: int
    default: 300
  poll_interval:
    description:
      - Seconds between two observations while waiting.
    type: float
    default: 2.0
"""
