# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: psycopg 3 connections from the shared PostgreSQL options."""

from __future__ import annotations

from ansible_collections.failsafe.recovery.plugins.module_utils import _imports


def conninfo_kwargs(params, dbname=None):
    """psycopg.connect() keyword arguments from community.postgresql-style options."""
    kwargs = dict(params.get("connect_params") or {})
    host = params.get("login_unix_socket") or params.get("login_host")
    kwargs.update(
        user=params.get("login_user") or "postgres",
        port=params.get("login_port") or 5432,
        dbname=dbname or params.get("login_db") or "postgres",
        sslmode=params.get("ssl_mode") or "prefer",
        connect_timeout=params.get("connect_timeout") or 10,
        application_name="failsafe.recovery",
    )
    if host:
        kwargs["host"] = host
    if params.get("login_password"):
        kwargs["password"] = params["login_password"]
    for option, key in (("ca_cert", "sslrootcert"), ("ssl_cert", "sslcert"), ("ssl_key", "sslkey")):
        if params.get(option):
            kwargs[key] = params[option]
    return kwargs


def describe_target(params, dbname=None):
    """'db@host:port' for error messages (never the password)."""
    host = params.get("login_unix_socket") or params.get("login_host") or "local socket"
    return "%s@%s:%s" % (dbname or params.get("login_db") or "postgres", host, params.get("login_port") or 5432)


def connect(params, dbname=None, autocommit=True):
    """Open a psycopg connection; raises psycopg.Error with the server's reason."""
    return _imports.psycopg.connect(autocommit=autocommit, **conninfo_kwargs(params, dbname))
