"""Runtime environments: ``runtime_env={...}`` of a task, an actor, or a whole
driver (``init(runtime_env=...)``).

    driver: parse() ── working_dir / py_modules zipped (deterministically) ──▶ Package
            (content hash) ── put once per process ──▶ an ObjectRef per package
            f.remote(*args) ──▶ the exported function is run_task_in_env(f, ...) and the
            arguments are (env spec, package refs..., *args): the packages travel as
            ordinary task arguments, through the object store, to whichever node runs it
    worker: run_task_in_env ── each package extracted once per host into
            <temp dir>/runtime_env/<hash> (cached by content hash) ── env_vars set,
            cwd = working_dir, working_dir and py_modules on sys.path ── f(*args)
            ── pip / uv: the requirements installed once per host and requirement set
            (`pip install --target`, under a lock) into <temp dir>/runtime_env/pip/<hash>,
            put first on sys.path ── all put back as it was, modules imported from
            those directories forgotten (the worker serves other tasks next)
            an actor: make_actor_in_env ── the same, for the actor's whole life

Supported keys: ``env_vars`` (str -> str), ``working_dir`` (a local directory
or .zip file), ``py_modules`` (a list of package directories, .py files, or
.zip/.whl files), ``pip`` or ``uv`` (a list of requirement lines, options
such as ``--no-index`` and ``--find-links DIR`` included, a requirements
file's path, or ``{"packages": [...]}``). Any other key is an error naming
these; ``conda`` and containers are refused. The packages of pip/uv are
installed for the worker's own interpreter: a module the worker imported
already (numpy, say) keeps the version it has.

A task's environment is merged over the driver's (init(runtime_env=...)):
its env_vars over the driver's, its working_dir and py_modules instead of
the driver's. Tasks and actors submitted while a runtime environment is
applied (from inside a task or actor) inherit it.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile

from .config import runtime_env_install_timeout, temp_dir
from .exceptions import LightrayError
from .log import get_logger

_log = get_logger("runtime_env")


class RuntimeEnvSetupError(LightrayError):
    """A task's runtime environment could not be set up where it was to run
    (its pip/uv requirements did not install)."""

SUPPORTED_KEYS = ("env_vars", "working_dir", "py_modules", "pip", "uv")
_NOT_BUILT = ("conda", "container", "image_uri")
MAX_PACKAGE_BYTES = 512 << 20
_SKIPPED_DIRS = ("__pycache__", ".git")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)     # zip entries' date: the same tree, the same bytes


class Package:
    """A directory or file zipped; named by the hash of its bytes."""

    __slots__ = ("digest", "data", "source")

    def __init__(self, data, source: str, digest: str | None = None):
        self.data = data            # bytes (or a buffer of them, as a worker received it)
        self.digest = digest or hashlib.blake2b(data, digest_size=16).hexdigest()
        self.source = source        # the path it was made from (for messages)


class RuntimeEnv:
    """A validated runtime environment, its files packaged."""

    __slots__ = ("env_vars", "working_dir", "py_modules", "requirements")

    def __init__(self, env_vars: dict, working_dir: Package | None, py_modules: list,
                 requirements=None):
        self.env_vars = env_vars            # str -> str
        self.working_dir = working_dir      # Package or None
        self.py_modules = py_modules        # [Package]
        self.requirements = requirements    # None, or ("pip" | "uv", (requirement line, ...))

    def packages(self) -> list:
        """The packages, in the order their refs follow the env spec."""
        return ([self.working_dir] if self.working_dir is not None else []) + self.py_modules

    def spec(self) -> tuple:
        """What travels with each task: (env_vars, working_dir hash or None,
        [module hashes], requirements or None)."""
        return (dict(self.env_vars), self.working_dir and self.working_dir.digest,
                [p.digest for p in self.py_modules], self.requirements)


def parse(runtime_env, what: str = "runtime_env") -> RuntimeEnv | None:
    """A RuntimeEnv from the dict a user gave (None: none); ValueError or
    TypeError naming the problem."""
    if runtime_env is None:
        return None
    if not isinstance(runtime_env, dict):
        raise TypeError(f"{what} must be a dict, got {type(runtime_env).__name__}")
    for key in runtime_env:
        if key in _NOT_BUILT:
            raise ValueError(
                f"{what}[{key!r}] is not supported: this lightray does not build conda "
                f"environments or containers (a worker runs the interpreter of its agent); "
                f"use pip or uv, or ship pure-Python code with py_modules. "
                f"Supported keys: {', '.join(SUPPORTED_KEYS)}")
        if key not in SUPPORTED_KEYS:
            raise ValueError(f"unknown {what} key {key!r}; supported keys: "
                             f"{', '.join(SUPPORTED_KEYS)}")
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k
            for k, v in env_vars.items()):
        raise TypeError(f"{what}['env_vars'] must be a dict of str names (no '=') to str "
                        f"values, got {env_vars!r:.200}")
    working_dir = runtime_env.get("working_dir")
    if working_dir is not None:
        working_dir = _package(working_dir, f"{what}['working_dir']", as_module=False)
    py_modules = runtime_env.get("py_modules") or []
    if not isinstance(py_modules, (list, tuple)):
        raise TypeError(f"{what}['py_modules'] must be a list of paths, got "
                        f"{type(py_modules).__name__}")
    modules = [_package(path, f"{what}['py_modules']", as_module=True) for path in py_modules]
    if "pip" in runtime_env and "uv" in runtime_env:
        raise ValueError(f"{what} takes pip or uv, not both")
    requirements = None
    for tool in ("pip", "uv"):
        if runtime_env.get(tool) is not None:
            requirements = (tool, _requirement_lines(runtime_env[tool], f"{what}[{tool!r}]"))
    if not env_vars and working_dir is None and not modules and requirements is None:
        return None
    return RuntimeEnv(dict(env_vars), working_dir, modules, requirements)


def _requirement_lines(value, what: str) -> tuple:
    """The lines of a requirements file, from a list of them, a dict with
    "packages", or the path of a requirements file (read here, in the driver)."""
    if isinstance(value, dict):
        unknown = set(value) - {"packages"}
        if unknown:
            raise ValueError(f"{what}: unknown key(s) {sorted(unknown)}; give "
                             "{'packages': [...]}")
        value = value.get("packages")
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        try:
            with open(path) as file:
                value = [line.strip() for line in file]
        except OSError as error:
            raise ValueError(f"{what}: cannot read the requirements file {path}: "
                             f"{error.strerror}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} must be a list of requirement strings, a requirements "
                        f"file's path or {{'packages': [...]}}, got {value!r:.200}")
    lines = tuple(v.strip() for v in value if v.strip() and not v.strip().startswith("#"))
    if any("\n" in line for line in lines):
        raise ValueError(f"{what}: a requirement may not hold a newline")
    if not lines:
        raise ValueError(f"{what} names no requirement")
    return lines


def merge(outer: RuntimeEnv | None, inner: RuntimeEnv | None) -> RuntimeEnv | None:
    """inner (a task's) over outer (the driver's): env_vars merged, files replaced."""
    if outer is None or inner is None:
        return inner or outer
    return RuntimeEnv({**outer.env_vars, **inner.env_vars},
                      inner.working_dir if inner.working_dir is not None else outer.working_dir,
                      inner.py_modules or outer.py_modules,
                      inner.requirements or outer.requirements)


# ------------------------------------------------------------ the default

_job_env: RuntimeEnv | None = None        # init(runtime_env=...) of this driver
_applied_env: RuntimeEnv | None = None    # the environment the running task was given


def set_job_env(env: RuntimeEnv | None) -> None:
    global _job_env
    _job_env = env


def refuse_in_local_mode(env: RuntimeEnv | None, what: str) -> None:
    """Local mode runs everything in this process, with its environment:
    a runtime_env given there would be silently ignored, so it is refused."""
    if env is not None:
        raise ValueError(f"runtime_env cannot be used with local_mode=True ({what}): local mode "
                         "runs every task and actor in this process, with its own environment")


def effective(env: RuntimeEnv | None) -> RuntimeEnv | None:
    """What a task or actor submitted now runs with: its own over the
    environment applied here (inside a task), else over the driver's."""
    return merge(_applied_env if _applied_env is not None else _job_env, env)


