"""The shared argument specs, connection helpers and base class."""

import pytest

from ansible_collections.failsafe.recovery.plugins.module_utils import _base, _imports
from ansible_collections.failsafe.recovery.plugins.module_utils._aws import aws_error
from ansible_collections.failsafe.recovery.plugins.module_utils._pgconn import conninfo_kwargs, describe_target


def test_specs_are_fresh_copies():
    first = _base.postgres_argument_spec()
    first["login_port"]["default"] = 1
    assert _base.postgres_argument_spec()["login_port"]["default"] == 5432


@pytest.mark.parametrize("spec, secrets", [
    (_base.aws_argument_spec(), {"secret_key", "session_token"}),
    (_base.postgres_argument_spec(), {"login_password"}),
])
def test_secrets_are_no_log(spec, secrets):
    assert {name for name, opt in spec.items() if opt.get("no_log")} == secrets


def test_conninfo_prefers_socket_and_maps_ssl_options():
    params = dict(_base.postgres_argument_spec())
    params = {k: v.get("default") for k, v in params.items()}
    params.update(login_host="db1", login_unix_socket="/run/pg", login_password="s3cret", ca_cert="/ca.pem",
                  connect_params={"options": "-c statement_timeout=5s"})
    kwargs = conninfo_kwargs(params, dbname="ledger")
    assert kwargs["host"] == "/run/pg"
    assert kwargs["dbname"] == "ledger"
    assert kwargs["password"] == "s3cret"
    assert kwargs["sslrootcert"] == "/ca.pem"
    assert kwargs["options"] == "-c statement_timeout=5s"
    assert "sslcert" not in kwargs


def test_describe_target_never_shows_the_password():
    text = describe_target({"login_host": "db1", "login_port": 5433, "login_password": "s3cret", "login_db": "app"})
    assert text == "app@db1:5433"


def test_aws_error_reads_botocore_response():
    class FakeClientError(Exception):
        response = {"Error": {"Code": "NoSuchBucket", "Message": "The bucket does not exist"},
                    "ResponseMetadata": {"HTTPStatusCode": 404, "RequestId": "r1"}}

    assert aws_error(FakeClientError()) == dict(code="NoSuchBucket", message="The bucket does not exist",
                                                http_status=404, request_id="r1")


def test_missing_library_fails_before_anything_else(run_main, monkeypatch):
    monkeypatch.setitem(_imports.IMPORT_ERRORS, "psycopg", "Traceback: no module named psycopg")

    def main():
        _base.FailsafeModule(argument_spec=dict(name=dict(type="str")), requires=["psycopg"])

    result, failed = run_main(main, {"name": "x"})
    assert failed
    assert "psycopg[binary]" in result["msg"]
    assert result["exception"].startswith("Traceback")


def test_fail_carries_structured_facts(run_main):
    def main():
        module = _base.FailsafeModule(argument_spec={})
        assert module.check_mode is False
        module.fail("Failed to do X on db1: denied", step="create", target="db1")

    result, failed = run_main(main, {})
    assert failed and result == {"msg": "Failed to do X on db1: denied", "step": "create", "target": "db1"}
