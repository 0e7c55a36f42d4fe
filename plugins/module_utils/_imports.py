# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: import guards for third-party libraries, in one place.

Modules never import boto3, psycopg or jmespath directly: they ask
FailsafeModule(requires=[...]) and get a missing_required_lib() message
naming the package to install when it is absent.
"""

from __future__ import annotations

import traceback

IMPORT_ERRORS = {}

try:
    import boto3  # noqa: F401  pylint: disable=unused-import
    import botocore  # noqa: F401  pylint: disable=unused-import
    from botocore.config import Config as BotoConfig  # noqa: F401  pylint: disable=unused-import
except ImportError:
    IMPORT_ERRORS["boto3"] = traceback.format_exc()

try:
    import psycopg  # noqa: F401  pylint: disable=unused-import
except ImportError:
    IMPORT_ERRORS["psycopg"] = traceback.format_exc()

try:
    import jmespath  # noqa: F401  pylint: disable=unused-import
except ImportError:
    IMPORT_ERRORS["jmespath"] = traceback.format_exc()

# pip package name for each import name, used in the error message.
PIP_NAMES = {"boto3": "boto3", "psycopg": "psycopg[binary]", "jmespath": "jmespath"}
