"""A tag output (and optionally its model and database) -> the report's HTML and its headline facts."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging

from apache_beam.io.filesystems import FileSystems

from report import charts, summary
from report.page import figure, page, png, section, table
from schemas.tag_output import TAGS_GLOB, RunRecord, TagOutput

_LOG = logging.getLogger(__name__)
TOP_TAGS = 30  # bars in the tag chart
SIMILAR_QUERIES = 3  # sample `similar` lists with a database
SIMILAR_K = 5
MODEL_PLOTS = {"training_curves.png": "Training curves", "confusion_matrix.png": "Confusion matrix (held-out split)",
               "reliability.png": "Reliability of confidence (held-out split)",
               "embeddings_pca.png": "Held-out embeddings, PCA"}


@dataclasses.dataclass(frozen=True)
class ReportFacts:
    """The headline figures, as the page shows them (for the command's closing line and for tests)."""

    model_version: str
    inputs: int
    tagged: int
    flagged: int
    failed: int
    audio_hours: float
    tracks_per_s: float | None  # from the latest run's record; None when OUT holds none


def build(tags_dir: str, *, model_dir: str | None = None, db_url: str | None = None,
          model_version: str | None = None) -> tuple[str, ReportFacts]:
    output = TagOutput(tags_dir)
    files = output.tag_files()
    if not files:
        raise ValueError(f"--tags {tags_dir} holds no tag files ({TAGS_GLOB}); "
                         "is it the --output of a `cattag tag` run?")
    version = model_version or summary.latest_model_version(files)
    tagged = summary.summarize_tags(files, version)
    if not tagged.rows:
        raise ValueError(f"--tags {tags_dir} holds no rows of model version {version} "
                         f"(it holds {', '.join(sorted(tagged.other_versions))})")
    errors = summary.summarize_errors(output)
    runs = [run for run in output.run_records() if run.model_version == version]
    latest = runs[-1] if runs else None
    facts = ReportFacts(
        model_version=version, inputs=latest.inputs if latest else tagged.rows + errors.count,
        tagged=tagged.rows, flagged=tagged.flagged, failed=errors.count, audio_hours=tagged.audio_s / 3600,
        tracks_per_s=latest.tagged / latest.wall_s if latest and latest.wall_s else None)
    sections = [
        _figures(facts, tagged, latest),
        _distributions(tagged),
        _descriptors(tagged),
        _health(tagged),
        _flagged(tagged),
        _failures(errors),
        _map(tagged),
    ]
    if model_dir:
        sections.append(_model(model_dir))
    if db_url:
        sections.append(_similar(db_url, tagged))
    if runs:
        sections.append(_runs(runs))
    subtitle = (f"{tags_dir}, model {version}, written "
                f"{datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    return page("cattag run report", subtitle, sections), facts


def _figures(facts: ReportFacts, tagged: summary.TagSummary, latest: RunRecord | None) -> str:
    items = [
        figure("inputs", f"{facts.inputs:,}", figure_id="fig-inputs"),
        figure("tagged", f"{facts.tagged:,}", figure_id="fig-tagged"),
        figure("flagged for review", f"{facts.flagged:,}", figure_id="fig-flagged", level="warn" if facts.flagged else ""),
        figure("failed", f"{facts.failed:,}", figure_id="fig-failed", level="bad" if facts.failed else ""),
        figure("audio hours", f"{facts.audio_hours:,.2f}", figure_id="fig-audio-hours"),
    ]
    if facts.tracks_per_s is not None:
        items.append(figure("tracks/s", f"{facts.tracks_per_s:,.2f}", figure_id="fig-throughput"))
        items.append(figure("wall time", f"{latest.wall_s:,.0f} s", figure_id="fig-wall"))
    notes = []
    if latest and latest.skipped:
        notes.append(f"{latest.skipped:,} inputs were skipped by the latest run as already tagged.")
    if tagged.other_versions:
        notes.append("This output also holds rows of other model versions, left out here: " + ", ".join(
            f"{name} ({count:,})" for name, count in sorted(tagged.other_versions.items()))
                     + "; `cattag report --model-version` picks one.")
    if facts.tracks_per_s is None:
        notes.append("No run record in _runs/ (written by cattag tag since this report exists): no throughput.")
    return section("The run", f'<div class="figures">{"".join(items)}</div>', section_id="figures",
                   note=" ".join(notes))


def _distributions(tagged: summary.TagSummary) -> str:
    genres = charts.bars(tagged.genres.most_common(), chart_id="chart-genres")
    top_tags = tagged.tags.most_common(TOP_TAGS)
    tag_chart = charts.bars(top_tags, chart_id="chart-tags")
    confidence = charts.histogram(list(tagged.confidence_counts), list(tagged.confidence_edges),
                                  chart_id="chart-confidence")
    body = (f'<div class="row"><div><h3>Genres (top label per track)</h3>{genres}</div>'
            f'<div><h3>Tags carried ({"top " + str(TOP_TAGS) + " of " + str(len(tagged.tags)) if len(tagged.tags) > TOP_TAGS else "all"})</h3>'
            f'{tag_chart}</div></div><h3>Confidence (top score per track)</h3>{confidence}')
    note = (f"{tagged.silent:,} silent tracks have no genre and are left out of the charts." if tagged.silent else "")
    return section("What the catalogue was tagged with", body, section_id="distributions", note=note)


def _descriptors(tagged: summary.TagSummary) -> str:
    """Tempo, key and loudness of the tagged tracks (docs/descriptors.md)."""
    if not (tagged.with_bpm or tagged.with_loudness or tagged.keys):
        return section("Tempo, key and loudness", "<p>No track of this run has descriptors (tagged with "
                       "<code>--descriptors off</code>, or before cattag computed them).</p>", section_id="descriptors")
    tempo = charts.histogram(list(tagged.bpm_counts), list(summary.BPM_EDGES), chart_id="chart-bpm")
    loudness = charts.histogram(list(tagged.lufs_counts), list(summary.LUFS_EDGES), chart_id="chart-loudness")
    keys = charts.bars(tagged.keys.most_common(), chart_id="chart-keys")
    body = (f"<h3>Tempo (BPM; {tagged.with_bpm:,} tracks)</h3>{tempo}"
            f'<div class="row"><div><h3>Key ({sum(tagged.keys.values()):,} tracks)</h3>{keys}</div>'
            f"<div><h3>Integrated loudness (LUFS; {tagged.with_loudness:,} tracks)</h3>{loudness}</div></div>")
    missing = tagged.rows - tagged.with_bpm
    note = (f"{missing:,} tracks have no tempo (silent, shorter than 10 s, or no recurring pulse: "
            "their descriptor_notes say which)." if missing else "")
    return section("Tempo, key and loudness", body, section_id="descriptors", note=note)


def _health(tagged: summary.TagSummary) -> str:
    """Catalogue health: faults per kind, the files with the most, and the copies of one recording."""
    if not tagged.checked:
        return section("Catalogue health", "<p>No track of this run was checked (tagged with <code>--health off</code>, "
                       "or before cattag checked health).</p>", section_id="health")
    faults = charts.bars(tagged.health.most_common(), chart_id="chart-health")
    worst = table(["track", "health flags", "true peak dBTP"],
                  [(r["track_id"], r["flags"], r["true_peak_dbtp"]) for r in tagged.unhealthy_rows],
                  table_id="unhealthy", numeric=["true peak dBTP"])
    copies = table(["track", "a copy of", "recording"],
                   [(r["track_id"], r["duplicate_of"], r["recording_id"]) for r in tagged.copy_rows],
                   table_id="copies")
    body = (f"<h3>Faults ({tagged.unhealthy:,} of {tagged.checked:,} tracks)</h3>{faults}"
            f"<h3>The files with the most faults</h3>{worst}"
            f"<h3>Copies of one recording ({tagged.copies:,} tracks are copies of another)</h3>{copies}")
    note = ("Flags and thresholds: docs/tag.md (health). Copies are found across one tag run by their "
            "fingerprints; `cattag similar` leaves them out of recommendations once loaded.")
    return section("Catalogue health", body, section_id="health", note=note)


def _flagged(tagged: summary.TagSummary) -> str:
    reasons = table(["reason", "tracks"], [(r, n) for r, n in tagged.reasons.most_common()], table_id="flag-reasons",
                    numeric=["tracks"], page_size=None)
    rows = [(r["track_id"], r["genre"], r["confidence"], r["typicality"], r["review_reason"], r["tags"])
            for r in tagged.flagged_rows]
    listed = table(["track", "genre", "confidence", "typicality", "reason", "tags carried"], rows,
                   table_id="flagged", numeric=["confidence", "typicality"])
    note = (f"{tagged.flagged:,} of {tagged.rows:,} tracks are flagged for review (column low_confidence), listed "
            "most likely wrong first (lowest confidence: for a calibrated model, the chance the genre is right)"
            + (f"; the {len(rows):,} least confident are listed" if len(rows) < tagged.flagged else "")
            + ". `cattag review` picks the ones a correction teaches the model most.")
    return section("Flagged for review", reasons + _reviews(tagged) + listed, section_id="review", note=note)


def _reviews(tagged: summary.TagSummary) -> str:
    """What people's corrections say: how many tracks were reviewed, how often the model had been right on
    them, and the share of the catalogue the confidences and reviews imply is right."""
    music = tagged.reviewed - tagged.reviewed_not_music
    facts = [("tracks reviewed by a person", f"{tagged.reviewed:,}"),
             ("of them no music", f"{tagged.reviewed_not_music:,}")]
    if tagged.reviewed:
        facts.append(("the model had been right on the reviewed tracks",
                      f"{tagged.reviewed_model_right:,} of {tagged.reviewed:,} ({tagged.reviewed_model_right / tagged.reviewed:.0%})"
                      + (" (picked as the doubtful ones: the rest of the catalogue is likelier right)" if music else "")))
    if tagged.expected_right is not None:
        facts.append(("share of tracks with audio whose genre is right, as confidences and reviews imply",
                      f"{tagged.expected_right:.1%}"))
    return "<h3>Reviews</h3>" + table(["", ""], facts, table_id="reviews", page_size=None)


def _failures(errors: summary.ErrorSummary) -> str:
    by_reason = table(["stage", "reason", "inputs"], [(stage, reason, n) for (stage, reason), n in
                                                      errors.by_reason.most_common()],
                      table_id="failure-reasons", numeric=["inputs"])
    listed = table(["file", "stage", "error"], [(row["uri"], row["stage"], row["error"]) for row in errors.listed],
                   table_id="failures")
    note = ("Inputs of the latest run that did not get a row, from _errors/ (stage: where it failed). "
            + ", ".join(f"{stage}: {n:,}" for stage, n in errors.by_stage.most_common()))
    return section("Failed inputs", by_reason + "<h3>Each failed input</h3>" + listed, section_id="failed", note=note)


def _map(tagged: summary.TagSummary) -> str:
    points = summary.embedding_map(tagged.map_rows)
    chart = charts.scatter(points, [r["genre"] for r in tagged.map_rows], [r["track_id"] for r in tagged.map_rows],
                           chart_id="chart-map")
    shown = len(tagged.map_rows)
    note = ("Each track's embedding on its first two principal components, coloured by its genre; "
            + (f"a fixed sample of {shown:,} of {tagged.rows - tagged.silent:,} tracks." if shown < tagged.rows - tagged.silent
               else f"all {shown:,} tracks with audio.") + " Hover a point for its track.")
    return section("Embedding map", chart, section_id="map", note=note)


def _model(model_dir: str) -> str:
    from schemas import presets
    from schemas.model_assets import read_model_assets

    resolved = presets.resolve_model(model_dir)
    card = read_model_assets(resolved).card
    facts = [("model version", card.model_version), ("architecture", card.arch), ("task", card.task),
             ("labels", len(card.labels))]
    if card.training:
        facts += [("epochs", card.training.get("epochs_run")), ("trained on", card.training.get("device"))]
    if card.source:
        facts += [("source", card.source), ("licence", card.licence)]
    if card.tag_threshold_rule:
        facts.append(("tag thresholds", card.tag_threshold_rule))
    metrics = card.metrics or {}
    facts += [(name.replace("_", " "), metrics[name]) for name in
              ("track_accuracy", "segment_accuracy", "macro_f1", "tracks", "split") if name in metrics]
    if "ece" in metrics:
        facts.append(("expected calibration error (held-out split)", round(metrics["ece"], 3)))
    if card.calibration:
        heldout = card.calibration["heldout"]
        facts += [("review flag", f"confidence below {card.calibration['flag_below']:.2f} "
                                  f"({card.calibration.get('flag_rule', '')})"),
                  ("calibrated on", f"{heldout['tracks']} cross-fitted held-out tracks, ECE "
                                    f"{heldout['ece_before']:.3f} before, {heldout['ece']:.3f} after")]
    if card.corrections:
        facts.append(("trained with corrections", f"{card.corrections['learned_from']} reviewed tracks learned from, "
                                                  f"{card.corrections['not_music']} not music"))
    body = table(["", ""], [(name, json.dumps(value) if isinstance(value, dict) else value)
                            for name, value in facts if value is not None], table_id="model-card", page_size=None)
    plots = []
    for name, title in MODEL_PLOTS.items():
        path = FileSystems.join(resolved, name)
        if FileSystems.exists(path):
            with FileSystems.open(path) as handle:
                plots.append(f"<div><h3>{title}</h3>{png(handle.read(), alt=title, image_id='plot-' + name[:-4])}</div>")
    note = "" if plots else "This model directory has no evaluation plots (a pretrained tagger, or not evaluated)."
    return section("The model", body + f'<div class="row">{"".join(plots)}</div>', section_id="model", note=note)


def _similar(db_url: str, tagged: summary.TagSummary) -> str:
    from database import connect, redact

    queries = []
    for genre, _ in tagged.genres.most_common(SIMILAR_QUERIES):
        candidates = [row for row in tagged.map_rows if row["genre"] == genre]
        if candidates:
            queries.append(candidates[0]["track_id"])
    blocks = []
    with connect(db_url, read_only=True) as store:
        for track_id in queries:
            try:
                found = store.similar(track_id, k=SIMILAR_K, model_version=tagged.model_version)
            except ValueError as err:  # not loaded into this database, or without this model's embedding
                blocks.append(f'<p class="empty">{track_id}: {err}</p>')
                continue
            rows = [(n.track_id, n.genre, round(n.similarity, 3), round(n.confidence, 3)) for n in found.neighbours]
            blocks.append(f"<h3>Tracks most like {track_id} ({found.method} search)</h3>"
                          + table(["track", "genre", "similarity", "confidence"], rows,
                                  table_id=f"similar-{len(blocks)}", numeric=["similarity", "confidence"],
                                  page_size=None))
    return section("Similar tracks", "".join(blocks), section_id="similar",
                   note=f"From {redact(db_url)} (cosine similarity of embeddings): a track of each of the most "
                        "common genres and its nearest neighbours.")


def _runs(runs: list[RunRecord]) -> str:
    rows = [(run.run_id, run.inputs, run.tagged, run.failed, run.skipped, round(run.wall_s, 1),
             round(run.tagged / run.wall_s, 2) if run.wall_s else None)
            for run in reversed(runs)]
    return section("Runs into this output", table(["run", "inputs", "tagged", "failed", "skipped", "wall s", "tracks/s"],
                                                  rows, table_id="runs",
                                                  numeric=["inputs", "tagged", "failed", "skipped", "wall s",
                                                           "tracks/s"]),
                   section_id="runs")
