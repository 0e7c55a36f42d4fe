# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # PostgreSQL connection options, named as in community.postgresql.
    DOCUMENTATION = r"""
options:
  login_user:
    description:
      - The role to connect as.
    type: str
    default: postgres
    aliases: [login]
  login_password:
    description:
      - The password of O(login_user). Never logged.
    type: str
    default: ''
  login_host:
    description:
      - Host name or IP address of the server. Empty means the local Unix socket.
    type: str
    default: ''
    aliases: [host]
  login_unix_socket:
    description:
      - Directory of the server's Unix socket; takes precedence over O(login_host).
    type: str
    default: ''
    aliases: [unix_socket]
  login_port:
    description:
      - Server port.
    type: int
    default: 5432
    aliases: [port]
  login_db:
    description:
      - Database to connect to.
    type: str
    aliases: [db]
  ssl_mode:
    description:
      - libpq C(sslmode) of the connection.
    type: str
    default: prefer
    choices: [allow, disable, prefer, require, verify-ca, verify-full]
  ca_cert:
    description:
      - CA certificate file that must have signed the server's certificate.
    type: str
    aliases: [ssl_rootcert]
  ssl_cert:
    description:
      - Client certificate file.
    type: path
  ssl_key:
    description:
      - Private key file of O(ssl_cert).
    type: path
  connect_timeout:
    description:
      - Seconds to wait for the connection.
    type: int
    default: 10
  connect_params:
    description:
      - Further libpq connection parameters, for example C(options) or C(target_session_attrs).
    type: dict
    default: {}
requirements:
  - psycopg >= 3.1
"""
