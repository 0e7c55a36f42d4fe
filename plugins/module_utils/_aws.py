# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: boto3 clients built from the shared AWS options.

Retries are botocore's own ``standard`` mode (jittered exponential backoff on
throttling and transient errors); nothing here re-implements them.
"""

from __future__ import annotations

from ansible_collections.failsafe.recovery.plugins.module_utils import _imports

AWS_OPTION_NAMES = ("region", "endpoint_url", "access_key", "secret_key", "session_token", "profile", "validate_certs")


def aws_client(params, service, max_attempts=5, max_pool_connections=10):
    """Return a boto3 client for ``service`` from a dict holding the AWS options."""
    session = _imports.boto3.session.Session(
        aws_access_key_id=params.get("access_key"),
        aws_secret_access_key=params.get("secret_key"),
        aws_session_token=params.get("session_token"),
        profile_name=params.get("profile"),
        region_name=params.get("region"),
    )
    config = _imports.BotoConfig(
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        s3={"addressing_style": "path"} if params.get("endpoint_url") else None,
        user_agent_extra="failsafe.recovery",
    )
    return session.client(service, endpoint_url=params.get("endpoint_url") or None,
                          verify=params.get("validate_certs", True), config=config)


def aws_error(exc):
    """Structured facts of a botocore error: code, message, HTTP status, request id."""
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    meta = response.get("ResponseMetadata", {})
    return dict(
        code=error.get("Code", type(exc).__name__),
        message=error.get("Message", str(exc)),
        http_status=meta.get("HTTPStatusCode"),
        request_id=meta.get("RequestId"),
    )
