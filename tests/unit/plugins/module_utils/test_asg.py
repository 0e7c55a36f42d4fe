# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the driver of asg_launch_template.

The moto server test (tests/integration/test_rollback_code_asg.py) covers rolling_replace end to end; moto has
no instance refresh and never leaves a replacement unhealthy, so those paths are exercised here with fake
clients that answer like the AWS API.
"""

from __future__ import annotations

import pytest

from ansible_collections.failsafe.recovery.plugins.module_utils import _asg
from ansible_collections.failsafe.recovery.tests.unit.fake_clock import FakeClock

LT = "lt-0123456789abcdef0"


class FakeAws:
    """Auto Scaling + EC2 in one object: a group on ``version`` with ``instances`` {id: version}."""

    def __init__(self, version="2", instances=None, refresh_statuses=(), replacement_health="Healthy"):
        self.version = version
        self.members = dict(instances or {})
        self.health = {i: "Healthy" for i in self.members}
        self.refresh_statuses = list(refresh_statuses)
        self.replacement_health = replacement_health
        self.calls = []
        self.count = 0

    # autoscaling
    def describe_auto_scaling_groups(self, AutoScalingGroupNames):
        self.calls.append("describe_auto_scaling_groups")
        return {"AutoScalingGroups": [{
            "AutoScalingGroupName": AutoScalingGroupNames[0], "DesiredCapacity": len(self.members), "Tags": [],
            "LaunchTemplate": {"LaunchTemplateId": LT, "LaunchTemplateName": "app", "Version": self.version},
            "Instances": [{"InstanceId": i, "LifecycleState": "InService", "HealthStatus": self.health[i]}
                          for i in self.members]}]}

    def update_auto_scaling_group(self, AutoScalingGroupName, LaunchTemplate):
        self.calls.append("update_auto_scaling_group")
        self.version = LaunchTemplate["Version"]

    def terminate_instance_in_auto_scaling_group(self, InstanceId, ShouldDecrementDesiredCapacity):
        assert ShouldDecrementDesiredCapacity is False
        self.calls.append("terminate " + InstanceId)
        del self.members[InstanceId]
        self.count += 1
        new = "i-new%d" % self.count
        self.members[new] = self.version
        self.health[new] = self.replacement_health

    def start_instance_refresh(self, AutoScalingGroupName, Strategy, Preferences):
        assert Preferences == {"MinHealthyPercentage": 90, "SkipMatching": True}
        self.calls.append("start_instance_refresh")
        return {"InstanceRefreshId": "r-1"}

    def describe_instance_refreshes(self, AutoScalingGroupName, InstanceRefreshIds):
        status = self.refresh_statuses.pop(0) if len(self.refresh_statuses) > 1 else self.refresh_statuses[0]
        if status == "Successful":
            for i in self.members:
                self.members[i] = self.version
        return {"InstanceRefreshes": [{"InstanceRefreshId": "r-1", "Status": status, "StatusReason": "because",
                                       "PercentageComplete": 50}]}

    def cancel_instance_refresh(self, AutoScalingGroupName):
        self.calls.append("cancel_instance_refresh")

    def create_or_update_tags(self, Tags):
        self.calls.append("tag " + Tags[0]["Value"])

    # ec2
    def describe_launch_templates(self, **kwargs):
        return {"LaunchTemplates": [{"LaunchTemplateId": LT, "LaunchTemplateName": "app", "DefaultVersionNumber": 1}]}

    def describe_launch_template_versions(self, **kwargs):
        return {"LaunchTemplateVersions": [{"VersionNumber": 1}, {"VersionNumber": 2}]}

    def describe_instances(self, InstanceIds):
        return {"Reservations": [{"Instances": [
            {"InstanceId": i, "Tags": [{"Key": _asg.TAG_ID, "Value": LT},
                                       {"Key": _asg.TAG_VERSION, "Value": str(self.members[i])}]}
            for i in InstanceIds]}]}


def params(**kw):
    base = dict(name="web", launch_template={}, version="previous", replace="rolling_replace", batch_size=1,
                min_healthy_percentage=90, default_version="", marker=True, wait=True, wait_timeout=10,
                poll_interval=2.0, region="us-east-1")
    base.update(kw)
    return base


def run(aws, check_mode=False, **kw):
    clock = FakeClock()
    return _asg.AsgRollback(aws, aws, params(**kw), check_mode=check_mode, clock=clock, sleep=clock.sleep).run()


def test_resolve_version_and_marker():
    assert _asg.resolve_version("$Latest", [1, 2, 3], 1) == 3
    assert _asg.resolve_version("$Default", [1, 2, 3], 2) == 2
    assert _asg.resolve_version("7", [1], 1) == 7
    assert _asg.resolve_version("x", [1], 1) is None
    marker = _asg.format_marker(LT, 1, 2)
    assert _asg.parse_marker(marker) == {"template": LT, "version": "1", "from": "2"}
    assert _asg.parse_marker("garbage") == {}
    assert _asg.pick_target("previous", 3, [1, 2, 3], 3, {}, LT) == (2, "version before 3")
    assert _asg.pick_target("previous", 1, [1, 2, 3], 3, {"template": LT, "version": "1"}, LT) == (1, "rolled back already")
    assert _asg.pick_target("previous", 1, [1, 2], 1, {}, LT) == (None, "version before 1")
    assert _asg.pick_target("$Latest", 1, [1, 2], 1, {}, LT) == (2, "named version")


def test_check_mode_predicts_and_changes_nothing():
    aws = FakeAws(version="2", instances={"i-a": 2, "i-b": 2})
    result = run(aws, check_mode=True)
    assert result["changed"] is True and result["target_version"] == 1
    assert sorted(result["outdated"]) == ["i-a", "i-b"]
    assert aws.version == "2" and "update_auto_scaling_group" not in aws.calls


def test_rolling_replace_in_batches_then_noop():
    aws = FakeAws(version="2", instances={"i-a": 2, "i-b": 2, "i-c": 2})
    result = run(aws, batch_size=2)
    assert aws.version == "1"
    assert sorted(result["replaced"]) == ["i-a", "i-b", "i-c"]
    assert all(v == "1" for v in aws.members.values())
    assert aws.calls[-1] == "tag template=%s version=1 from=2" % LT
    again = run(aws, version="1")
    assert again["changed"] is False


def test_rolling_replace_unhealthy_replacement_times_out_with_every_instance():
    aws = FakeAws(version="2", instances={"i-a": 2, "i-b": 2}, replacement_health="Unhealthy")
    with pytest.raises(_asg.AsgError) as err:
        run(aws)
    assert err.value.step == "replace batch 1 of 2 (i-a)"
    assert "Timed out after 10s waiting for 2 InService, Healthy instances of 'web' on version 1 (1 ready" in err.value.msg
    assert sorted(i["instance_id"] for i in err.value.facts["instances"]) == ["i-b", "i-new1"]
    assert "terminate i-b" not in aws.calls, "the next batch must not start"


def test_instance_refresh_success_failure_and_timeout():
    aws = FakeAws(version="2", instances={"i-a": 2}, refresh_statuses=["Pending", "InProgress", "Successful"])
    result = run(aws, replace="instance_refresh")
    assert result["instance_refresh_id"] == "r-1" and aws.members == {"i-a": "1"}

    aws = FakeAws(version="2", instances={"i-a": 2}, refresh_statuses=["InProgress", "Failed"])
    with pytest.raises(_asg.AsgError) as err:
        run(aws, replace="instance_refresh")
    assert err.value.msg == "Instance refresh r-1 of 'web' ended Failed: because"
    assert err.value.step == "wait for the instance refresh r-1"

    aws = FakeAws(version="2", instances={"i-a": 2}, refresh_statuses=["InProgress"])
    with pytest.raises(_asg.AsgError) as err:
        run(aws, replace="instance_refresh")
    assert "Timed out after 10s waiting for instance refresh r-1" in err.value.msg and "cancelled" in err.value.msg
    assert aws.calls[-1] == "cancel_instance_refresh"


def test_unknown_version_fails_before_any_change():
    aws = FakeAws(version="2", instances={"i-a": 2})
    with pytest.raises(_asg.AsgError) as err:
        run(aws, version="9")
    assert err.value.step == "pick the target version"
    assert "has no version 9" in err.value.msg
    assert aws.version == "2" and "update_auto_scaling_group" not in aws.calls
