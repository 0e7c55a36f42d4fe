"""Role rollback_code, strategy ``asg``, for real against the moto server fixture: a launch template with
versions 1 (t3.micro) and 2 (t3.small), an Auto Scaling group on version 2 with three instances. The role
points the group back at version 1 and replaces every instance (``rolling_replace``); check mode and a second
run change nothing; bad input fails naming the variable and changes nothing.

moto 5.2.5 has no StartInstanceRefresh: the ``instance_refresh`` path is exercised only up to that call, which
fails, and serves as the failure injection proving the rescue points the group back at version 2.

What an instance runs is asserted on the EC2 side: its instance type (the ground truth: v1 t3.micro, v2 t3.small)
and the ``aws:ec2launchtemplate:version`` tag EC2 puts on an instance launched from a template. moto 5.2.5 gets
that tag wrong: an Auto Scaling group launches with the template id only, so the tag (and the per-instance
LaunchTemplate of DescribeAutoScalingGroups) is the template's *default* version, not the group's. The tests keep
the default version in step with the deployed version, as a deploy that sets the default would, and roll back with
``set_default: true``; the role's default ``set_default: false`` is right on AWS but is not exercised end to end
here (the module would see moto's wrong tags).
"""

import uuid

import pytest
import yaml

from sandbox import runner

PY = str(runner.ROOT / ".venv" / "bin" / "python")
ROLLBACK = runner.ROOT / "playbooks" / "rollback_code.yml"
TYPES = {"1": "t3.micro", "2": "t3.small"}


class Group:
    """A launch template (v1 t3.micro, v2 t3.small) and an Auto Scaling group on ``version`` in moto."""

    def __init__(self, moto, size=3, version="2", default="2"):
        self.moto = moto
        self.asg = moto.client("autoscaling")
        self.ec2 = moto.client("ec2")
        suffix = uuid.uuid4().hex[:8]
        self.name = "web-" + suffix
        self.template = "app-" + suffix
        self.template_id = self.ec2.create_launch_template(
            LaunchTemplateName=self.template,
            LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": TYPES["1"]})["LaunchTemplate"]["LaunchTemplateId"]
        self.ec2.create_launch_template_version(
            LaunchTemplateName=self.template, LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": TYPES["2"]})
        # the deploy made version 2 the default (moto tags every instance with the default version, see above)
        self.ec2.modify_launch_template(LaunchTemplateId=self.template_id, DefaultVersion=default)
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=self.name, MinSize=size, MaxSize=size + 1, DesiredCapacity=size,
            LaunchTemplate={"LaunchTemplateName": self.template, "Version": version},
            AvailabilityZones=["us-east-1a"])

    def describe(self):
        return self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.name])["AutoScalingGroups"][0]

    def default_version(self):
        return self.ec2.describe_launch_templates(LaunchTemplateIds=[self.template_id])["LaunchTemplates"][0][
            "DefaultVersionNumber"]

    def version(self):
        return self.describe()["LaunchTemplate"]["Version"]

    def instances(self):
        """{instance id: (template version tag, instance type, EC2 state)} of the group's members."""
        members = self.describe()["Instances"]
        ids = [m["InstanceId"] for m in members]
        assert all(m["LifecycleState"] == "InService" for m in members), members
        out = {}
        for res in self.ec2.describe_instances(InstanceIds=ids)["Reservations"]:
            for inst in res["Instances"]:
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                assert tags["aws:ec2launchtemplate:id"] == self.template_id
                out[inst["InstanceId"]] = (tags["aws:ec2launchtemplate:version"], inst["InstanceType"],
                                           inst["State"]["Name"])
        assert sorted(out) == sorted(ids)
        return out


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "inventory.yml"
    hosts = {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": PY}}
    path.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": hosts}}}}))
    return path


def rollback(moto, inventory, group, check=False, replace="rolling_replace", **asg):
    spec = dict(moto.aws_params, name=group.name, batch_size=2, wait_timeout=60, poll_interval=0.5, set_default=True)
    spec.update(asg)
    extra = {"rollback_code_strategy": "asg", "rollback_code_records_dir": "",
             "rollback_code_asg": spec, "rollback_code_asg_replace": replace}
    return runner.run_playbook(ROLLBACK, inventory=inventory, extra_vars=extra, check=check)


def task(res, name):
    found = [r for n, r in res.task_results("localhost") if n == name or n.endswith(" : " + name)]
    assert found, "task %r did not run; rc=%s\n%s" % (name, res.rc, res.stdout[-3000:])
    return found[-1]


def test_rolls_back_to_previous_version_check_mode_and_idempotence(moto, inventory):
    group = Group(moto, size=3, version="2")
    before = group.instances()
    assert sorted(v[:2] for v in before.values()) == [("2", "t3.small")] * 3

    check = rollback(moto, inventory, group, check=True)
    assert check.rc == 0, check.stdout[-3000:]
    plan = task(check, "Point the group at the target version and replace its instances")
    assert plan["changed"] is True
    assert task(check, "Preflight | read the group and pick the target version")["target_source"] == "version before 2"
    assert plan["target_version"] == 1 and plan["default_changed"] is True
    assert sorted(plan["outdated"]) == sorted(before)
    assert group.version() == "2" and group.default_version() == 2
    assert group.instances() == before

    res = rollback(moto, inventory, group)
    assert res.rc == 0, res.stdout[-3000:]
    assert group.version() == "1" and group.default_version() == 1
    after = group.instances()
    assert len(after) == 3
    assert not set(after) & set(before), "every v2 instance was replaced"
    assert sorted(after.values()) == [("1", "t3.micro", "running")] * 3
    for instance_id in before:
        state = group.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]
        assert state["Name"] == "terminated"
    result = task(res, "Publish what the code rollback did")["ansible_facts"]["rollback_code_result"]
    assert result["version_before"] == "2" and int(result["version_target"]) == 1
    assert sorted(result["replaced"]) == sorted(before)
    tags = {t["Key"]: t["Value"] for t in group.describe()["Tags"]}
    assert tags["failsafe.recovery:rollback_code"] == "template=%s version=1 from=2" % group.template_id

    # version 'previous' again: the marker says the group was rolled back to 1 already
    again = rollback(moto, inventory, group)
    assert again.rc == 0, again.stdout[-3000:]
    assert again.stats["localhost"]["changed"] == 0, again.stdout[-3000:]
    assert task(again, "Preflight | read the group and pick the target version")["target_source"] == "rolled back already"
    assert group.version() == "1"
    assert group.instances() == after

    check_again = rollback(moto, inventory, group, check=True)
    assert check_again.rc == 0, check_again.stdout[-3000:]
    assert check_again.stats["localhost"]["changed"] == 0, check_again.stdout[-3000:]


