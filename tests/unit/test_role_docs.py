"""Each role's meta/argument_specs.yml, defaults/main.yml and README.md agree, so drift fails the suite.

For every role under roles/:
- the argument specs exist, and an option shared by several entry points is the same in each;
- defaults/main.yml holds exactly the options that have a default, with the same value (a required option has
  no default: role argument validation reads role defaults, so one there would make ``required`` a no-op);
- the README's ``## Variables`` table lists exactly the options, each with the spec's type and default;
- the README names no ``<role>_*`` variable that is neither an option nor a result the role or a playbook sets.

The table of a role is rendered from its specs with ``python tests/unit/test_role_docs.py ROLE``.
"""

import pathlib
import re
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROLES_DIR = ROOT / "roles"
ROLES = sorted(path.name for path in ROLES_DIR.iterdir() if path.is_dir())
REQUIRED = "required"
NO_DEFAULT = "—"
MARKUP = re.compile(r"\b([OCVMIBEPU])\(([^)]*)\)")
LINK = re.compile(r"\bL\(([^,)]*),\s*([^)]*)\)")
CELL_SPLIT = re.compile(r"(?<!\\)\|")


def load_yaml(path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def entry_points(role):
    path = ROLES_DIR / role / "meta" / "argument_specs.yml"
    if not path.is_file():
        pytest.fail("roles/%s has no meta/argument_specs.yml: add one with every variable of defaults/main.yml" % role)
    return (load_yaml(path) or {}).get("argument_specs") or {}


def options(role):
    """{name: (option spec, [entry points])} over all entry points (the first definition wins)."""
    found = {}
    for entry, spec in entry_points(role).items():
        for name, option in ((spec or {}).get("options") or {}).items():
            found.setdefault(name, (option, []))[1].append(entry)
    return found


def defaults(role):
    path = ROLES_DIR / role / "defaults" / "main.yml"
    return (load_yaml(path) or {}) if path.is_file() else {}


def type_of(option):
    kind = option.get("type", "str")
    return "%s/%s" % (kind, option["elements"]) if option.get("elements") else kind


class _Dumper(yaml.SafeDumper):
    """Flow YAML for table cells; a string holding a single quote is double-quoted (readable Jinja defaults)."""


def _represent_str(dumper, value):
    style = '"' if "'" in value and '"' not in value and "\\" not in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def render_default(option):
    if option.get("required"):
        return REQUIRED
    if "default" not in option:
        return NO_DEFAULT
    text = yaml.dump(option["default"], Dumper=_Dumper, default_flow_style=True, sort_keys=False, width=10 ** 6,
                     allow_unicode=True).strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    return "`%s`" % text.replace("|", "\\|")


def parse_default(cell):
    """REQUIRED, NO_DEFAULT or ("value", value) from a README table cell."""
    cell = cell.strip()
    if cell in (REQUIRED, NO_DEFAULT):
        return cell
    match = re.fullmatch(r"`(.*)`", cell)
    if not match:
        return ("unparsable", cell)
    return ("value", yaml.safe_load(match.group(1).replace("\\|", "|")))


def expected_default(option):
    if option.get("required"):
        return REQUIRED
    if "default" not in option:
        return NO_DEFAULT
    return ("value", option["default"])


def plain(text):
    """Ansible doc markup to Markdown, on one line, safe inside a table cell."""
    if isinstance(text, list):
        text = " ".join(text)
    text = LINK.sub(r"[\1](\2)", " ".join(str(text or "").split()))

    def one(match):
        kind, value = match.groups()
        if kind == "I":
            return "*%s*" % value
        if kind == "B":
            return "**%s**" % value
        if kind == "U":
            return value
        return "`%s`" % value

    return MARKUP.sub(one, text).replace("|", "\\|")


def render_table(role):
    """The README ``## Variables`` table rendered from the role's argument specs."""
    found = options(role)
    several = len(entry_points(role)) > 1
    header = ["Variable", "Type", "Default"] + (["Entry points"] if several else []) + ["Description"]
    lines = ["| %s |" % " | ".join(header), "|%s" % ("---|" * len(header))]
    for name, (option, entries) in found.items():
        description = plain(option.get("description"))
        if option.get("choices"):
            description += " Choices: %s." % ", ".join("`%s`" % choice if choice != "" else "`''`"
                                                       for choice in option["choices"])
        row = ["`%s`" % name, type_of(option), render_default(option)]
        if several:
            row.append(", ".join(entries))
        lines.append("| %s |" % " | ".join(row + [description.strip()]))
    return "\n".join(lines)


def readme_table(role):
    """{name: {column: cell}} from the table under the README's ``## Variables`` heading."""
    path = ROLES_DIR / role / "README.md"
    if not path.is_file():
        pytest.fail("roles/%s has no README.md" % role)
    section = re.search(r"^## Variables\s*$(.*?)(?=^## |\Z)", path.read_text(encoding="utf-8"), re.M | re.S)
    if not section:
        pytest.fail("roles/%s/README.md has no '## Variables' section (render it with: "
                    "python tests/unit/test_role_docs.py %s)" % (role, role))
    rows = [line.strip() for line in section.group(1).splitlines() if line.strip().startswith("|")]
    if len(rows) < 2:
        pytest.fail("roles/%s/README.md: the Variables section has no table" % role)

    def cells(line):
        return [cell.strip() for cell in CELL_SPLIT.split(line.strip().strip("|"))]

    header = cells(rows[0])
    table = {}
    for line in rows[2:]:
        row = dict(zip(header, cells(line)))
        names = re.findall(r"`([^`]+)`", row.get("Variable", ""))
        assert len(names) == 1, "roles/%s/README.md: one variable per row, got %r" % (role, line)
        assert names[0] not in table, "roles/%s/README.md lists %s twice" % (role, names[0])
        table[names[0]] = row
    return table


def results(role):
    """Names starting like the role's variables that are not inputs: results set or registered by the role's
    tasks or published by a playbook (set_stats), string values of the tasks (a default database name), and the
    collection's modules (incident_report)."""
    prefix = re.escape(role) + r"_\w+"
    found = set()
    sources = list((ROLES_DIR / role).glob("tasks/**/*.yml")) + list((ROOT / "playbooks").glob("**/*.yml"))
    for path in sources:
        text = path.read_text(encoding="utf-8")
        found.update(re.findall(r"^\s*(%s):" % prefix, text, re.M))
        found.update(re.findall(r"\bregister:\s*(%s)\b" % prefix, text))
        found.update(re.findall(r"""['"](%s)['"]""" % prefix, text))
    found.update(path.stem for path in (ROOT / "plugins" / "modules").glob("*.py"))
    return found


@pytest.mark.parametrize("role", ROLES)
def test_shared_options_agree(role):
    """An option of several entry points has one meaning: same type, default and required everywhere."""
    specs = {}
    for entry, spec in entry_points(role).items():
        for name, option in ((spec or {}).get("options") or {}).items():
            specs.setdefault(name, []).append((entry, option))
    for name, defs in specs.items():
        first_entry, first = defs[0]
        for entry, option in defs[1:]:
            for key in ("type", "elements", "default", "required", "choices"):
                assert option.get(key) == first.get(key), (
                    "roles/%s: %s differs between entry points %s and %s in %s"
                    % (role, name, first_entry, entry, key))


@pytest.mark.parametrize("role", ROLES)
def test_defaults_match_argument_specs(role):
    found = options(role)
    values = defaults(role)
    problems = []
    for name, value in values.items():
        if name not in found:
            problems.append("%s is in defaults/main.yml but not in meta/argument_specs.yml" % name)
            continue
        option = found[name][0]
        if option.get("required"):
            problems.append("%s is required in the specs but has a value in defaults/main.yml (%r), so a play "
                            "that does not set it passes argument validation" % (name, value))
        elif "default" not in option and value is not None:
            problems.append("%s: defaults/main.yml has %r, the specs no default" % (name, value))
        elif "default" in option and option["default"] != value:
            problems.append("%s: defaults/main.yml has %r, the specs %r" % (name, value, option["default"]))
    for name, (option, _entries) in found.items():
        if "default" in option and name not in values:
            problems.append("%s has a default in the specs (%r) but none in defaults/main.yml"
                            % (name, option["default"]))
    assert not problems, "roles/%s:\n  %s" % (role, "\n  ".join(problems))


@pytest.mark.parametrize("role", ROLES)
def test_readme_documents_every_option(role):
    found = options(role)
    table = readme_table(role)
    problems = ["%s is in meta/argument_specs.yml but not in the README's table" % name
                for name in found if name not in table]
    problems += ["%s is in the README's table but not in meta/argument_specs.yml" % name
                 for name in table if name not in found]
    for name in set(found) & set(table):
        option, row = found[name][0], table[name]
        if parse_default(row.get("Default", "")) != expected_default(option):
            problems.append("%s: the README's default is %s, the specs' %s"
                            % (name, row.get("Default"), render_default(option)))
        if row.get("Type") != type_of(option):
            problems.append("%s: the README's type is %s, the specs' %s" % (name, row.get("Type"), type_of(option)))
    assert not problems, "roles/%s/README.md (render the table with: python tests/unit/test_role_docs.py %s):\n  %s" % (
        role, role, "\n  ".join(sorted(problems)))


@pytest.mark.parametrize("role", ROLES)
def test_readme_names_no_unknown_variable(role):
    path = ROLES_DIR / role / "README.md"
    if not path.is_file():
        pytest.fail("roles/%s has no README.md" % role)
    text = path.read_text(encoding="utf-8")
    # A wildcard such as `<role>_failback_*` names a group of options, not one variable.
    named = set(re.findall(r"\b(%s_\w+)(?![\w*])" % re.escape(role), text))
    unknown = sorted(named - set(options(role)) - results(role))
    assert not unknown, ("roles/%s/README.md names %s, neither an option in meta/argument_specs.yml nor a result the "
                         "role or a playbook sets" % (role, ", ".join(unknown)))


def test_render_table_round_trips():
    """The rendered table parses back to the specs' names, types and defaults (defaults with | and Jinja)."""
    for role in ROLES:
        if not (ROLES_DIR / role / "meta" / "argument_specs.yml").is_file():
            continue
        rendered = render_table(role)
        header = [cell.strip() for cell in rendered.splitlines()[0].strip("|").split("|")]
        for line, (name, (option, _entries)) in zip(rendered.splitlines()[2:], options(role).items()):
            row = dict(zip(header, [cell.strip() for cell in CELL_SPLIT.split(line.strip().strip("|"))]))
            assert row["Variable"] == "`%s`" % name
            assert parse_default(row["Default"]) == expected_default(option), (role, name, row["Default"])


if __name__ == "__main__":
    for arg in sys.argv[1:] or ROLES:
        print("## Variables\n\n%s\n" % render_table(arg))
