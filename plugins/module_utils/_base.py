# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: the base class of every failsafe.recovery module and the shared
argument specs. Option names follow amazon.aws (AWS) and community.postgresql
(PostgreSQL) so users feel at home; the matching documentation lives in
plugins/doc_fragments/.
"""

from __future__ import annotations

import copy

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.failsafe.recovery.plugins.module_utils._imports import IMPORT_ERRORS, PIP_NAMES

_AWS_SPEC = dict(
    region=dict(type="str", aliases=["aws_region", "ec2_region"]),
    endpoint_url=dict(type="str", aliases=["aws_endpoint_url", "ec2_url", "s3_url"]),
    access_key=dict(type="str", aliases=["aws_access_key_id", "aws_access_key", "ec2_access_key"], no_log=False),
    secret_key=dict(type="str", aliases=["aws_secret_access_key", "aws_secret_key", "ec2_secret_key"], no_log=True),
    session_token=dict(type="str", aliases=["aws_session_token", "security_token"], no_log=True),
    profile=dict(type="str", aliases=["aws_profile"]),
    validate_certs=dict(type="bool", default=True),
)

_POSTGRES_SPEC = dict(
    login_user=dict(type="str", default="postgres", aliases=["login"]),
    login_password=dict(type="str", default="", no_log=True),
    login_host=dict(type="str", default="", aliases=["host"]),
    login_unix_socket=dict(type="str", default="", aliases=["unix_socket"]),
    login_port=dict(type="int", default=5432, aliases=["port"]),
    login_db=dict(type="str", aliases=["db"]),
    ssl_mode=dict(type="str", default="prefer",
                  choices=["allow", "disable", "prefer", "require", "verify-ca", "verify-full"]),
    ca_cert=dict(type="str", aliases=["ssl_rootcert"]),
    ssl_cert=dict(type="path"),
    ssl_key=dict(type="path", no_log=False),
    connect_timeout=dict(type="int", default=10),
    connect_params=dict(type="dict", default={}),
)

_WAIT_SPEC = dict(
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=300),
    poll_interval=dict(type="float", default=2.0),
)


def aws_argument_spec():
    """Connection options for AWS APIs, named as in amazon.aws."""
    return copy.deepcopy(_AWS_SPEC)


def postgres_argument_spec():
    """Connection options for PostgreSQL, named as in community.postgresql."""
    return copy.deepcopy(_POSTGRES_SPEC)


def wait_argument_spec():
    """The wait / wait_timeout / poll_interval triple every waiting module takes."""
    return copy.deepcopy(_WAIT_SPEC)


class FailsafeModule(AnsibleModule):
    """AnsibleModule with the house rules built in.

    - check mode is supported unless a module says otherwise;
    - ``requires`` names the third-party libraries the module needs; a missing
      one fails with missing_required_lib() before anything is touched;
    - ``fail(msg, **facts)`` fails with structured facts next to the message.
    """

    def __init__(self, argument_spec, requires=(), **kwargs):
        kwargs.setdefault("supports_check_mode", True)
        super().__init__(argument_spec=argument_spec, **kwargs)
        for name in requires:
            if name in IMPORT_ERRORS:
                self.fail_json(msg=missing_required_lib(PIP_NAMES.get(name, name)),
                               exception=IMPORT_ERRORS[name])

    def fail(self, msg, **facts):
        """Fail the task with a message and structured facts; never returns."""
        self.fail_json(msg=msg, **facts)
