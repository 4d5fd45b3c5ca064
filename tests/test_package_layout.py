"""One installable package: a wheel holds ``streamwarden`` only, every module has one name, the CLI is
registered in one place and its help imports no engine."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from streamwarden.jobs.cli.app import COMMANDS, load

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("jobs", "operators", "schemas", "models", "deploy")
HEAVY = ("apache_beam", "pyflink", "sklearn", "skl2onnx", "onnx", "onnxruntime")


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


_REGISTERED = [(g, n) for g, commands in COMMANDS.items() for n in commands]


@pytest.mark.parametrize(("group", "name"), _REGISTERED, ids=[f"{g}-{n}" for g, n in _REGISTERED])
def test_every_registered_command_loads_and_lists_its_own_help(group: str, name: str) -> None:
    lazy = COMMANDS[group][name]
    command = load(lazy, name)
    assert command.help, f"{lazy.target} has no docstring"
    assert _first_paragraph(command.help).startswith(" ".join(lazy.short_help.split())), lazy.target


def _help_paths() -> list[list[str]]:
    """Every command line that has a --help: the root, each group, each registered command and the
    subcommands of a command that is itself a group (``eval shadow``)."""
    out: list[list[str]] = [[]]
    for group, commands in COMMANDS.items():
        prefix = [] if group == "streamwarden" else [group]
        if prefix:
            out.append(prefix)
        for name, lazy in commands.items():
            out.append([*prefix, name])
            command = load(lazy, name)
            out += [[*prefix, name, sub] for sub in getattr(command, "commands", {})]
    return out


# A filesystem path under a machine's usual roots (/tmp/x, /home/me/checkout/...); an API route such as
# POST /api/v1/statements or a URL's path is not one.
_ABSOLUTE_PATH = re.compile(
    r"(?<![\w:/.~-])/(?:tmp|home|root|work|usr|opt|var|etc|srv|mnt|private|Users)(?:/[\w.-]+)+"
)


def test_no_help_shows_a_machine_path_or_a_bool_metavar() -> None:
    from typer.testing import CliRunner

    from streamwarden.jobs.cli.app import app

    paths = _help_paths()
    assert ["eval", "shadow"] in paths and ["flink", "cluster-start"] in paths
    offenders: dict[str, list[str]] = {}
    for args in paths:
        result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, (args, result.output)
        found = _ABSOLUTE_PATH.findall(result.output) + (["<bool>"] if "<bool>" in result.output else [])
        machine = (str(REPO), str(Path.home()), tempfile.gettempdir())
        found += [p for p in machine if p != "/" and p in result.output]
        if found:
            offenders[" ".join(args) or "(root)"] = found
    assert offenders == {}
    assert _ABSOLUTE_PATH.findall("default: /tmp/streamwarden-flink-cluster, see http://x/y/z") == [
        "/tmp/streamwarden-flink-cluster"
    ]


def test_root_help_imports_no_engine_or_training_library() -> None:
    out = _python(
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from streamwarden.jobs.cli.app import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(r.output)\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    assert "LOADED []" in out
    for name in ("run", "demo", "bench", "eval", "flink"):
        assert re.search(rf"\b{name}\b", out)


def test_operators_import_with_the_base_dependencies_only() -> None:
    out = _python(
        "import sys\nimport streamwarden.operators.pipeline\n"
        "print(sorted(m for m in ('apache_beam', 'pyflink', 'sklearn', 'skl2onnx', 'onnx', 'typer') "
        "if m in sys.modules))\n"
    )
    assert out.strip() == "[]"


@pytest.mark.slow
def test_no_module_is_importable_under_a_bare_folder_name() -> None:
    out = _python(
        "import importlib, pkgutil, sys\n"
        "import streamwarden\n"
        "names = [m.name for m in pkgutil.walk_packages(streamwarden.__path__, 'streamwarden.')]\n"
        "for n in names:\n"
        "    importlib.import_module(n)\n"
        f"print(len(names), sorted(m for m in sys.modules if m.split('.')[0] in {FOLDERS!r}))\n"
    )
    count, bare = out.split(" ", 1)
    assert int(count) > 100
    assert bare.strip() == "[]"


def test_sources_import_the_namespace_not_the_folders() -> None:
    pattern = re.compile(rf"^\s*(from|import) ({'|'.join(FOLDERS)})(\.|\s)", re.M)
    offenders = [
        str(p.relative_to(REPO))
        for top in (*FOLDERS, "tests")
        for p in (REPO / top).rglob("*.py")
        if pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package_with_its_data(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("streamwarden-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # The wheel is platform-specific (the compiled window core): name-version-cp311-cp311-<platform>.whl
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"streamwarden", dist_info}
    assert any(n.startswith("streamwarden/operators/features/_core.") and n.endswith(".so") for n in names)
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["streamwarden"]
    for data in (
        "streamwarden/py.typed",
        "streamwarden/schemas/streamwarden.proto",
        "streamwarden/operators/policy/default_policy.yaml",
        "streamwarden/operators/features/default_spec.yaml",
        "streamwarden/models/gbt/model.onnx",
        "streamwarden/jobs/flink/job.py",
    ):
        assert data in names
