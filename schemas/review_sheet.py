"""The review sheet: the CSV that `cattag review` writes, a person fills, and `cattag train --add-labels` reads.

    track_id, uri, genre, confidence, review_reason, top_k, typicality, picked_for, corrected_label

One row per track picked for review, most worth a look first. `genre` and `confidence` are what the
model said; `top_k` its best labels with scores ("rock 0.62; pop 0.21"); `picked_for` why the row was
chosen. A reviewer fills `corrected_label` with the right genre (the model's own label when it was
right), `not music` for a track that is no music, or leaves it empty (not reviewed). Extra columns a
reviewer adds are ignored.
"""

from __future__ import annotations

import csv
import dataclasses
import io

from apache_beam.io.filesystems import FileSystems

from schemas.tags import NOT_MUSIC

COLUMNS = ("track_id", "uri", "genre", "confidence", "review_reason", "top_k", "typicality", "picked_for",
           "corrected_label")
REQUIRED = ("track_id", "uri", "genre", "corrected_label")


class ReviewSheetError(ValueError):
    """A file that is not a review sheet at all (a bad row is reported per row instead)."""


@dataclasses.dataclass(frozen=True)
class Correction:
    """A filled row: the label a person gave a track (None: not music), and what the model had said."""

    track_id: str
    uri: str
    label: str | None
    model_genre: str | None
    row: int  # 1-based data row in the sheet, for error messages

    @property
    def not_music(self) -> bool:
        return self.label is None


def write(path: str, rows: list[dict]) -> None:
    """Writes the sheet (rows: dicts with COLUMNS keys; corrected_label left empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{column: "" for column in COLUMNS}, **row, "corrected_label": ""})
    with FileSystems.create(path) as handle:
        handle.write(buffer.getvalue().encode("utf-8"))


def read(path: str) -> tuple[list[Correction], list[tuple[int, str, str, str]]]:
    """The filled rows of a sheet, and (row, track_id, uri, reason) for each row that cannot be used.
    Rows with an empty corrected_label are not reviews and are neither."""
    if not FileSystems.exists(path):
        raise ReviewSheetError(f"{path}: no such review sheet")
    with FileSystems.open(path) as handle:
        text = handle.read().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    missing = [column for column in REQUIRED if column not in (reader.fieldnames or [])]
    if missing:
        raise ReviewSheetError(f"{path} is not a review sheet: it lacks the column(s) {', '.join(missing)} "
                               "(write one with `cattag review`)")
    corrections, bad = [], []
    seen: dict[str, int] = {}
    for number, record in enumerate(reader, start=1):
        track_id = (record.get("track_id") or "").strip()
        uri = (record.get("uri") or "").strip()
        label = (record.get("corrected_label") or "").strip()
        if not label:
            continue
        if not track_id:
            bad.append((number, "", uri, "unknown track: the row has no track_id"))
        elif not uri:
            bad.append((number, track_id, "", "unknown track: the row has no uri to featurize it from"))
        elif track_id in seen:
            bad.append((number, track_id, uri, f"track reviewed twice (first in row {seen[track_id]}): "
                                               "this row is left out"))
        else:
            seen[track_id] = number
            corrections.append(Correction(track_id, uri, None if label.lower() == NOT_MUSIC else label,
                                          (record.get("genre") or "").strip() or None, number))
    return corrections, bad
