"""Runtime environments: env_vars, working_dir and py_modules of a task, an
actor or a whole driver, applied where the task runs, on any node."""
import base64
import hashlib
import os
import shutil
import zipfile

import pytest

import lightray
from lightray import NodeAffinity, runtime_env

pytestmark = pytest.mark.timeout(120)


@lightray.remote
def env_var(name):
    return os.environ.get(name)


@lightray.remote
def read(path):
    with open(path) as file:
        return file.read()


@lightray.remote
def import_value(module):
    import importlib
    return importlib.import_module(module).VALUE


@lightray.remote
def where():
    return os.getcwd(), lightray.get_runtime_context().node_id


@lightray.remote
def nested_env_var(name):
    return lightray.get(env_var.remote(name), timeout=30)


@lightray.remote
class EnvReader:
    def get(self, name):
        return os.environ.get(name)

    def read(self, path):
        with open(path) as file:
            return file.read()


@pytest.fixture
def one_cpu():
    lightray.init(num_cpus=1)
    yield
    lightray.shutdown()


def make_project(root, text="from the working dir"):
    root.mkdir()
    (root / "data.txt").write_text(text)
    (root / "helper_mod.py").write_text("VALUE = 'helper'\n")
    return root


# -------------------------------------------------------------- env_vars

def test_a_task_sees_its_env_vars_and_the_next_task_on_the_worker_does_not(one_cpu):
    with_env = env_var.options(runtime_env={"env_vars": {"LR_TEST_COLOR": "blue"}})
    assert lightray.get(with_env.remote("LR_TEST_COLOR"), timeout=30) == "blue"
    # One CPU: the same worker; the variable was put back as it was.
    assert lightray.get(env_var.remote("LR_TEST_COLOR"), timeout=30) is None


def test_an_actor_sees_its_env_vars_for_its_whole_life(one_cpu):
    reader = EnvReader.options(runtime_env={"env_vars": {"LR_TEST_ROLE": "actor"}}).remote()
    assert lightray.get([reader.get.remote("LR_TEST_ROLE") for _ in range(3)],
                        timeout=30) == ["actor"] * 3


def test_init_runtime_env_applies_to_every_task_and_a_task_s_own_is_merged_over_it():
    lightray.init(num_cpus=1, runtime_env={"env_vars": {"LR_A": "job", "LR_B": "job"}})
    try:
        assert lightray.get(env_var.remote("LR_A"), timeout=30) == "job"
        mine = env_var.options(runtime_env={"env_vars": {"LR_B": "task"}})
        assert lightray.get([mine.remote("LR_A"), mine.remote("LR_B")],
                            timeout=30) == ["job", "task"]
    finally:
        lightray.shutdown()
    assert runtime_env.effective(None) is None   # gone with the session


def test_tasks_submitted_inside_a_task_inherit_its_env_vars():
    lightray.init(num_cpus=2)
    try:
        outer = nested_env_var.options(runtime_env={"env_vars": {"LR_TEST_DEPTH": "inherited"}})
        assert lightray.get(outer.remote("LR_TEST_DEPTH"), timeout=60) == "inherited"
    finally:
        lightray.shutdown()


# ------------------------------------------------------------ working_dir

def test_a_task_runs_in_its_working_dir_and_imports_from_it(one_cpu, tmp_path):
    project = make_project(tmp_path / "project")
    env = {"working_dir": str(project)}
    assert lightray.get(read.options(runtime_env=env).remote("data.txt"),
                        timeout=30) == "from the working dir"
    assert lightray.get(import_value.options(runtime_env=env).remote("helper_mod"),
                        timeout=30) == "helper"
    cwd, _ = lightray.get(where.options(runtime_env=env).remote(), timeout=30)
    assert cwd.startswith(runtime_env.cache_root()) and cwd != str(project)
    # Put back: the next task runs where workers run.
    assert lightray.get(where.remote(), timeout=30)[0] != cwd


def test_a_working_dir_zip_file_is_unpacked_as_the_working_dir(one_cpu, tmp_path):
    archive = tmp_path / "project.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("data.txt", "from the zip")
    reader = read.options(runtime_env={"working_dir": str(archive)})
    assert lightray.get(reader.remote("data.txt"), timeout=30) == "from the zip"


