"""The deploy filter plugin exposes the record and flagd helpers and turns errors into filter errors."""

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.failsafe.recovery.plugins.filter.deploy import FilterModule


def test_filters_are_exposed_and_wrap_errors():
    filters = FilterModule().filters()
    assert set(filters) == {"deploy_id", "deploy_index_update", "deploy_record_select", "deploy_previous_release",
                            "flagd_disable", "flagd_evaluate", "flagd_not_off"}
    out = filters["deploy_index_update"]([], {"deployment_id": "a", "time": "t"}, 3)
    assert out["index"][0]["deployment_id"] == "a"
    with pytest.raises(AnsibleFilterError, match="deploy_record_select: no deployment is recorded"):
        filters["deploy_record_select"]([])