def test_group_on_target_with_stale_instances_replaces_only_those(moto, inventory):
    # named version, group on $Latest (= 2): the group is pinned to 1; a second run is a no-op
    group = Group(moto, size=2, version="$Latest")
    before = group.instances()
    res = rollback(moto, inventory, group, version=1, batch_size=1)
    assert res.rc == 0, res.stdout[-3000:]
    assert group.version() == "1"
    after = group.instances()
    assert not set(after) & set(before)
    assert sorted(after.values()) == [("1", "t3.micro", "running")] * 2
    again = rollback(moto, inventory, group, version=1, batch_size=1)
    assert again.rc == 0, again.stdout[-3000:]
    assert again.stats["localhost"]["changed"] == 0, again.stdout[-3000:]
    assert group.instances() == after


@pytest.mark.parametrize("asg, variable, words", [
    ({"name": "no-such-group"}, "rollback_code_asg.name", "does not exist"),
    ({"version": 7}, "rollback_code_asg.version", "has no version 7"),
    ({"launch_template": {"name": "no-such-template"}}, "rollback_code_asg.launch_template", "does not exist"),
    ({"version": "latest-ish"}, "rollback_code_asg", "a version that is previous"),
    ({"name": ""}, "rollback_code_asg", "needs rollback_code_asg with a name"),
])
def test_bad_input_names_the_variable_and_changes_nothing(moto, inventory, asg, variable, words):
    group = Group(moto, size=2, version="2")
    before = group.instances()
    res = rollback(moto, inventory, group, **asg)
    assert res.rc != 0
    assert variable in res.stdout and words in res.stdout, res.stdout[-3000:]
    assert "Point the group at the target version and replace its instances" not in [
        name.split(" : ")[-1] for name, _result in res.task_results("localhost")]
    assert group.version() == "2" and group.default_version() == 2
    assert group.instances() == before


def test_nothing_before_version_one_fails_clearly(moto, inventory):
    group = Group(moto, size=1, version="1", default="1")
    before = group.instances()
    res = rollback(moto, inventory, group)
    assert res.rc != 0
    assert "has no version previous to roll back to (version before 1" in res.stdout, res.stdout[-3000:]
    assert "rollback_code_asg.version" in res.stdout
    assert group.version() == "1"
    assert group.instances() == before


def test_instance_refresh_unsupported_by_moto_fails_and_points_the_group_back(moto, inventory):
    group = Group(moto, size=2, version="2")
    before = group.instances()
    res = rollback(moto, inventory, group, replace="instance_refresh", min_healthy_percentage=50)
    assert res.rc != 0
    failed = task(res, "Fail the code rollback loudly")
    assert ("failed at step 'Point the group at the target version and replace its instances "
            "(start the instance refresh)'") in failed["msg"], failed["msg"]
    assert "Cannot start an instance refresh of Auto Scaling group '%s'" % group.name in failed["msg"]
    assert "points back at launch template %s version 2" % group.template_id in failed["msg"]
    assert task(res, "Point the group back at the launch template version it had before")["changed"] is True
    assert group.version() == "2" and group.default_version() == 2
    assert group.instances() == before
    assert "failsafe.recovery:rollback_code" not in {t["Key"] for t in group.describe()["Tags"]}