def test_a_working_dir_is_extracted_once_per_host_by_content_hash(one_cpu, tmp_path):
    project = make_project(tmp_path / "project")
    env = {"working_dir": str(project)}
    first = lightray.get(where.options(runtime_env=env).remote(), timeout=30)[0]
    marker = os.path.join(first, "extracted-once")
    open(marker, "w").close()
    second = lightray.get(where.options(runtime_env=env).remote(), timeout=30)[0]
    assert second == first and os.path.exists(marker)
    # Other content, another directory.
    (project / "data.txt").write_text("changed")
    third = lightray.get(where.options(runtime_env=env).remote(), timeout=30)[0]
    assert third != first
    assert lightray.get(read.options(runtime_env=env).remote("data.txt"), timeout=30) == "changed"


def test_an_actor_reads_files_of_its_working_dir(one_cpu, tmp_path):
    project = make_project(tmp_path / "project", text="actor's file")
    reader = EnvReader.options(runtime_env={"working_dir": str(project)}).remote()
    assert lightray.get(reader.read.remote("data.txt"), timeout=30) == "actor's file"


def test_a_working_dir_is_shipped_to_another_node_through_the_object_store(cluster, tmp_path):
    project = make_project(tmp_path / "project")
    blob = os.urandom(300 << 10)           # large enough for shared memory
    (project / "blob.bin").write_bytes(blob)
    other = cluster.nodes[2]

    @lightray.remote
    def digest_of(path):
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest(), lightray.get_runtime_context().node_id

    task = digest_of.options(runtime_env={"working_dir": str(project)},
                             scheduling_strategy=NodeAffinity(other.node_id))
    assert lightray.get(task.remote("blob.bin"), timeout=60) == (
        hashlib.sha256(blob).hexdigest(), other.node_id)


# ------------------------------------------------------------- py_modules

def test_py_modules_make_packages_and_files_importable(one_cpu, tmp_path):
    package = tmp_path / "lr_test_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 'package'\n")
    single = tmp_path / "lr_test_single.py"
    single.write_text("VALUE = 'single file'\n")
    env = {"py_modules": [str(package), str(single)]}
    assert lightray.get(import_value.options(runtime_env=env).remote("lr_test_pkg"),
                        timeout=30) == "package"
    assert lightray.get(import_value.options(runtime_env=env).remote("lr_test_single"),
                        timeout=30) == "single file"


# ------------------------------------------------------ refused at once

def test_an_unknown_runtime_env_key_is_an_error_naming_the_supported_ones():
    with pytest.raises(ValueError, match="unknown runtime_env key 'env_var'.*env_vars, "
                                         "working_dir, py_modules"):
        env_var.options(runtime_env={"env_var": {"A": "1"}})
    with pytest.raises(ValueError, match="unknown init.*key 'workdir'"):
        lightray.init(num_cpus=1, runtime_env={"workdir": "."})
    assert not lightray.is_initialized()


@pytest.mark.parametrize("key", ["conda", "container"])
def test_conda_and_containers_are_refused_not_ignored(key):
    with pytest.raises(ValueError, match=f"'{key}'.* is not supported"):
        env_var.options(runtime_env={key: ["requests"]})
    with pytest.raises(ValueError, match="is not supported"):
        EnvReader.options(runtime_env={key: ["requests"]})


def test_bad_runtime_env_values_are_named(tmp_path):
    with pytest.raises(TypeError, match="env_vars"):
        env_var.options(runtime_env={"env_vars": {"A": 1}})
    with pytest.raises(ValueError, match="does not exist"):
        env_var.options(runtime_env={"working_dir": str(tmp_path / "missing")})
    with pytest.raises(TypeError, match="must be a dict"):
        env_var.options(runtime_env=["env_vars"])
    with pytest.raises(ValueError, match="pip or uv, not both"):
        env_var.options(runtime_env={"pip": ["a"], "uv": ["a"]})
    with pytest.raises(ValueError, match="names no requirement"):
        env_var.options(runtime_env={"pip": []})
    with pytest.raises(TypeError, match="list of requirement strings"):
        env_var.options(runtime_env={"pip": [1]})