# ------------------------------------------------------------ packaging

def _package(path, what: str, as_module: bool) -> Package:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path, got {type(path).__name__}: {path!r:.80}")
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        return Package(_zip_tree(path, os.path.basename(path) if as_module else "", what), path)
    if os.path.isfile(path):
        if path.endswith((".zip", ".whl")):
            if not zipfile.is_zipfile(path):
                raise ValueError(f"{what}: {path} is not a zip file")
            _check_size(os.path.getsize(path), path, what)
            with open(path, "rb") as file:
                return Package(file.read(), path)
        if as_module and path.endswith(".py"):
            return Package(_zip_files([(path, os.path.basename(path))], path, what), path)
        raise ValueError(f"{what}: {path} is not a directory" +
                         (", a .py file" if as_module else "") + " or a .zip file")
    raise ValueError(f"{what}: {path} does not exist")


def _zip_tree(root: str, prefix: str, what: str) -> bytes:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in sorted(names):
            full = os.path.join(folder, name)
            if os.path.isfile(full):
                files.append((full, os.path.join(prefix, os.path.relpath(full, root))))
    return _zip_files(files, root, what)


def _zip_files(files: list, source: str, what: str) -> bytes:
    _check_size(sum(os.path.getsize(full) for full, _ in files), source, what)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for full, name in files:
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.external_attr = (os.stat(full).st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(full, "rb") as file:
                archive.writestr(info, file.read())
    return buffer.getvalue()


def _check_size(size: int, source: str, what: str) -> None:
    if size > MAX_PACKAGE_BYTES:
        raise ValueError(f"{what}: {source} holds {size} bytes, more than the {MAX_PACKAGE_BYTES} "
                         "a runtime environment ships; put large data in the object store")


# ------------------------------------------------------------ in the worker

def cache_root() -> str:
    return os.path.join(temp_dir(), "runtime_env")


def extracted(digest: str, data) -> str:
    """The directory package digest is extracted in on this host, extracting
    data (its bytes) the first time; concurrent workers may race: each
    extracts into a folder of its own, the first rename wins."""
    root = cache_root()
    target = os.path.join(root, digest)
    if os.path.isdir(target):
        return target
    os.makedirs(root, mode=0o700, exist_ok=True)
    scratch = f"{target}.{os.getpid()}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    payload = bytes(data)
    if hashlib.blake2b(payload, digest_size=16).hexdigest() != digest:
        raise ValueError(f"runtime environment package {digest}: its bytes do not match its hash")
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        archive.extractall(scratch)    # (extractall drops absolute and ".." parts of names)
    try:
        os.rename(scratch, target)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)   # another worker was first
        if not os.path.isdir(target):
            raise
    return target


