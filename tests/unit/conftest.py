"""Shared helpers for unit tests of modules: run main() and capture its exit JSON."""

import json

import pytest

from ansible.module_utils.testing import patch_module_args


class ModuleExit(Exception):
    """Raised instead of sys.exit by exit_json/fail_json; carries the result."""

    def __init__(self, result, failed):
        super().__init__(result)
        self.result = result
        self.failed = failed


@pytest.fixture
def run_main(monkeypatch):
    """run_main(main, args) -> (result dict, failed bool), without leaving the process."""
    from ansible.module_utils import basic

    def exit_json(self, **kwargs):
        raise ModuleExit(kwargs, False)

    def fail_json(self, msg, **kwargs):
        kwargs["msg"] = msg
        raise ModuleExit(kwargs, True)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def _run(main, args):
        with patch_module_args(args):
            with pytest.raises(ModuleExit) as info:
                main()
        json.dumps(info.value.result, default=str)  # results must be serialisable
        return info.value.result, info.value.failed

    return _run
