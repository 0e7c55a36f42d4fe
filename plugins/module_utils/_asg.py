# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: the driver of asg_launch_template.

Points an Auto Scaling group at one numbered version of a launch template and
replaces the instances that do not run it:

- versions are compared as numbers: ``$Latest`` / ``$Default`` are resolved
  against the template; the group is pinned to the number unless the caller
  asked for ``$Latest`` / ``$Default`` itself;
- the version an instance runs is read from the tags EC2 puts on every instance
  launched from a template (``aws:ec2launchtemplate:id`` / ``:version``); the
  ``LaunchTemplate`` the Auto Scaling API reports per instance is only a
  fallback (it may name ``$Latest``, and moto reports the template's default);
- ``version: previous`` is the numbered version below the one the group runs,
  unless the group carries the marker tag of an earlier rollback and still runs
  that version (then re-running is a no-op);
- ``rolling_replace`` terminates outdated instances in batches without
  decrementing the desired capacity and waits for InService, Healthy
  replacements on the target version; ``instance_refresh`` starts an instance
  refresh (``SkipMatching``) and waits for its end, cancelling it on a timeout.
"""

from __future__ import annotations

import time

from ansible_collections.failsafe.recovery.plugins.module_utils._aws import aws_error

MARKER_TAG = "failsafe.recovery:rollback_code"
TAG_ID = "aws:ec2launchtemplate:id"
TAG_VERSION = "aws:ec2launchtemplate:version"
REFRESH_DONE = ("Successful",)
REFRESH_FAILED = ("Failed", "Cancelled", "RollbackSuccessful", "RollbackFailed")


class AsgError(Exception):
    """A failure with structured facts; ``step`` names what was being done."""

    def __init__(self, msg, step, **facts):
        super().__init__(msg)
        self.msg = msg
        self.step = step
        self.facts = facts


def is_botocore_error(exc):
    return type(exc).__module__.startswith("botocore")


def resolve_version(spec, numbers, default_number):
    """A group's or the user's version (``3``, ``$Latest``, ``$Default``) -> int, or None if unknown."""
    spec = str(spec or "$Default")
    if spec == "$Latest":
        return max(numbers) if numbers else None
    if spec == "$Default":
        return default_number
    if spec.isdigit():
        return int(spec)
    return None


def parse_marker(value):
    """Marker tag value ``template=lt-1 version=1 from=2`` -> dict (empty when absent or malformed)."""
    out = {}
    for part in (value or "").split():
        key, sep, val = part.partition("=")
        if sep:
            out[key] = val
    return out if {"template", "version"} <= set(out) else {}


def format_marker(template_id, version, from_version):
    return "template=%s version=%s from=%s" % (template_id, version, from_version)


def pick_target(requested, current, numbers, default_number, marker, template_id):
    """(target version number, where it came from) for ``requested`` ('previous' or a version)."""
    if requested != "previous":
        target = resolve_version(requested, numbers, default_number)
        return target, "named version"
    if marker.get("template") == template_id and marker.get("version") == str(current):
        return current, "rolled back already"
    older = [n for n in numbers if current is not None and n < current]
    return (max(older) if older else None), "version before %s" % current


def instance_version(instance, ec2_tags, numbers, default_number):
    """(template id, version number or None) an instance was launched with."""
    if TAG_VERSION in ec2_tags and str(ec2_tags[TAG_VERSION]).isdigit():
        return ec2_tags.get(TAG_ID), int(ec2_tags[TAG_VERSION])
    spec = instance.get("LaunchTemplate") or {}
    return spec.get("LaunchTemplateId"), resolve_version(spec.get("Version"), numbers, default_number) if spec else None


def batches(items, size):
    return [items[i:i + size] for i in range(0, len(items), max(1, size))]


class AsgRollback:
    """One run of asg_launch_template; ``run()`` returns the result dict or raises AsgError."""

    def __init__(self, asg, ec2, params, check_mode=False, clock=time.monotonic, sleep=time.sleep):
        self.asg = asg
        self.ec2 = ec2
        self.p = params
        self.check_mode = check_mode
        self.clock = clock
        self.sleep = sleep
        self.template = {}
        self.numbers = []
        self.default_number = None
        self.initial_ids = []

    def _call(self, client, step, what, method, **kwargs):
        try:
            return getattr(client, method)(**kwargs)
        except Exception as exc:  # botocore ClientError and friends, re-raised with facts
            if is_botocore_error(exc):
                facts = aws_error(exc)
                raise AsgError("%s: %s (%s)" % (what, facts["message"], facts["code"]), step, error=facts) from exc
            raise

    # -- reads ---------------------------------------------------------------
    def group(self, step="read the group"):
        name = self.p["name"]
        groups = self._call(self.asg, step, "Cannot describe Auto Scaling group '%s'" % name,
                            "describe_auto_scaling_groups", AutoScalingGroupNames=[name])["AutoScalingGroups"]
        if not groups:
            raise AsgError("Auto Scaling group '%s' does not exist (region %s): check name" % (name, self.p.get("region")),
                           step, name=name)
        return groups[0]

    def load_template(self, spec):
        """Describe the template named by ``spec`` (LaunchTemplateId / LaunchTemplateName) and its versions."""
        step = "read the launch template"
        label = spec.get("LaunchTemplateId") or spec.get("LaunchTemplateName")
        kwargs = ({"LaunchTemplateIds": [spec["LaunchTemplateId"]]} if spec.get("LaunchTemplateId")
                  else {"LaunchTemplateNames": [spec["LaunchTemplateName"]]})
        try:
            templates = self.ec2.describe_launch_templates(**kwargs)["LaunchTemplates"]
        except Exception as exc:
            if not is_botocore_error(exc):
                raise
            facts = aws_error(exc)
            if "NotFound" in facts["code"] or "Malformed" in facts["code"]:
                raise AsgError("Launch template '%s' does not exist: check launch_template" % label, step,
                               launch_template=label, error=facts) from exc
            raise AsgError("Cannot describe launch template '%s': %s (%s)" % (label, facts["message"], facts["code"]),
                           step, error=facts) from exc
        if not templates:
            raise AsgError("Launch template '%s' does not exist: check launch_template" % label, step, launch_template=label)
        self.template = templates[0]
        numbers, token = [], None
        for _page in range(1000):  # bounded: 1000 pages of 200 versions
            kwargs = {"LaunchTemplateId": self.template["LaunchTemplateId"], "MaxResults": 200}
            if token:
                kwargs["NextToken"] = token
            page = self._call(self.ec2, step, "Cannot list the versions of launch template '%s'" % label,
                              "describe_launch_template_versions", **kwargs)
            numbers.extend(int(v["VersionNumber"]) for v in page.get("LaunchTemplateVersions", []))
            token = page.get("NextToken")
            if not token:
                break
        self.numbers = sorted(set(numbers))
        self.default_number = int(self.template.get("DefaultVersionNumber") or 0) or None

    def instances(self, group):
        """Every instance of the group with the template id and version it was launched with."""
        members = group.get("Instances", [])
        tags = {}
        ids = [i["InstanceId"] for i in members]
        for chunk in batches(ids, 100):
            res = self._call(self.ec2, "read the instances", "Cannot describe the instances of '%s'" % self.p["name"],
                             "describe_instances", InstanceIds=chunk)
            for reservation in res.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    tags[inst["InstanceId"]] = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        out = []
        for member in members:
            template_id, version = instance_version(member, tags.get(member["InstanceId"], {}),
                                                    self.numbers, self.default_number)
            out.append(dict(instance_id=member["InstanceId"], launch_template_id=template_id, version=version,
                            lifecycle_state=member.get("LifecycleState"), health_status=member.get("HealthStatus")))
        return out

    def on_target(self, inst, target):
        return inst["launch_template_id"] == self.template["LaunchTemplateId"] and inst["version"] == target

    # -- writes --------------------------------------------------------------
    def point(self, target, step="point the group at the target version"):
        self._call(self.asg, step, "Cannot point Auto Scaling group '%s' at launch template %s version %s"
                   % (self.p["name"], self.template["LaunchTemplateId"], target),
                   "update_auto_scaling_group", AutoScalingGroupName=self.p["name"],
                   LaunchTemplate={"LaunchTemplateId": self.template["LaunchTemplateId"], "Version": str(target)})

    def write_marker(self, target, before):
        self._call(self.asg, "record the rollback", "Cannot tag Auto Scaling group '%s'" % self.p["name"],
                   "create_or_update_tags", Tags=[{
                       "ResourceId": self.p["name"], "ResourceType": "auto-scaling-group", "Key": MARKER_TAG,
                       "Value": format_marker(self.template["LaunchTemplateId"], target, before),
                       "PropagateAtLaunch": False}])

    def rolling_replace(self, outdated, target):
        replaced = []
        size = self.p["batch_size"]
        for number, batch in enumerate(batches(outdated, size), start=1):
            step = "replace batch %d of %d (%s)" % (number, len(batches(outdated, size)), ", ".join(batch))
            for instance_id in batch:
                self._call(self.asg, step, "Cannot terminate instance %s" % instance_id,
                           "terminate_instance_in_auto_scaling_group", InstanceId=instance_id,
                           ShouldDecrementDesiredCapacity=False)
                replaced.append(instance_id)
            if self.p["wait"]:
                self.wait_replaced(batch, target, step, replaced)
        return replaced

    def wait_replaced(self, gone, target, step, replaced):
        """Wait until ``gone`` left the group and DesiredCapacity instances are InService and Healthy."""
        deadline = self.clock() + self.p["wait_timeout"]
        while True:
            group = self.group(step)
            insts = self.instances(group)
            present = [i for i in insts if i["instance_id"] in gone]
            ready = [i for i in insts if i["lifecycle_state"] == "InService" and i["health_status"] == "Healthy"]
            wrong = [i for i in ready if i["instance_id"] not in replaced and i["instance_id"] not in self.initial_ids
                     and not self.on_target(i, target)]
            if wrong:
                raise AsgError("Replacement instance(s) %s of '%s' do not run launch template version %s"
                               % (", ".join(i["instance_id"] for i in wrong), self.p["name"], target),
                               step, instances=insts, replaced=replaced)
            if not present and len(ready) >= group["DesiredCapacity"]:
                return
            if self.clock() >= deadline:
                raise AsgError("Timed out after %ss waiting for %d InService, Healthy instances of '%s' on version %s "
                               "(%d ready; still in the group: %s)"
                               % (self.p["wait_timeout"], group["DesiredCapacity"], self.p["name"], target, len(ready),
                                  ", ".join(i["instance_id"] for i in present) or "none"),
                               step, instances=insts, replaced=replaced)
            self.sleep(self.p["poll_interval"])

    def instance_refresh(self, target):
        step = "start the instance refresh"
        res = self._call(self.asg, step, "Cannot start an instance refresh of Auto Scaling group '%s'" % self.p["name"],
                         "start_instance_refresh", AutoScalingGroupName=self.p["name"], Strategy="Rolling",
                         Preferences={"MinHealthyPercentage": self.p["min_healthy_percentage"], "SkipMatching": True})
        refresh_id = res["InstanceRefreshId"]
        if not self.p["wait"]:
            return refresh_id, "Pending"
        step = "wait for the instance refresh %s" % refresh_id
        deadline = self.clock() + self.p["wait_timeout"]
        while True:
            found = self._call(self.asg, step, "Cannot describe instance refresh %s" % refresh_id,
                               "describe_instance_refreshes", AutoScalingGroupName=self.p["name"],
                               InstanceRefreshIds=[refresh_id]).get("InstanceRefreshes", [])
            status = found[0].get("Status") if found else "unknown"
            reason = found[0].get("StatusReason", "") if found else ""
            if status in REFRESH_DONE:
                return refresh_id, status
            if status in REFRESH_FAILED:
                raise AsgError("Instance refresh %s of '%s' ended %s: %s" % (refresh_id, self.p["name"], status, reason),
                               step, instance_refresh_id=refresh_id, refresh=found[0] if found else {})
            if self.clock() >= deadline:
                self._call(self.asg, step, "Cannot cancel instance refresh %s" % refresh_id,
                           "cancel_instance_refresh", AutoScalingGroupName=self.p["name"])
                raise AsgError("Timed out after %ss waiting for instance refresh %s of '%s' (last status %s, %s%% done); "
                               "it was cancelled" % (self.p["wait_timeout"], refresh_id, self.p["name"], status,
                                                     found[0].get("PercentageComplete", "?") if found else "?"),
                               step, instance_refresh_id=refresh_id, refresh=found[0] if found else {})
            self.sleep(self.p["poll_interval"])

    # -- the run -------------------------------------------------------------
    def run(self):
        group = self.group()
        spec = group.get("LaunchTemplate")
        if not spec:
            raise AsgError("Auto Scaling group '%s' does not use a launch template directly (a launch configuration or "
                           "a mixed instances policy): this module only handles LaunchTemplate groups" % self.p["name"],
                           "read the group", name=self.p["name"])
        wanted = self.p.get("launch_template") or {}
        self.load_template({"LaunchTemplateId": wanted.get("id"), "LaunchTemplateName": wanted.get("name")}
                           if (wanted.get("id") or wanted.get("name")) else spec)
        same_template = self.template["LaunchTemplateId"] == spec.get("LaunchTemplateId")
        current = resolve_version(spec.get("Version"), self.numbers, self.default_number) if same_template else None
        before = dict(launch_template_id=spec.get("LaunchTemplateId"), launch_template_name=spec.get("LaunchTemplateName"),
                      version=str(spec.get("Version")), version_number=current)
        if self.p["version"] == "previous" and not same_template:
            raise AsgError("version=previous needs the group's own launch template (%s); '%s' is another one: name the version"
                           % (spec.get("LaunchTemplateId"), self.template["LaunchTemplateId"]), "pick the target version")
        tags = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
        target, source = pick_target(self.p["version"], current, self.numbers, self.default_number,
                                     parse_marker(tags.get(MARKER_TAG)), self.template["LaunchTemplateId"])
        versions = ", ".join(str(n) for n in self.numbers)
        if target is None or target not in self.numbers:
            raise AsgError("Launch template %s (%s) has no version %s to roll back to (%s; versions %s, group on %s): "
                           "check version" % (self.template["LaunchTemplateId"], self.template.get("LaunchTemplateName"),
                                              self.p["version"] if target is None else target, source, versions,
                                              spec.get("Version")),
                           "pick the target version", versions=self.numbers, before=before)
        default_to = self.p.get("default_version") or ""
        default_target = target if default_to == "target" else (int(default_to) if default_to.isdigit() else None)
        if default_target is not None and default_target not in self.numbers:
            raise AsgError("Launch template %s has no version %s to make the default (versions %s): check default_version"
                           % (self.template["LaunchTemplateId"], default_target, versions),
                           "pick the default version", versions=self.numbers, before=before)
        set_default = default_target is not None and default_target != self.default_number
        before["default_version"] = self.default_number
        self.initial_ids = [i["InstanceId"] for i in group.get("Instances", [])]
        insts = self.instances(group)
        outdated = [i["instance_id"] for i in insts if not self.on_target(i, target)
                    and i["lifecycle_state"] not in ("Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated")]
        if self.p["replace"] == "none":
            outdated = []
        # $Latest / $Default asked for are written as such (the rescue restores a group exactly as it was)
        pointer = self.p["version"] if self.p["version"] in ("$Latest", "$Default") else str(target)
        repoint = not (same_template and str(spec.get("Version")) == pointer)
        after = dict(launch_template_id=self.template["LaunchTemplateId"],
                     launch_template_name=self.template.get("LaunchTemplateName"), version=pointer, version_number=target,
                     default_version=default_target if set_default else self.default_number)
        diff = dict(before=dict(before, instances_outdated=len(outdated)), after=dict(after, instances_outdated=0))
        result = dict(name=self.p["name"], before=before, after=after, target_version=target, target_source=source,
                      versions=self.numbers, outdated=outdated, group_changed=repoint, default_changed=set_default,
                      replaced=[], changed=bool(repoint or outdated or set_default), diff=diff)
        if self.check_mode or not result["changed"]:
            result["instances"] = insts
            return result
        if set_default:
            # before the group moves: instances launched from here on see the new default too
            self._call(self.ec2, "set the default version", "Cannot make version %s the default of launch template %s"
                       % (default_target, self.template["LaunchTemplateId"]), "modify_launch_template",
                       LaunchTemplateId=self.template["LaunchTemplateId"], DefaultVersion=str(default_target))
        if repoint:
            self.point(pointer)
        if outdated and self.p["replace"] == "rolling_replace":
            result["replaced"] = self.rolling_replace(outdated, target)
        elif outdated and self.p["replace"] == "instance_refresh":
            result["instance_refresh_id"], result["instance_refresh_status"] = self.instance_refresh(target)
        final = self.instances(self.group("verify the instances"))
        result["instances"] = final
        if self.p["wait"] and self.p["replace"] != "none":
            behind = [i["instance_id"] for i in final if not self.on_target(i, target)]
            if behind:
                raise AsgError("After the replacement, instance(s) %s of '%s' still do not run launch template version %s"
                               % (", ".join(behind), self.p["name"], target), "verify the instances", instances=final)
            if self.p["marker"]:
                self.write_marker(target, current)
        return result


def run_module(module):
    """Entry point of asg_launch_template; exits the module."""
    from ansible_collections.failsafe.recovery.plugins.module_utils._aws import aws_client
    version = module.params["version"]
    if version not in ("previous", "$Latest", "$Default") and not version.isdigit():
        module.fail("version must be previous, a version number, $Latest or $Default; got '%s'" % version, version=version)
    if module.params["batch_size"] < 1:
        module.fail("batch_size must be 1 or more, got %d" % module.params["batch_size"])
    default_version = module.params["default_version"] or ""
    if default_version and default_version != "target" and not default_version.isdigit():
        module.fail("default_version must be empty, target or a version number; got '%s'" % default_version)
    if not 0 <= module.params["min_healthy_percentage"] <= 100:
        module.fail("min_healthy_percentage must be between 0 and 100, got %d" % module.params["min_healthy_percentage"])
    try:
        asg = aws_client(module.params, "autoscaling")
        ec2 = aws_client(module.params, "ec2")
    except Exception as exc:  # botocore: no region, unknown profile ...
        if not is_botocore_error(exc):
            raise
        module.fail("Cannot create an AWS client: %s (set region, profile or credentials)" % exc, error=aws_error(exc))
    run = AsgRollback(asg, ec2, module.params, check_mode=module.check_mode)
    try:
        result = run.run()
    except AsgError as exc:
        facts = dict(exc.facts, name=module.params["name"])
        module.fail(exc.msg, step=exc.step, **facts)
    module.exit_json(**result)
