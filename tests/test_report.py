"""`cattag report`: the page's figures against the tag output it summarizes, and the page in a real
headless browser (Debian's chromium, which the test command installs): its DOM after the page's
own JavaScript ran, sorting and paging, and a screenshot kept as a CI artifact."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import load, report, synthetic, tag
from report import summary
from report.build import build
from schemas import tag_output, tags
from schemas.failure import ERRORS_DIR, ERRORS_SCHEMA
from schemas.tag_output import TagOutput
from tests.conftest import make_bad_files

REPO = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = pathlib.Path(os.environ.get("CATTAG_ARTIFACTS", REPO / ".ci" / "artifacts"))
GENRES = ["ambient", "breakbeat", "chiptune", "drone", "waltz"]


@pytest.fixture(scope="module")
def tagged(small_model, tmp_path_factory):
    """A real tag run: synthetic music and broken files, the session's small trained model."""
    root = tmp_path_factory.mktemp("report-catalogue")
    synthetic.write_catalogue(root / "music", tracks_per_style=2, seconds=7.0)
    make_bad_files(root / "bad")
    output = tmp_path_factory.mktemp("report-tags")
    result = tag.run(["--input", str(root), "--model", small_model[0], "--output", str(output)])
    return output, result


def synthetic_tag_output(folder: pathlib.Path, rows: int = 300, failed: int = 40) -> dict:
    """A tag output written through the declared schema: `rows` tracks in five genres (embeddings
    clustered by genre), every third one flagged, and `failed` failures in two stages."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(len(GENRES), 32))
    genre_ids = rng.integers(0, len(GENRES), size=rows)
    confidence = rng.uniform(0.2, 1.0, size=rows).round(3)
    flagged = np.arange(rows) % 3 == 0
    now = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    schema = tags.tags_schema(labels=GENRES, embedding_dim=32, model_version="genre-test", feature_version="f1")
    table = pa.Table.from_pylist([{
        "track_id": f"track-{i:04d}", "uri": f"/music/track-{i:04d}.flac", tags.FINGERPRINT: None,
        "genre": GENRES[g], "confidence": float(confidence[i]), "top_k": [{"label": GENRES[g], "score": 0.5}],
        "probabilities": [0.2] * len(GENRES), "tags": [] if flagged[i] else [{"label": GENRES[g], "score": 0.9}],
        "embedding": (centres[g] + 0.1 * rng.normal(size=32)).tolist(), "duration_s": 30.0, "n_segments": 10,
        "low_confidence": bool(flagged[i]), "review_reason": "low score" if flagged[i] else None,
        "typicality": 0.8, "model_version": "genre-test", "feature_version": "f1", "tagged_at": now,
        "bpm": 60.0 + i % 120, "key": ("A minor", "C major", "F# minor")[i % 3], "loudness_lufs": -30.0 + i % 25,
        "health_flags": (["clipping"] if i % 10 == 0 else []) + (["gap"] if i % 30 == 0 else []),
        "recording_id": f"rec-{i - 1 if i % 50 == 1 else i}", "duplicate_of": f"track-{i - 1:04d}" if i % 50 == 1 else None,
    } for i, g in enumerate(genre_ids)], schema=schema)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "tags-20261201T000000Z-abc123-00000-of-00001.parquet")
    errors = pa.Table.from_pylist([{
        "uri": f"/music/broken-{i}.mp3", "track_id": f"broken-{i}", "stage": "decode" if i % 2 else "read",
        "error": f"cannot decode /music/broken-{i}.mp3: {1000 + i} bytes of garbage" if i % 2 else "the file is empty",
    } for i in range(failed)], schema=ERRORS_SCHEMA)
    (folder / ERRORS_DIR).mkdir()
    pq.write_table(errors, folder / ERRORS_DIR / "part-00000-of-00001.parquet")
    (folder / tag_output.RUNS_DIR).mkdir()
    (folder / tag_output.RUNS_DIR / "20261201T000000Z-abc123.json").write_text(json.dumps({
        "run_id": "20261201T000000Z-abc123", "model_version": "genre-test", "inputs": rows + failed, "skipped": 0,
        "tagged": rows, "failed": failed, "wall_s": 60.0, "audio_s": 30.0 * rows}))
    return {"rows": rows, "flagged": int(flagged.sum()), "failed": failed,
            "genres": {genre: int((genre_ids == i).sum()) for i, genre in enumerate(GENRES)}}


def figure_value(html: str, figure_id: str) -> str:
    found = re.search(rf'id="{figure_id}"><span class="value">([^<]*)</span>', html)
    assert found, f"no figure {figure_id}"
    return found.group(1)


def test_the_report_shows_what_the_tag_output_holds(tagged, small_model, tmp_path):
    output, run = tagged
    facts = report.write_report(str(output), tmp_path / "report.html", model=small_model[0])
    html = (tmp_path / "report.html").read_text()
    table = tag.read_tags(str(output))
    errors = pq.read_table(output / ERRORS_DIR).to_pylist()
    assert facts.tagged == table.num_rows == run.tagged and facts.failed == len(errors) == run.failed > 0
    assert facts.flagged == sum(table["low_confidence"].to_pylist()) and facts.inputs == run.inputs
    assert figure_value(html, "fig-tagged") == f"{table.num_rows:,}"
    assert figure_value(html, "fig-failed") == f"{len(errors):,}"
    assert facts.tracks_per_s == pytest.approx(run.tagged / run.wall_s)  # from the run's record in _runs/
    genres = [g for g in table["genre"].to_pylist() if g is not None]
    bars = dict(re.findall(r'<g class="bar" data-label="([^"]+)" data-value="(\d+)"', html.split('id="chart-tags"')[0]))
    assert {label: int(n) for label, n in bars.items()} == {g: genres.count(g) for g in set(genres)}
    for row in errors:  # every failed input is listed with its stage
        assert row["uri"] in html
    assert html.count('class="point"') == len(genres)  # every track with audio is on the map
    assert 'id="plot-confusion_matrix"' in html and "data:image/png;base64," in html  # the model's plots
    # Self-contained: nothing to fetch when it is viewed.
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html and "@import" not in html


def test_the_report_lists_similar_tracks_from_the_database(tagged, tmp_path):
    output, run = tagged
    url = f"duckdb:///{tmp_path / 'tags.duckdb'}"
    load.main(["--tags", str(output), "--db", url])
    html, _ = build(str(output), db_url=url)
    similar = html[html.index('id="similar"'):]
    assert similar.count("Tracks most like ") >= 1
    first = re.search(r'id="similar-0"[^>]*>.*?</table>', similar, re.S).group(0)
    assert first.count("<tr>") == 1 + min(5, run.tagged - 1)  # header + k neighbours


def test_a_large_output_is_summarized_in_bounded_memory(tmp_path, monkeypatch):
    """The listed rows and the map's sample are capped, the counts are not; the sample is the same
    whatever the order of the files."""
    expected = synthetic_tag_output(tmp_path / "out", rows=300)
    monkeypatch.setattr(summary, "MAX_LISTED", 20)
    monkeypatch.setattr(summary, "MAP_SAMPLE", 50)
    files = TagOutput(str(tmp_path / "out")).tag_files()
    found = summary.summarize_tags(files, "genre-test")
    assert found.rows == 300 and found.flagged == expected["flagged"] and dict(found.genres) == expected["genres"]
    assert len(found.flagged_rows) == 20 and len(found.map_rows) == 50
    confidences = [row["confidence"] for row in found.flagged_rows]
    assert confidences == sorted(confidences)  # the least confident first
    all_flagged = pq.read_table(files[0]).filter(pa.compute.field("low_confidence")).column("confidence")
    assert confidences[-1] <= sorted(all_flagged.to_pylist())[19] + 1e-6
    kept = summary.Smallest(3)
    for key in (5, 1, 4, 2, 3, 0, 6):
        kept.add((key,), key)
    assert kept.items() == [0, 1, 2]


def test_failures_of_one_kind_group_together():
    assert summary.reason_kind("cannot decode /a/b c.mp3: 1234 bytes", "/a/b c.mp3") == \
        summary.reason_kind("cannot decode /x/y.mp3: 99 bytes", "/x/y.mp3") == "cannot decode FILE: N bytes"


def test_a_folder_without_tags_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="holds no tag files"):
        build(str(tmp_path))


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed: `make test` installs Debian's chromium package"
    return found


def render(page: pathlib.Path, *, screenshot: pathlib.Path | None = None) -> str:
    """The DOM after the page's scripts ran (or a screenshot), from headless chromium."""
    flags = [f"--screenshot={screenshot}", "--window-size=1200,2400", "--hide-scrollbars"] if screenshot else ["--dump-dom"]
    done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={page.parent / 'chromium-profile'}", *flags, page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_report_in_a_headless_browser(tmp_path):
    expected = synthetic_tag_output(tmp_path / "out")
    page = tmp_path / "report.html"
    report.write_report(str(tmp_path / "out"), page)
    html = page.read_text()
    # The page's own script: after a click on "confidence", twice, the first row's confidence.
    probe = """<script>
      var table = document.getElementById('flagged'), header = table.tHead.rows[0].cells[2];
      header.click(); document.body.dataset.ascending = table.tBodies[0].rows[0].cells[2].textContent;
      header.click(); document.body.dataset.descending = table.tBodies[0].rows[0].cells[2].textContent;
      document.body.dataset.shownAfterSort = table.tBodies[0].rows.length;
    </script>"""
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", probe + "</body>"))
    dom = render(probed)
    assert re.search(r'id="fig-tagged"><span class="value">300</span>', dom)
    assert re.search(rf'id="fig-flagged"><span class="value">{expected["flagged"]}</span>', dom)
    assert re.search(rf'id="fig-failed"><span class="value">{expected["failed"]}</span>', dom)
    assert re.search(r'id="fig-throughput"><span class="value">5.00</span>', dom)  # 300 tracks in 60 s
    # Paged: 25 rows of the flagged table in the DOM, and the pager says how many in all.
    assert f"1-25 of {expected['flagged']}" in dom and f"1-25 of {expected['failed']}" in dom
    assert re.search(r'data-shown-after-sort="25"', dom)
    flagged = pq.read_table(next((tmp_path / "out").glob("tags-*.parquet"))).to_pandas().query("low_confidence")
    low, high = flagged["confidence"].min(), flagged["confidence"].max()
    shown = [f"{value:.3f}".rstrip("0").rstrip(".") for value in (low, high)]  # as the page writes numbers
    assert f'data-ascending="{shown[0]}"' in dom and f'data-descending="{shown[1]}"' in dom
    assert dom.count('class="point"') == 300 and dom.count('class="bar"') >= len(GENRES)
    # The descriptors' distributions: every track in one tempo bin and one loudness bin, 100 in each key.
    for chart in ("chart-bpm", "chart-loudness"):
        svg = dom.split(f'id="{chart}"')[1].split("</svg>")[0]
        assert sum(int(v) for v in re.findall(r'class="bin" data-value="(\d+)"', svg)) == 300
    # Catalogue health: faults per kind, the worst files, the copies (every 50th track copies the one before).
    faults = dom.split('id="chart-health"')[1].split("</svg>")[0]
    assert dict(re.findall(r'data-label="([^"]+)" data-value="(\d+)"', faults)) == {"clipping": "30", "gap": "10"}
    copies = html.split('id="copies"')[1].split("</table>")[0]
    assert copies.count("<tr>") == 1 + 6 and "track-0050" in copies
    keys = dom.split('id="chart-keys"')[1].split("</svg>")[0]
    assert dict(re.findall(r'data-label="([^"]+)" data-value="(\d+)"', keys)) == {
        "A minor": "100", "C major": "100", "F# minor": "100"}
    # A screenshot for people: a CI artifact, its path printed at the end of the test run.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    render(page, screenshot=shot)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
