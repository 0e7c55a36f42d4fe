"""Install the collections of collections/requirements.yml without Galaxy.

The ansible community package on PyPI carries every collection this project
uses. Download that wheel once (pip, no dependencies) and unpack only the
collections named in collections/requirements.yml, at exactly the pinned
versions, into .collections/ansible_collections/. A version mismatch stops
with a message instead of silently using something else.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

import yaml

# The community package release whose bundled collections match the pins.
ANSIBLE_PACKAGE = "ansible==12.3.0"

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = ROOT / ".collections" / "ansible_collections"
CACHE = ROOT / ".cache"


def wanted():
    data = yaml.safe_load((ROOT / "collections" / "requirements.yml").read_text())
    return {c["name"]: str(c["version"]) for c in data["collections"]}


def wheel():
    CACHE.mkdir(exist_ok=True)
    found = sorted(CACHE.glob("ansible-*-py3-none-any.whl"))
    version = ANSIBLE_PACKAGE.split("==")[1]
    found = [w for w in found if w.name.startswith("ansible-%s-" % version)]
    if found:
        return found[0]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--dest", str(CACHE), ANSIBLE_PACKAGE], check=True)
    return sorted(CACHE.glob("ansible-%s-*.whl" % version))[0]


def main():
    pins = wanted()
    with zipfile.ZipFile(wheel()) as zf:
        names = zf.namelist()
        for fqcn, version in sorted(pins.items()):
            ns, name = fqcn.split(".")
            prefix = "ansible_collections/%s/%s/" % (ns, name)
            manifest = json.loads(zf.read(prefix + "MANIFEST.json"))
            have = manifest["collection_info"]["version"]
            if have != version:
                sys.exit("%s: %s carries %s but collections/requirements.yml pins %s; "
                         "change ANSIBLE_PACKAGE or the pin" % (fqcn, ANSIBLE_PACKAGE, have, version))
            dest = TARGET / ns / name
            if dest.exists():
                shutil.rmtree(dest)
            with tempfile.TemporaryDirectory(dir=ROOT / ".collections") as tmp:
                members = [n for n in names if n.startswith(prefix)]
                zf.extractall(tmp, members)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(pathlib.Path(tmp) / prefix), str(dest))
            print("%s %s" % (fqcn, version))


if __name__ == "__main__":
    main()