def test_memory_is_refused_rather_than_dropped():
    with pytest.raises(ValueError, match="memory= is not supported"):
        env_var.options(memory=1 << 30)
    with pytest.raises(ValueError, match="memory= is not supported"):
        EnvReader.options(memory=1 << 30)
    env_var.options(memory=None)   # Ray's default: nothing asked, nothing refused


# ------------------------------------------------------------------- pip

def tiny_wheel(folder, name="lr_tiny", version="0.1", value="from the wheel"):
    """A wheel of a one-module package, written by hand (no build tools, no
    index): the module, and the dist-info pip reads."""
    folder.mkdir(exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: lightray-test\n"
                         "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.mark.timeout(300)
def test_pip_requirements_are_installed_once_per_host_and_only_its_tasks_import_them(
        one_cpu, tmp_path):
    wheels = tmp_path / "wheels"
    tiny_wheel(wheels)
    env = {"pip": ["--no-index", f"--find-links {wheels}", "lr_tiny==0.1"]}
    assert lightray.get(import_value.options(runtime_env=env).remote("lr_tiny"),
                        timeout=240) == "from the wheel"
    installs = os.listdir(os.path.join(runtime_env.cache_root(), "pip"))
    assert lightray.get(import_value.options(runtime_env=env).remote("lr_tiny"),
                        timeout=60) == "from the wheel"
    assert os.listdir(os.path.join(runtime_env.cache_root(), "pip")) == installs
    # The same worker (one CPU), a task without the environment: not importable.
    with pytest.raises(ModuleNotFoundError):
        lightray.get(import_value.remote("lr_tiny"), timeout=60)

    @lightray.remote
    def value_in_task():
        import lr_tiny
        return lr_tiny.VALUE

    assert lightray.get(value_in_task.options(runtime_env={"pip": {"packages": env["pip"]}})
                        .remote(), timeout=60) == "from the wheel"


@pytest.mark.timeout(300)
def test_a_requirement_pip_cannot_install_fails_the_task_with_pip_s_reason(one_cpu, tmp_path):
    (tmp_path / "empty").mkdir()
    env = {"pip": ["--no-index", f"--find-links {tmp_path / 'empty'}", "lr_missing_pkg==9"]}
    with pytest.raises(runtime_env.RuntimeEnvSetupError, match="lr_missing_pkg"):
        lightray.get(env_var.options(runtime_env=env).remote("HOME"), timeout=240)


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed here")
@pytest.mark.timeout(300)
def test_uv_requirements_are_installed_like_pip_s(one_cpu, tmp_path):
    wheels = tmp_path / "wheels"
    tiny_wheel(wheels, name="lr_tiny_uv", value="from uv")
    env = {"uv": ["--no-index", f"--find-links {wheels}", "lr_tiny_uv==0.1"]}
    assert lightray.get(import_value.options(runtime_env=env).remote("lr_tiny_uv"),
                        timeout=240) == "from uv"


def test_a_task_or_actor_runtime_env_is_refused_in_local_mode_not_ignored():
    lightray.init(local_mode=True, num_cpus=1)
    try:
        @lightray.remote(runtime_env={"env_vars": {"LR_LOCAL_ENV": "1"}})
        def reads_env():
            return os.environ.get("LR_LOCAL_ENV")

        @lightray.remote
        class Reader:
            def read(self):
                return os.environ.get("LR_LOCAL_ENV")

        with pytest.raises(ValueError, match="runtime_env cannot be used with local_mode=True"):
            reads_env.remote()
        with pytest.raises(ValueError, match="runtime_env cannot be used with local_mode=True"):
            Reader.options(runtime_env={"env_vars": {"LR_LOCAL_ENV": "1"}}).remote()
        assert lightray.get(reads_env.options(runtime_env=None).remote()) is None
        assert lightray.get(Reader.remote().read.remote()) is None
    finally:
        lightray.shutdown()
