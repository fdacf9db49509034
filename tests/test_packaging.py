"""cattag as Dataflow and Flink workers get it: the sdist that `--setup_file ./setup.py` stages,
installed into a fresh virtual environment with no access to the source tree, running featurize."""

from __future__ import annotations

import json
import pathlib
import site
import subprocess
import sys
import tarfile

from tests.conftest import GTZAN

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_staged_sdist_installs_and_runs_featurize_away_from_the_source_tree(tmp_path):
    from apache_beam.runners.portability.stager import Stager

    # Exactly what Beam does with --setup_file (python -m build --no-isolation --sdist).
    sdist = pathlib.Path(Stager._build_setup_package(str(REPO / "setup.py"), str(tmp_path)))
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    for module in ("pipelines/cli.py", "transforms/featurize_steps.py", "schemas/features.py", "runners/flink-job-server/pom.xml", "trainer/models.py", "database/store.py"):
        assert f"cattag-0.1.0/{module}" in names, module

    # A fresh environment. Its third-party packages (Beam, librosa, ...) come from this one through a
    # .pth line, so the test does not download TensorFlow again; cattag itself only from the sdist: a
    # .pth-added directory is not a site directory, so this venv's editable-install hook stays off.
    fresh = tmp_path / "worker-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    python = fresh / "bin" / "python"
    fresh_site = pathlib.Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    (fresh_site / "shared_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    work = tmp_path / "elsewhere"  # not the repository: nothing importable from the working directory
    work.mkdir()
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(sdist)],
                   check=True, cwd=work, capture_output=True, text=True)
    where = subprocess.run([python, "-c", "import pipelines, schemas, transforms; print(pipelines.__file__)"],
                           check=True, cwd=work, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(fresh_site)), where

    catalogue = work / "catalogue"
    for genre in ("blues", "jazz"):
        (catalogue / genre).mkdir(parents=True)
        for clip in sorted((GTZAN / genre).glob("*.flac"))[:2]:
            (catalogue / genre / clip.name).write_bytes(clip.read_bytes())
    (catalogue / "jazz" / "empty.wav").write_bytes(b"")
    done = subprocess.run([fresh / "bin" / "cattag", "featurize", "--input", str(catalogue), "--labels", "from-dirs",
                           "--output", str(work / "features"), "--max-segments", "2"],
                          check=False, cwd=work, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metadata = json.loads((work / "features" / "metadata.json").read_text())
    assert metadata["labels"] == ["blues", "jazz"]
    assert metadata["totals"]["tracks"] == 4 and metadata["totals"]["failed"] == 1


def _pins(path: pathlib.Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {name.lower(): version for name, version in (line.split("==") for line in lines if line)}


def test_worker_requirements_pin_every_runtime_dependency_as_tested():
    import tomllib

    workers = _pins(REPO / "worker-requirements.txt")
    tested = _pins(REPO / "constraints.txt")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in declared} - {"apache-beam"}
    assert names <= workers.keys(), names - workers.keys()
    assert "apache-beam" not in workers  # the worker container's own
    for name, version in workers.items():
        assert tested.get(name) == version, (name, version, tested.get(name))


def test_launching_a_pipeline_does_not_import_tensorflow():
    """Workers import TensorFlow (in DoFn.setup); the launcher, which may be a laptop submitting to
    Dataflow, only builds the graph, so its modules must not pull TensorFlow in."""
    code = ("import sys; import pipelines.cli, pipelines.featurize, pipelines.tag, transforms.tagging, "
            "transforms.inference; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip() == "[]"
