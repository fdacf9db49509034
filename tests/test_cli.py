"""The `cattag` command as a user runs it: a subprocess, its exit code and what it prints."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import zipfile

from tests.conftest import GTZAN

CATTAG = [sys.executable, "-m", "pipelines.cli"]
REPO = pathlib.Path(__file__).resolve().parents[1]


def cattag(*args: str, cwd: pathlib.Path = REPO, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **({"PATH": path} if path is not None else {})}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as in a user's shell (conftest sets it for the tests' own process)
    return subprocess.run([*CATTAG, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_usage_lists_the_commands():
    done = cattag("--help")
    assert done.returncode == 0
    for command in ("featurize", "train", "evaluate", "demo"):
        assert command in done.stdout
    assert cattag("frobnicate").returncode == 2


def test_featurize_help_documents_its_flags_and_beam_passthrough():
    done = cattag("featurize", "--help")
    assert done.returncode == 0
    for flag in ("--input", "--output", "--labels MODE", "--splits", "--max-segments", "--short-tracks", "--overwrite"):
        assert flag in done.stdout, flag
    assert "--runner" in done.stdout  # the epilogue says where other flags go


def test_missing_flags_and_paths_are_one_line_errors(tmp_path):
    done = cattag("featurize", "--output", str(tmp_path / "o"))
    assert done.returncode == 2 and "missing required flag(s): --input" in done.stderr
    done = cattag("featurize", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o"))
    assert done.returncode == 2
    assert f"cattag featurize: error: --input {str(tmp_path / 'nowhere')!r}: no such file or directory" in done.stderr
    assert "Traceback" not in done.stderr


NOISE = ("libmpg123", "Note: Illegal Audio-MPEG-Header", "part2_3_length", "cuInit", "E0000", "W0000", "I0000",
         "oneDNN custom operations", "absl::InitializeLog", " INFO ", "Traceback")


def test_demo_runs_end_to_end_fits_one_screen_and_writes_its_report(tmp_path):
    done = cattag("demo", "--workdir", str(tmp_path / "demo"), "--tracks-per-style", "3", "--seconds", "6",
                  "--epochs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) <= 30, "\n".join(lines)  # one screen, all of it
    for noise in NOISE:  # the demo's broken mp3 and TensorFlow start-up print nothing
        assert noise not in done.stdout + done.stderr, noise
    out = done.stdout
    assert "12 synthetic tracks in 4 styles, and 2 broken files" in out
    assert "1/5 tagged with the pretrained musicnn-msd, no training: 12 tracks (" in out and "), 2 failed" in out
    assert "2/5 featurized: tracks per split train " in out and "; 2 failed" in out
    metadata = json.loads((tmp_path / "demo" / "features" / "metadata.json").read_text())
    assert metadata["labels"] == ["ambient", "breakbeat", "four-on-the-floor", "waltz-piano"]
    assert metadata["totals"]["tracks"] == 12 and metadata["totals"]["failed"] == 2
    card = json.loads((tmp_path / "demo" / "model" / "model.json").read_text())
    assert card["training"]["epochs_run"] == 2 and card["labels"] == metadata["labels"]
    assert card["arch"] == "musicnn-msd-head"
    assert f"3/5 trained {card['model_version']} (musicnn-msd-head), 2 epochs" in out and "track accuracy" in out
    assert "4/5 tagged with it: 12 tracks (" in out
    assert "5/5 loaded 24 tag rows into duckdb:///" in out and (tmp_path / "demo" / "catalogue.duckdb").exists()
    assert out.count("   similar to ") == 1 and "   tagged '" in out
    report_path = tmp_path / "demo" / "report.html"
    assert f"Report: {report_path}" in out
    html = report_path.read_text()
    for expected in ("empty.wav", "not-audio.mp3", 'id="model"', 'id="similar"', 'id="chart-map"'):
        assert expected in html, expected


def test_verbose_shows_what_quiet_hides(tmp_path):
    """A broken mp3 through featurize: quiet by default, libmpg123's notes and Beam's INFO lines with --verbose."""
    music = tmp_path / "music" / "noise"
    music.mkdir(parents=True)
    (music / "notes.mp3").write_bytes(b"\xff\xfb\x90\x00" + bytes(range(256)) * 40)  # an MPEG header, then garbage
    shutil.copy(sorted((GTZAN / "blues").glob("*.flac"))[0], music / "blues.flac")
    quiet = cattag("featurize", "--input", str(music.parent), "--output", str(tmp_path / "q"), "--labels", "from-dirs")
    loud = cattag("featurize", "--input", str(music.parent), "--output", str(tmp_path / "v"), "--labels", "from-dirs",
                  "--verbose")
    assert quiet.returncode == loud.returncode == 0, quiet.stderr[-2000:] + loud.stderr[-2000:]
    assert "featurize done: 2 inputs, 1 tracks" in quiet.stderr  # cattag's own summary stays
    assert len(quiet.stderr.splitlines()) <= 4, quiet.stderr
    for noise in NOISE:
        assert noise not in quiet.stderr, noise
    assert "Note: " in loud.stderr or "mpg123" in loud.stderr  # the decoder's notes, shown on request
    assert " INFO apache_beam." in loud.stderr  # Beam's INFO lines, with their logger's name


def test_demo_runs_on_the_users_labelled_folders(tmp_path):
    """Real music: three GTZAN genres, four clips each, in DIR/<genre>/<file> (plus one broken file)."""
    music = tmp_path / "my music"
    for genre in ("classical", "metal", "reggae"):
        (music / genre).mkdir(parents=True)
        for clip in sorted((GTZAN / genre).glob("*.flac"))[:4]:
            shutil.copy(clip, music / genre / clip.name)
    (music / "metal" / "truncated.flac").write_bytes((GTZAN / "metal" / "metal.00000.flac").read_bytes()[:2000])
    done = cattag("demo", "--input", str(music), "--labels", "from-dirs", "--workdir", str(tmp_path / "work"),
                  "--epochs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2/5 featurized: tracks per split" in done.stdout and "; 1 failed" in done.stdout
    assert "truncated.flac" in (tmp_path / "work" / "report.html").read_text()
    assert json.loads((tmp_path / "work" / "model" / "model.json").read_text())["labels"] == [
        "classical", "metal", "reggae"]
    assert "4/5 tagged with it: 12 tracks (" in done.stdout and "), 1 failed" in done.stdout
    assert "5/5 loaded 24 tag rows" in done.stdout and done.stdout.count("   similar to ") == 1
    assert sorted(p.name for p in music.rglob("*")) == sorted(  # the user's folder is untouched
        ["classical", "metal", "reggae", "truncated.flac"] + [f"{g}.0000{i}.flac" for g in ("classical", "metal", "reggae")
                                                               for i in range(4)])
    refused = cattag("demo", "--input", str(music), "--workdir", str(tmp_path))
    assert refused.returncode == 2 and "the demo empties its workdir" in refused.stderr


def test_tag_documents_its_flags_and_refuses_a_missing_model(tmp_path):
    done = cattag("tag", "--help")
    assert done.returncode == 0
    for flag in ("--input", "--model", "--output", "--top-k", "--min-confidence", "--aggregate",
                 "--inference-batch-size", "--skip-existing", "--overwrite"):
        assert flag in done.stdout, flag
    done = cattag("tag", "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--model", str(tmp_path))
    assert done.returncode == 2 and "is not a cattag model" in done.stderr and "Traceback" not in done.stderr


def test_train_and_evaluate_document_their_flags_and_refuse_bad_paths(tmp_path):
    done = cattag("train", "--help")
    assert done.returncode == 0
    for flag in ("--data", "--model-dir", "--arch", "--epochs", "--batch-size", "--seed", "--device"):
        assert flag in done.stdout, flag
    assert "PipelineOptions" not in done.stdout  # train is not a Beam pipeline
    done = cattag("train", "--data", str(tmp_path), "--model-dir", str(tmp_path / "m"))
    assert done.returncode == 2 and "has no metadata.json" in done.stderr and "Traceback" not in done.stderr
    done = cattag("evaluate", "--data", str(tmp_path), "--model", str(tmp_path))
    assert done.returncode == 2 and "is not a cattag model" in done.stderr


def test_a_missing_flink_job_server_jar_is_a_one_line_error(tmp_path):
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "a.wav").write_bytes(b"")
    done = cattag("featurize", "--input", str(tmp_path / "music"), "--output", str(tmp_path / "out"),
                  "--runner", "FlinkRunner", "--flink_master", "[local]", "--flink_job_server_jar", str(tmp_path / "no.jar"))
    assert done.returncode == 2
    assert f"--flink_job_server_jar {tmp_path / 'no.jar'}: no such file" in done.stderr and "Traceback" not in done.stderr
    flink = ("featurize", "--input", str(tmp_path / "music"), "--output", str(tmp_path / "out"), "--runner", "FlinkRunner")
    done = cattag(*flink, "--flink_master", "[local]")
    assert done.returncode == 2 and "FlinkRunner needs --flink_job_server_jar: `make flink-job-server`" in done.stderr
    jar = tmp_path / "job-server.jar"
    with zipfile.ZipFile(jar, "w") as archive:  # a jar with nothing on its class path: checked before Java and the master
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n")
    done = cattag(*flink, "--flink_job_server_jar", str(jar), path=str(pathlib.Path(sys.executable).parent))
    assert done.returncode == 2 and "`java` is not on PATH" in done.stderr and "Traceback" not in done.stderr
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = cattag(*flink, "--flink_job_server_jar", str(jar), "--flink_master", f"127.0.0.1:{port}")
    assert done.returncode == 2 and f"--flink_master 127.0.0.1:{port}: nothing answers" in done.stderr
