"""What a user installing lightray gets: a license, type information, the
metadata an index shows, and a quick start that works on a Python that
refuses global installs."""
import os
import re
import subprocess
import sys
import tarfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.timeout(120)


def test_the_source_distribution_holds_the_license_and_py_typed(tmp_path):
    # An sdist needs only setuptools (no network, no wheel package); it is built
    # from the repository's own configuration, as an index upload would be.
    build = ("import sys; from setuptools import build_meta; "
             "print(build_meta.build_sdist(sys.argv[1]))")
    work = tmp_path / "tree"
    subprocess.run(["git", "-C", REPO_ROOT, "archive", "--format=tar", "-o",
                    str(tmp_path / "tree.tar"), "HEAD"], check=True)
    with tarfile.open(tmp_path / "tree.tar") as tree:
        tree.extractall(work)
    # The working tree's own packaging files, which may be newer than HEAD.
    for name in ("setup.cfg", "pyproject.toml", "LICENSE", "README.md"):
        (work / name).write_bytes(open(os.path.join(REPO_ROOT, name), "rb").read())
    (work / "lightray" / "py.typed").touch()
    done = subprocess.run([sys.executable, "-c", build, str(tmp_path / "dist")], cwd=work,
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    (name,) = os.listdir(tmp_path / "dist")
    with tarfile.open(tmp_path / "dist" / name) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
        info = sdist.extractfile(f"{name[:-len('.tar.gz')]}/PKG-INFO").read().decode()
    assert {"LICENSE", "lightray/py.typed"} <= members
    assert "License :: OSI Approved :: Apache Software License" in info
    assert "Typing :: Typed" in info
    assert "Topic :: System :: Distributed Computing" in info


def test_the_license_is_the_apache_license_2_0():
    with open(os.path.join(REPO_ROOT, "LICENSE")) as file:
        text = file.read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_py_typed_is_package_data():
    with open(os.path.join(REPO_ROOT, "setup.cfg")) as file:
        config = file.read()
    assert re.search(r"\[options\.package_data\]\s*\nlightray = py\.typed", config)
    assert os.path.exists(os.path.join(REPO_ROOT, "lightray", "py.typed"))


def test_the_quick_start_is_two_commands_starting_with_a_virtual_environment():
    with open(os.path.join(REPO_ROOT, "README.md")) as file:
        readme = file.read()
    start = readme.index("## Quick start")
    block = readme[start:].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2
    assert commands[0].startswith("python3 -m venv .venv && . .venv/bin/activate && pip install .")


def test_the_dask_section_says_to_install_the_dask_extra():
    with open(os.path.join(REPO_ROOT, "README.md")) as file:
        readme = file.read()
    dask = readme[readme.index("## Dask on lightray"):]
    assert "pip install 'lightray[dask]'" in dask.split("```", 1)[0]