def installed(requirements) -> str:
    """The directory requirements (("pip" | "uv", lines)) are installed in on
    this host for this interpreter, installing them the first time (slow:
    said in the log). Workers asking at once wait for the first one's lock."""
    tool, lines = requirements
    key = "\n".join((tool, sys.executable, sys.version, *lines))
    root = os.path.join(cache_root(), "pip")
    target = os.path.join(root, hashlib.blake2b(key.encode(), digest_size=16).hexdigest())
    if os.path.isdir(target):
        return target
    os.makedirs(root, mode=0o700, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(target):
            return target
        _install(tool, lines, target)
    return target


def _install(tool: str, lines: tuple, target: str) -> None:
    scratch = f"{target}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    requirements_file = f"{target}.requirements.txt"
    with open(requirements_file, "w") as file:
        file.write("\n".join(lines) + "\n")
    if tool == "uv":
        uv = shutil.which("uv")
        if uv is None:
            raise RuntimeEnvSetupError("runtime_env['uv']: the uv command is not installed "
                                       "where this task runs (use pip instead, or install uv)")
        command = [uv, "pip", "install", "--python", sys.executable, "--target", scratch,
                   "-r", requirements_file]
    else:
        command = [sys.executable, "-m", "pip", "install", "--target", scratch,
                   "--disable-pip-version-check", "--no-warn-script-location",
                   "-r", requirements_file]
    timeout = runtime_env_install_timeout()
    _log.warning("runtime_env %s: installing %s into %s, the first time on this host "
                 "(slow: it is cached for later tasks)", tool, " ".join(lines), target)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        shutil.rmtree(scratch, ignore_errors=True)
        raise RuntimeEnvSetupError(f"runtime_env[{tool!r}]: installing {list(lines)} took "
                                   f"more than {timeout:g} s (LIGHTRAY_RUNTIME_ENV_INSTALL_"
                                   "TIMEOUT)") from None
    if done.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise RuntimeEnvSetupError(f"runtime_env[{tool!r}]: {tool} could not install "
                                   f"{list(lines)} (exit status {done.returncode}):\n{tail}")
    os.rename(scratch, target)


class _Applied:
    """An environment applied to this process; undo() puts everything back."""

    def __init__(self, spec: tuple, packages: tuple):
        global _applied_env
        env_vars, working_dir, modules, requirements = spec
        self.saved_env = {name: os.environ.get(name) for name in env_vars}
        self.saved_cwd = None
        self.saved_applied = _applied_env
        self.paths = []
        os.environ.update(env_vars)
        directories = [extracted(digest, data) for digest, data in
                       zip(([working_dir] if working_dir else []) + list(modules), packages)]
        if requirements is not None:
            directories.append(installed(requirements))
        if working_dir:
            self.saved_cwd = os.getcwd()
            os.chdir(directories[0])
        for directory in directories:
            sys.path.insert(0, directory)
            self.paths.append(directory)
        # Submissions from inside inherit this environment (its packages
        # are put again by this process, once each).
        received = [Package(data, f"package {digest}", digest) for digest, data in
                    zip(([working_dir] if working_dir else []) + list(modules), packages)]
        _applied_env = RuntimeEnv(dict(env_vars), received[0] if working_dir else None,
                                  received[1:] if working_dir else received, requirements)

    def undo(self) -> None:
        global _applied_env
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self.saved_cwd is not None:
            os.chdir(self.saved_cwd)
        for directory in self.paths:
            try:
                sys.path.remove(directory)
            except ValueError:
                pass
        # Modules imported from those directories would stay importable (in
        # sys.modules) for the next task, which was not given them.
        prefixes = tuple(os.path.join(directory, "") for directory in self.paths)
        if prefixes:
            for name, module in list(sys.modules.items()):
                if (getattr(module, "__file__", None) or "").startswith(prefixes):
                    del sys.modules[name]
        _applied_env = self.saved_applied


def _split(spec, rest):
    count = (1 if spec[1] else 0) + len(spec[2])
    return rest[:count], rest[count:]


def run_task_in_env(function, spec, *rest, **kwargs):
    """A task run with its runtime environment applied, then undone."""
    packages, args = _split(spec, rest)
    applied = _Applied(spec, packages)
    try:
        return function(*args, **kwargs)
    finally:
        applied.undo()


def make_actor_in_env(cls, spec, *rest, **kwargs):
    """An actor's instance, built with its runtime environment applied for
    the life of its worker (which serves only this actor)."""
    packages, args = _split(spec, rest)
    _Applied(spec, packages)
    return cls(*args, **kwargs)
