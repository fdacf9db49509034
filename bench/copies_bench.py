"""Precision and recall of duplicate detection (FindCopies on Chromaprint fingerprints) and of each health
flag, on copies and faults made with FFmpeg and NumPy from real music.

    .venv/bin/python bench/copies_bench.py [--clips 60] [--workdir /tmp/cattag-copies] [--results FILE]

Part A, copies: every GTZAN-dev clip (--clips of them, round-robin over the genres) and every music file
of ../shared/data/catalogue-sample (SOURCES.csv kind) is a source; FFmpeg makes 20 variants of each
(audio stream only: wav, flac, mp3 128k, ogg vorbis, opus 96k, +6 dB and -6 dB, 44.1 and 48 kHz, mono to stereo, 1, 3 and 5 s
trimmed at the head and at the tail, 2 and 4 s of silence padded at the head and at the tail). Each file
is decoded and checked as `cattag tag` does (audio.decode at 16 kHz with health, track_health.check) in a
pool of 2 processes, and the rows go through transforms.duplicate_steps.FindCopies on the DirectRunner.
Scores over pairs of files (a true pair: two files of one source): recall = true pairs sharing a
recording id / true pairs, precision = true pairs sharing one / pairs sharing one; per variant kind,
the share of sources whose variant lands in its original's cluster; false merges of distinct sources,
hard negatives apart (two GTZAN clips of one genre; consecutive ids of a genre, often one artist).
Diagnosis without Beam: keys shared (the product's index keys, duplicates.index_keys or candidate_keys,
and the unsampled words >> 4) and alignment bit error of each original with each of its variants and of
distinct originals; and the keys thinned by content-defined sampling (keep a key k when (k * 2654435761
mod 2^32) mod R == 0; for comparison, when the top log2 R bits of that hash are 0), on words >> 4 and on
whole words, to see whether fewer keys per track would still find the copies.

Part B, health flags: a fault corpus as tests/test_health.py builds it, larger: the test's synthetic
clean stereo recording with three seeds and the GTZAN clips as stereo 44.1 kHz FLAC (`-ac 2 -ar 44100`),
each clean and with one fault: clipping (x6), DC offset (+0.05), dual mono (synthetic only), a 4 s gap,
8 s of head or tail silence, a 16 kHz low-pass (FFmpeg's 2-pole `lowpass`, and a steep one through 32 kHz;
synthetic only), MP3 128k saved as FLAC, up-sampled from 22.05 to 96 kHz. Each file must get exactly
its expected flags: the fault's, and for the GTZAN copies "spectral cutoff" (22.05 kHz audio at 44.1 kHz:
up-sampled by construction; not scored on the clipped copies, whose distortion refills the band);
"dual mono" is not scored on GTZAN copies (mono sources: every copy is dual mono), nor are the flags the
clean clip itself gets (listed at the end). "true peak" must be raised where FFmpeg's own true peak
(ebur128=peak=true) is over the threshold (not scored within 0.1 dB of it); "loudness outlier" is a
run-level flag, not scored. Decoded with audio.decode(health=True, loudness=True), flagged by
transforms.health.flags and, for true peak, health.true_peak_over of the loudness, as `cattag tag` does,
with the product's thresholds. Also: the 60 clean GTZAN-dev clips, as they are.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from multiprocessing import Pool

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
GTZAN = DATA / "gtzan-dev"
SAMPLE = DATA / "catalogue-sample"

from transforms import audio, duplicates  # noqa: E402
from transforms import health as health_module  # noqa: E402
from transforms.chromaprint import ITEM_S  # noqa: E402
from transforms.health import FLAGS  # noqa: E402
from transforms.health import flags as health_flags  # noqa: E402
from transforms.track_health import check  # noqa: E402

RATE = 16000
MAX_S = 600
WORKERS = 2
THINNING = (1, 2, 4, 8)
HASH = 2654435761


# --- Part A: copies -------------------------------------------------------------------------------------

def variants(duration_s: float) -> list[tuple[str, str, list[str]]]:
    """(kind, file suffix, FFmpeg output arguments) of every copy of a source `duration_s` long."""
    made = [("wav", "wav", []), ("flac", "flac", []), ("mp3 128k", "mp3", ["-c:a", "libmp3lame", "-b:a", "128k"]),
            ("ogg vorbis", "ogg", ["-c:a", "libvorbis"]), ("opus 96k", "opus", ["-c:a", "libopus", "-b:a", "96k"]),
            ("+6 dB", "flac", ["-af", "volume=6dB"]), ("-6 dB", "flac", ["-af", "volume=-6dB"]),
            ("44.1 kHz", "flac", ["-ar", "44100"]), ("48 kHz", "flac", ["-ar", "48000"]),
            ("stereo", "flac", ["-ac", "2"])]
    made += [(f"head trim {n} s", "flac", ["-ss", str(n)]) for n in (1, 3, 5)]
    made += [(f"tail trim {n} s", "flac", ["-t", f"{duration_s - n:.3f}"]) for n in (1, 3, 5)]
    made += [(f"head pad {n} s", "flac", ["-af", f"adelay={n * 1000}:all=1"]) for n in (2, 4)]
    made += [(f"tail pad {n} s", "flac", ["-af", f"apad=pad_dur={n}"]) for n in (2, 4)]
    return made


KINDS = ["original"] + [kind for kind, _, _ in variants(30.0)]


def slug(name: str) -> str:
    """A file-name part for a variant or fault name: "+6 dB" -> "plus6-dB"."""
    return re.sub(r"[^A-Za-z0-9_]+", "-", name.replace("+", "plus").replace(".", "_")).strip("-")


def ffmpeg(job: tuple[str, str, list[str]]) -> None:
    """Runs `ffmpeg -i SOURCE ARGS TARGET` unless TARGET exists (a rerun with --workdir reuses it)."""
    source, target, args = job
    if os.path.exists(target):
        return
    partial = target + ".part" + os.path.splitext(target)[1]  # FFmpeg picks the format by the suffix
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", source, "-threads", "1", "-map", "0:a:0", *args,
                    partial], check=True)
    os.replace(partial, target)


def duration_of(path: str) -> float:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def fingerprint_file(path: str) -> dict:
    """The product's decode and check of one file: fingerprint words and health flags."""
    try:
        decoded = audio.decode(path, sample_rate_hz=RATE, max_duration_s=MAX_S, health=True)
    except audio.AudioError as err:
        return {"path": path, "fingerprint": [], "flags": [], "error": err.reason}
    health = check(decoded.samples, decoded.sample_rate_hz, decoded.health)
    return {"path": path, "fingerprint": list(health.fingerprint), "flags": list(health.health_flags),
            "duration_s": decoded.duration_s}


def gtzan_sources(clips: int) -> list[dict]:
    with open(GTZAN / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_genre: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_genre[row["genre"]].append(row)
    order = [row for group in itertools.zip_longest(*by_genre.values()) for row in group if row]
    return [{"source": row["track_id"], "path": str(GTZAN / row["path"]), "genre": row["genre"],
             "origin": "gtzan"} for row in order[:clips]]


def sample_sources() -> list[dict]:
    with open(SAMPLE / "SOURCES.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["kind"] == "music"]
    return [{"source": pathlib.Path(row["file"]).stem, "path": str(SAMPLE / row["file"]), "genre": None,
             "origin": "sample"} for row in rows]


def make_copies(sources: list[dict], folder: pathlib.Path, pool) -> list[dict]:
    """Every file of Part A: {track_id, source, kind, path}; the variants made with FFmpeg."""
    folder.mkdir(parents=True, exist_ok=True)
    files, jobs = [], []
    durations = pool.map(duration_of, [source["path"] for source in sources])
    for source, duration in zip(sources, durations, strict=True):
        files.append({**source, "kind": "original", "track_id": f"{source['source']}/original"})
        for kind, suffix, args in variants(duration):
            if ("trim" in kind and duration - float(kind.split()[2]) < 0.1):
                continue  # nothing would be left
            name = f"{source['source']}--{slug(kind)}.{suffix}"
            target = str(folder / name)
            jobs.append((source["path"], target, args))
            files.append({**source, "kind": kind, "track_id": f"{source['source']}/{kind}", "path": target})
    pool.map(ffmpeg, jobs, chunksize=4)
    return files


def find_copies(rows: list[dict], folder: pathlib.Path) -> dict[str, dict]:
    """track_id -> the FindCopies output row (recording_id, duplicate_of), on the DirectRunner in-process."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.duplicate_steps import FindCopies

    target = folder / "copies.jsonl"
    options = PipelineOptions([], runner="DirectRunner", direct_num_workers=1, direct_running_mode="in_memory")
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | "Rows" >> beam.Create(rows)
             | "FindCopies" >> FindCopies()
             | "Json" >> beam.Map(lambda row: json.dumps({key: row[key] for key in
                                                          ("track_id", "recording_id", "duplicate_of")}))
             | "Write" >> beam.io.WriteToText(str(target), shard_name_template=""))
    with open(target) as handle:
        found = [json.loads(line) for line in handle]
    return {row["track_id"]: row for row in found}


def pairs(n: int) -> int:
    return n * (n - 1) // 2


def thinned(keys: np.ndarray, r: int, scheme: str) -> np.ndarray:
    """Content-defined sampling of candidate keys: 'low' is the brief's (hash mod 2^32) mod R == 0, which
    for a power of two R keeps the keys whose low log2 R bits are 0 (the multiplier is odd); 'high' keeps
    the keys whose hash has its top log2 R bits 0."""
    if r == 1:
        return keys
    hashed = (keys.astype(np.uint64) * HASH) % (1 << 32)
    if scheme == "low":
        return keys[hashed % r == 0]
    return keys[(hashed >> (32 - int(math.log2(r)))) == 0]


SHIFTED = "words >> 4"
SHIFT = getattr(duplicates, "KEY_SHIFT", 4)
KEY_BASES = {SHIFTED: lambda w: w >> SHIFT, "whole words": lambda w: w}
SCHEMES = [("low", r) for r in THINNING] + [("high", r) for r in THINNING[1:]]
if hasattr(duplicates, "index_keys"):  # the product's index: sampled whole words (since the ClusterCopies change)
    product_keys = duplicates.index_keys
    PRODUCT_INDEX = f"duplicates.index_keys: whole words, 1 in KEY_SAMPLING = {getattr(duplicates, 'KEY_SAMPLING', '?')}"
else:
    product_keys = duplicates.candidate_keys
    PRODUCT_INDEX = f"duplicates.candidate_keys: every word >> {SHIFT}"


def stats(values, points=(0, 5, 50)) -> str:
    if not len(values):
        return "–"
    found = np.percentile(np.asarray(values, dtype=float), points)
    return " / ".join(f"{v:.3g}" if isinstance(v, float) and v != int(v) else f"{int(v)}" for v in found)


def part_a(args, work: pathlib.Path, pool, out: list[str]) -> dict:
    sources = gtzan_sources(args.clips) + sample_sources()
    started = time.time()
    files = make_copies(sources, work / "copies", pool)
    made_s = time.time() - started
    print(f"part A: {len(files)} files from {len(sources)} sources made in {made_s:.0f} s", flush=True)
    started = time.time()
    decoded = dict(zip([f["track_id"] for f in files],
                       pool.map(fingerprint_file, [f["path"] for f in files], chunksize=4), strict=True))
    decode_s = time.time() - started
    print(f"part A: decoded and fingerprinted in {decode_s:.0f} s", flush=True)
    rows = [{"track_id": f["track_id"], "uri": f["path"], "fingerprint": decoded[f["track_id"]]["fingerprint"],
             "health_flags": decoded[f["track_id"]]["flags"]} for f in files]
    started = time.time()
    found = find_copies(rows, work)
    beam_s = time.time() - started
    print(f"part A: FindCopies in {beam_s:.0f} s", flush=True)
    recording = {track: found[track]["recording_id"] for track in found}
    assert set(recording) == {f["track_id"] for f in files}, "FindCopies lost or added rows"
    source_of = {f["track_id"]: f["source"] for f in files}
    path_of = {f["track_id"]: f["path"] for f in files}
    info = {s["source"]: s for s in sources}
    by_source: dict[str, list[str]] = defaultdict(list)
    for f in files:
        by_source[f["source"]].append(f["track_id"])
    clusters: dict[str, list[str]] = defaultdict(list)
    for track, rec in recording.items():
        clusters[rec].append(track)

    # Pairwise precision and recall.
    true_pairs = sum(pairs(len(tracks)) for tracks in by_source.values())
    sharing = sum(pairs(len(tracks)) for tracks in clusters.values())
    true_sharing = sum(pairs(n) for tracks in clusters.values()
                       for n in Counter(source_of[t] for t in tracks).values())
    short = {s for s, tracks in by_source.items()
             if (decoded[f"{s}/original"].get("duration_s") or 0) < duplicates.MIN_OVERLAP_S + 5}
    true_long = sum(pairs(len(tracks)) for s, tracks in by_source.items() if s not in short)
    true_sharing_long = sum(pairs(n) for tracks in clusters.values()
                            for s, n in Counter(source_of[t] for t in tracks).items() if s not in short)
    errors = {t: d["error"] for t, d in decoded.items() if d.get("error")}
    empty = [t for t, d in decoded.items() if not d["fingerprint"] and not d.get("error")]

    # Source-level: clean clusters and false merges.
    clean = 0
    for source, tracks in by_source.items():
        recs = {recording[t] for t in tracks}
        if len(recs) == 1 and len(clusters[recs.pop()]) == len(tracks):
            clean += 1
    merged: dict[tuple[str, str], int] = Counter()
    for tracks in clusters.values():
        counts = Counter(source_of[t] for t in tracks)
        for a, b in itertools.combinations(sorted(counts), 2):
            merged[(a, b)] += counts[a] * counts[b]

    def hard(a: str, b: str) -> str:
        if info[a]["origin"] == info[b]["origin"] == "gtzan" and info[a]["genre"] == info[b]["genre"]:
            consecutive = abs(int(a.split(".")[1]) - int(b.split(".")[1])) == 1
            return "same genre, consecutive ids" if consecutive else "same genre"
        return "other"

    n_sources, n_files = len(sources), len(files)
    out += ["## Part A: copies of one recording (FindCopies)", "",
            f"{n_sources} sources ({sum(s['origin'] == 'gtzan' for s in sources)} GTZAN-dev clips, "
            f"{sum(s['origin'] == 'sample' for s in sources)} catalogue-sample music files), {n_files} files "
            f"(original + up to 20 variants each). Decode errors: {len(errors)}; files with an empty "
            f"fingerprint (under ~3 s of audio): {len(empty)}"
            + (f" ({', '.join(sorted(empty))})" if empty else "") + ".", "",
            "| measure | value |", "|---|---:|",
            f"| true pairs (two files of one source) | {true_pairs} |",
            f"| pairs sharing a recording id | {sharing} |",
            f"| pairwise recall | {true_sharing / true_pairs:.4f} ({true_sharing}/{true_pairs}) |",
            f"| pairwise precision | {true_sharing / sharing:.4f} ({true_sharing}/{sharing}) |" if sharing
            else "| pairwise precision | – |",
            f"| pairwise recall, sources of {duplicates.MIN_OVERLAP_S + 5:.0f} s or more "
            f"({n_sources - len(short)} sources) | {true_sharing_long / max(true_long, 1):.4f} "
            f"({true_sharing_long}/{true_long}) |",
            f"| sources whose files form exactly one cluster | {clean}/{n_sources} |",
            f"| clusters | {len(clusters)} (sources: {n_sources}) |",
            f"| source pairs merged (distinct recordings in one cluster) | {len(merged)} |",
            f"| of them two GTZAN clips of one genre | {sum(hard(a, b) != 'other' for a, b in merged)} |",
            f"| of them consecutive ids of one genre | "
            f"{sum(hard(a, b) == 'same genre, consecutive ids' for a, b in merged)} |",
            f"| file pairs of distinct sources sharing a recording id | {sum(merged.values())} |", ""]
    if errors:
        out += ["Decode errors (the product's audio.decode; these files get no fingerprint):", "",
                "| file | reason |", "|---|---|"]
        out += [f"| {pathlib.Path(path_of[t]).name} | {reason} |" for t, reason in sorted(errors.items())]
        out.append("")
    if merged:
        out += ["False merges:", "", "| source a | source b | file pairs | kind |", "|---|---|---:|---|"]
        out += [f"| {a} | {b} | {n} | {hard(a, b)} |" for (a, b), n in sorted(merged.items())]
        out.append("")

    # Per variant kind: in its original's cluster, and the diagnosis without Beam.
    words = {t: np.asarray(d["fingerprint"], np.uint32) for t, d in decoded.items()}
    index = {t: product_keys(w) for t, w in words.items()}
    base = {name: {t: np.unique(make(w)) for t, w in words.items()} for name, make in KEY_BASES.items()}
    thin = {(name, scheme, r): {t: thinned(k, r, scheme) for t, k in base[name].items()}
            for name in KEY_BASES for scheme, r in SCHEMES}
    need = duplicates.MIN_SHARED_KEYS

    def common(table: dict, a: str, b: str) -> int:
        return len(np.intersect1d(table[a], table[b], assume_unique=True))

    def verdict(a: str, b: str):
        alignment = duplicates.align(words[a], words[b])
        shorter = min(len(words[a]), len(words[b])) * ITEM_S
        return alignment, alignment.is_copy(shorter)

    out += [f"Per variant kind: recall = share of sources whose variant has its original's recording id "
            f"(through any chain of copies); keys shared with the original, in the product's index "
            f"({PRODUCT_INDEX}) and as the unsampled words >> {SHIFT} "
            f"(min / 5th percentile / median; a candidate pair needs {need}); alignment with the original "
            f"(bit error median / 95th percentile / max; a copy needs <= {duplicates.MAX_BIT_ERROR}, an overlap "
            f">= {duplicates.MIN_OVERLAP_S:.0f} s and half the shorter); direct = share of pairs the product's "
            "candidate and alignment tests pass on their own.", "",
            "| variant | n | recall | GTZAN | sample | shared index keys | < 3 | shared words >> 4 | bit error "
            "| direct |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    per_kind: dict[str, list[tuple[str, str]]] = defaultdict(list)  # kind -> (original, variant)
    for f in files:
        if f["kind"] != "original":
            per_kind[f["kind"]].append((f"{f['source']}/original", f["track_id"]))
    misses: dict[str, list[str]] = defaultdict(list)
    true_rows = []
    for kind in KINDS[1:]:
        found_pairs = per_kind[kind]
        hits = {b: recording[a] == recording[b] for a, b in found_pairs}
        for a, b in found_pairs:
            if not hits[b]:
                misses[kind].append(source_of[b])
        n_g = [b for _, b in found_pairs if info[source_of[b]]["origin"] == "gtzan"]
        n_s = [b for _, b in found_pairs if info[source_of[b]]["origin"] == "sample"]
        keys_shared = [common(index, a, b) for a, b in found_pairs]
        verdicts = [verdict(a, b) for a, b in found_pairs]
        direct = sum(v and n >= need for (_, v), n in zip(verdicts, keys_shared, strict=True))
        for (a, b), (_, is_copy) in zip(found_pairs, verdicts, strict=True):
            true_rows.append((kind, a, b, is_copy))
        out.append(
            f"| {kind} | {len(found_pairs)} | {sum(hits.values()) / len(found_pairs):.3f} | "
            f"{sum(hits[b] for b in n_g)}/{len(n_g)} | {sum(hits[b] for b in n_s)}/{len(n_s)} | "
            f"{stats(keys_shared)} | {sum(n < need for n in keys_shared)} | "
            f"{stats([common(base[SHIFTED], a, b) for a, b in found_pairs])} | "
            f"{stats([v.bit_error for v, _ in verdicts], (50, 95, 100))} | {direct / len(found_pairs):.3f} |")
    out.append("")
    if misses:
        out += ["Variants not in their original's cluster:", ""]
        out += [f"- {kind}: {', '.join(sorted(sources_))}" for kind, sources_ in misses.items()]
        out.append("")

    # Negatives: distinct originals.
    originals = [f"{s['source']}/original" for s in sources]
    negatives = {"GTZAN same genre": [], "GTZAN consecutive ids": [], "all distinct originals": []}
    for a, b in itertools.combinations(originals, 2):
        kind = hard(source_of[a], source_of[b])
        negatives["all distinct originals"].append((a, b))
        if kind != "other":
            negatives["GTZAN same genre"].append((a, b))
        if kind == "same genre, consecutive ids":
            negatives["GTZAN consecutive ids"].append((a, b))
    out += ["Distinct originals (negatives): keys shared in the product's index and as unsampled words >> 4 "
            f"(median / 95th percentile / max), pairs that would be candidates (>= {need} index keys), bit error "
            "at the best offset (min / 5th percentile / median; 1 where no key is shared, so no offset), pairs "
            "the alignment test alone would confirm.", "",
            "| pairs | n | shared index keys | shared words >> 4 | candidates | bit error | confirmed |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, group in negatives.items():
        keys_shared = [common(index, a, b) for a, b in group]
        verdicts = [verdict(a, b) for a, b in group]
        confirmed = [f"{source_of[a]}~{source_of[b]}" for (a, b), (_, v) in zip(group, verdicts, strict=True) if v]
        out.append(f"| {name} | {len(group)} | {stats(keys_shared, (50, 95, 100))} | "
                   f"{stats([common(base[SHIFTED], a, b) for a, b in group], (50, 95, 100))} | "
                   f"{sum(n >= need for n in keys_shared)} | "
                   f"{stats([v.bit_error for v, _ in verdicts])} | {len(confirmed)}"
                   + (f" ({', '.join(confirmed)})" if confirmed else "") + " |")
    out.append("")

    # Thinned keys: would a sample of the keys still make every confirmed copy a candidate?
    confirmed_true = [(kind, a, b) for kind, a, b, v in true_rows if v]
    out += ["Thinned keys (content-defined sampling, same threshold of "
            f"{need} shared keys), on two key bases: the words >> {SHIFT} (the brief's "
            "candidate keys) and the whole 32-bit words. Keys per original (median), shared keys of the "
            "(original, variant) pairs the alignment confirms (min / 5th percentile / median), their candidate "
            "recall (>= 3 shared), the worst variant kind's, and the distinct originals that would still be "
            "candidates (all / same-genre GTZAN). 'low': (k * 2654435761 mod 2^32) mod R == 0, which for R a "
            "power of two is k mod R == 0 (k's lowest log2 R bits); 'high': the hash's top log2 R bits are 0.", "",
            f"| keys | sampling | R | keys/track | shared keys ({len(confirmed_true)} confirmed pairs) "
            "| candidate recall | worst kind | negatives >= 3 (all / same genre) |",
            "|---|---|---:|---:|---:|---:|---|---:|"]
    for name in KEY_BASES:
        for scheme, r in SCHEMES:
            table = thin[(name, scheme, r)]
            counts = [common(table, a, b) for _, a, b in confirmed_true]
            by_kind: dict[str, list[bool]] = defaultdict(list)
            for (kind, _, _), n in zip(confirmed_true, counts, strict=True):
                by_kind[kind].append(n >= need)
            worst = min(by_kind, key=lambda kind: np.mean(by_kind[kind]))
            loose = [sum(common(table, a, b) >= need for a, b in negatives[group])
                     for group in ("all distinct originals", "GTZAN same genre")]
            out.append(f"| {name} | {scheme if r > 1 else 'none'} | {r} | "
                       f"{np.median([len(table[t]) for t in originals]):.0f} | {stats(counts)} | "
                       f"{np.mean([n >= need for n in counts]):.4f} | {worst} {np.mean(by_kind[worst]):.3f} | "
                       f"{loose[0]}/{len(negatives['all distinct originals'])} / "
                       f"{loose[1]}/{len(negatives['GTZAN same genre'])} |")
    out.append("")
    columns = [(name, scheme, r) for name in KEY_BASES for scheme, r in SCHEMES if r in (4, 8)]
    out += ["Candidate recall per variant kind with thinned keys (confirmed (original, variant) pairs with "
            f">= {need} shared sampled keys); 'words high R=4' is the sampling of the product's index_keys "
            "(KEY_SAMPLING = 4):", "",
            "| variant | " + " | ".join(f"{'words>>4' if n == SHIFTED else 'words'} {s} R={r}"
                                      for n, s, r in columns) + " |",
            "|---|" + "---:|" * len(columns)]
    for kind in KINDS[1:]:
        group = [(a, b) for k, a, b in confirmed_true if k == kind]
        if group:
            cells = [f"{np.mean([common(thin[c], a, b) >= need for a, b in group]):.3f}" for c in columns]
            out.append(f"| {kind} | " + " | ".join(cells) + " |")
    out.append("")
    timing = {"made_s": made_s, "decode_s": decode_s, "beam_s": beam_s, "files": n_files}
    out += [f"Part A time: FFmpeg {made_s:.0f} s, decode and fingerprint {decode_s:.0f} s ({WORKERS} processes), "
            f"FindCopies on the DirectRunner {beam_s:.0f} s.", ""]
    return timing


# --- Part B: health flags --------------------------------------------------------------------------------

FAULT_RATE = 44100


def clean_recording(seed: int, seconds: float = 30.0) -> np.ndarray:
    """tests/test_health.py's clean stereo "music" with another seed: chords with harmonics to 20 kHz and
    independent noisy percussion per channel, peaking near -3 dBFS, no silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * FAULT_RATE)) / FAULT_RATE
    tones = sum(np.sin(2 * np.pi * f * t) / (1 + i) for i, f in enumerate((220, 277, 330, 440, 1760, 7040, 14080)))
    channels = []
    for _ in range(2):
        hits = np.resize(np.repeat(rng.uniform(0.0, 1.0, int(seconds * 8) + 1) > 0.5, FAULT_RATE // 8), len(t))
        noise = rng.normal(0, 1, len(t)) * hits * np.exp(-np.mod(t, 0.125) * 30)
        channels.append(0.15 * tones + 0.2 * noise)
    recording = np.stack(channels, axis=1)
    return (0.7 * recording / np.abs(recording).max()).astype(np.float32)


def with_gap(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[12 * FAULT_RATE:16 * FAULT_RATE] = 0.0
    return x


def silence(x: np.ndarray) -> np.ndarray:
    return np.zeros((8 * FAULT_RATE, x.shape[1]), np.float32)


NUMPY_FAULTS = {  # fault -> (flag it must raise, the change)
    # Peak first set to 0.7 (the synthetic recording's): a quiet classical clip x6 would not reach full scale.
    "clipping x6": ("clipping", lambda x: np.clip(x * (6.0 * 0.7 / max(float(np.abs(x).max()), 1e-9)), -1.0, 1.0)),
    "dc offset +0.05": ("dc offset", lambda x: x * 0.9 + 0.05),
    "dual mono": ("dual mono", lambda x: np.repeat(x[:, :1], 2, axis=1)),
    "gap 4 s": ("gap", with_gap),
    "head silence 8 s": ("head silence", lambda x: np.concatenate([silence(x), x])),
    "tail silence 8 s": ("tail silence", lambda x: np.concatenate([x, silence(x)])),
}
FFMPEG_FAULTS = {  # fault -> (flag, [(output args, suffix) per step]); from the clean file (or the 22.05 kHz clip)
    "lowpass 16 kHz (2-pole)": ("spectral cutoff", [(["-af", "lowpass=f=16000", "-c:a", "flac"], "flac")]),
    "lowpass 16 kHz (steep, via 32 kHz)": ("spectral cutoff", [(["-ar", "32000"], "wav"), (["-ar", "44100"], "flac")]),
    "mp3 128k as FLAC": ("spectral cutoff", [(["-c:a", "libmp3lame", "-b:a", "128k"], "mp3"),
                                             (["-c:a", "flac"], "flac")]),
    "up-sampled 22.05 -> 96 kHz": ("spectral cutoff", [(["-ar", "22050"], "wav"), (["-ar", "96000"], "flac")]),
}
SYNTHETIC_SEEDS = (11, 23, 37)


def ffmpeg_chain(job: tuple[str, str, list]) -> None:
    source, target, steps = job
    if os.path.exists(target):
        return
    for index, (args, suffix) in enumerate(steps):
        step = target if index == len(steps) - 1 else f"{target}.step{index}.{suffix}"
        ffmpeg((source, step, args))
        source = step


def numpy_faults(job: tuple[str, list[tuple[str, str]]]) -> None:
    """Writes the NumPy faults [(fault, target)] of one clean 44.1 kHz file (24-bit FLAC, as the test does)."""
    base, targets = job
    recording = None
    for fault, target in targets:
        if os.path.exists(target):
            continue
        if recording is None:
            recording, _ = sf.read(base, dtype="float32", always_2d=True)
        partial = target + ".part.flac"
        sf.write(partial, NUMPY_FAULTS[fault][1](recording), FAULT_RATE, subtype="PCM_24")
        os.replace(partial, target)


def reference_true_peak(path: str) -> float | None:
    """FFmpeg's own BS.1770 true peak (ebur128=peak=true), dBTP: the reference for the "true peak" flag."""
    done = subprocess.run(["ffmpeg", "-nostats", "-hide_banner", "-i", path, "-map", "0:a:0", "-af",
                           "ebur128=peak=true", "-f", "null", "-"], capture_output=True, text=True, check=False)
    found = re.findall(r"True peak:\s*\n\s*Peak:\s*(-?[0-9.]+|-inf)", done.stderr)
    return None if not found or found[-1] == "-inf" else float(found[-1])


def health_file(path: str) -> dict:
    """The product's flags of one file: health.flags of the decode's meter, and "true peak" from its loudness
    (as track_health and the descriptors raise it); with FFmpeg's true peak as the reference."""
    try:
        decoded = audio.decode(path, sample_rate_hz=RATE, max_duration_s=MAX_S, health=True, loudness=True)
    except audio.AudioError as err:
        return {"flags": [], "error": err.reason}
    found = health_flags(decoded.health)
    peak = decoded.loudness.true_peak_dbtp if decoded.loudness else None
    if hasattr(health_module, "true_peak_over") and health_module.true_peak_over(peak):  # as transforms/tagging.py
        found.append("true peak")
    return {"flags": found, "cutoff_hz": decoded.health.spectral_cutoff_hz,
            "clipped_runs": decoded.health.clipped_runs, "true_peak": peak, "reference_peak": reference_true_peak(path)}


def part_b(args, work: pathlib.Path, pool, out: list[str]) -> dict:
    folder = work / "faults"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    clean_native = {s["source"]: s["path"] for s in gtzan_sources(60)}
    clean_flags = dict(zip(clean_native, pool.map(health_file, list(clean_native.values())), strict=True))
    # Bases: synthetic stereo, and the GTZAN clips as stereo 44.1 kHz FLAC.
    corpus = []  # {path, source, origin, fault, expected, ignored}
    bases = {}
    for seed in SYNTHETIC_SEEDS:
        path = folder / f"synthetic-{seed}--clean.flac"
        if not path.exists():
            sf.write(path, clean_recording(seed), FAULT_RATE, subtype="PCM_24")
        bases[f"synthetic-{seed}"] = ("synthetic", str(path), str(path))
    gtzan = gtzan_sources(args.clips)
    pool.map(ffmpeg, [(s["path"], str(folder / f"{s['source']}--clean.flac"), ["-ac", "2", "-ar", "44100"])
                      for s in gtzan])
    for s in gtzan:
        bases[s["source"]] = ("gtzan", str(folder / f"{s['source']}--clean.flac"), s["path"])
    jobs, numpy_jobs = [], []
    for source, (origin, base, native) in bases.items():
        inherent = {"spectral cutoff"} if origin == "gtzan" else set()
        ignored = ({"dual mono"} | set(clean_flags[source]["flags"]) - {"true peak"}) if origin == "gtzan" else set()
        corpus.append({"path": base, "source": source, "origin": origin, "fault": "clean",
                       "expected": inherent, "ignored": ignored - inherent})
        numpy_jobs.append((base, []))
        for fault, (flag, _) in NUMPY_FAULTS.items():
            if fault == "dual mono" and origin == "gtzan":
                continue  # already dual mono
            path = folder / f"{source}--{slug(fault)}.flac"
            numpy_jobs[-1][1].append((fault, str(path)))
            not_scored = {"spectral cutoff"} if fault.startswith("clipping") and inherent else set()
            corpus.append({"path": str(path), "source": source, "origin": origin, "fault": fault,
                           "expected": (inherent | {flag}) - not_scored, "ignored": (ignored | not_scored) - {flag}})
        for fault, (flag, steps) in FFMPEG_FAULTS.items():
            if origin == "gtzan" and fault.startswith("lowpass"):
                continue  # the copy stops at 11 kHz already: a 16 kHz low-pass changes nothing
            path = folder / f"{source}--{slug(fault)}.flac"
            start = base
            if origin == "gtzan" and fault.startswith("up-sampled"):
                start, steps = native, [(["-ac", "2", "-ar", "96000"], "flac")]  # the 22.05 kHz clip itself
            jobs.append((start, str(path), steps))
            corpus.append({"path": str(path), "source": source, "origin": origin, "fault": fault,
                           "expected": inherent | {flag}, "ignored": ignored - {flag}})
    pool.map(ffmpeg_chain, jobs)
    pool.map(numpy_faults, numpy_jobs)
    made_s = time.time() - started
    found = pool.map(health_file, [c["path"] for c in corpus], chunksize=4)
    check_s = time.time() - started - made_s
    print(f"part B: {len(corpus)} files made in {made_s:.0f} s, checked in {check_s:.0f} s", flush=True)

    # "true peak": expected where FFmpeg's true peak is over the threshold by more than 0.1 dB, not scored
    # within 0.1 dB of it; "loudness outlier" is a run-level flag (Tukey's fences over a run): not scored.
    ceiling = getattr(health_module, "TRUE_PEAK_DBTP", -1.0)
    borderline = 0
    for item, result in zip(corpus, found, strict=True):
        item["ignored"] = set(item["ignored"]) | {"loudness outlier"}
        reference = result.get("reference_peak")
        if reference is None or abs(reference - ceiling) <= 0.1:
            item["ignored"].add("true peak")
            borderline += 1
        elif reference > ceiling:
            item["expected"] = set(item["expected"]) | {"true peak"}
    tally = {flag: Counter() for flag in FLAGS}
    wrong = []
    for item, result in zip(corpus, found, strict=True):
        got = set(result["flags"])
        for flag in FLAGS:
            if flag in item["ignored"]:
                continue
            expected, present = flag in item["expected"], flag in got
            tally[flag]["tp" if expected and present else "fn" if expected else "fp" if present else "tn"] += 1
        scored = got - item["ignored"]
        if scored != item["expected"] or result.get("error"):
            wrong.append((item, sorted(got), result))
    out += ["## Part B: health flags on a fault corpus", "",
            f"{len(corpus)} files: {len(SYNTHETIC_SEEDS)} synthetic stereo recordings (seeds "
            f"{', '.join(map(str, SYNTHETIC_SEEDS))}) and {len(gtzan)} GTZAN-dev clips as stereo 44.1 kHz FLAC, "
            "each clean and with each fault that makes sense for it. Expected: the fault's flag; GTZAN copies also "
            "'spectral cutoff' (up-sampled from 22.05 kHz; not scored on their clipped copies), 'dual mono' not "
            "scored on them (mono sources), nor any flag the clean clip itself gets.", "",
            "| flag | files that must have it | found (TP) | missed (FN) | raised wrongly (FP) | precision | recall |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for flag in FLAGS:
        if flag == "loudness outlier":
            out.append(f"| {flag} | not scored: a run-level flag (Tukey's fences over a run's loudness) | | | | | |")
            continue
        c = tally[flag]
        support = c["tp"] + c["fn"]
        precision = f"{c['tp'] / (c['tp'] + c['fp']):.3f}" if c["tp"] + c["fp"] else "–"
        recall = f"{c['tp'] / support:.3f}" if support else "–"
        out.append(f"| {flag} | {support} | {c['tp']} | {c['fn']} | {c['fp']} | {precision} | {recall} |")
    out += ["", "Per fault: files getting exactly their expected (scored) flags, and the flags raised instead.", "",
            "| fault | source | files | exact | missed flags | extra flags |", "|---|---|---:|---:|---|---|"]
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for item, result in zip(corpus, found, strict=True):
        groups[(item["fault"], item["origin"])].append((item, set(result["flags"])))
    fault_order = ["clean", *NUMPY_FAULTS, *FFMPEG_FAULTS]
    for (fault, origin), members in sorted(groups.items(), key=lambda kv: (fault_order.index(kv[0][0]), kv[0][1])):
        exact = sum((got - item["ignored"]) == item["expected"] for item, got in members)
        missed = Counter(flag for item, got in members for flag in item["expected"] - got)
        extra = Counter(flag for item, got in members for flag in got - item["expected"] - item["ignored"])
        out.append(f"| {fault} | {origin} | {len(members)} | {exact} | "
                   f"{', '.join(f'{k} {v}' for k, v in missed.most_common()) or '–'} | "
                   f"{', '.join(f'{k} {v}' for k, v in extra.most_common()) or '–'} |")
    dual = [(item, got) for item, got in itertools.chain(*groups.values())
            if item["origin"] == "gtzan" and "dual mono" not in item["expected"]]
    out += ["", f"Not scored: 'dual mono' on the GTZAN copies (mono sources): raised on "
            f"{sum('dual mono' in got for _, got in dual)}/{len(dual)}; 'true peak' on {borderline} files within "
            f"0.1 dB of {ceiling} dBTP by FFmpeg's ebur128 true peak (the reference for that flag elsewhere).", ""]
    if wrong:
        out += ["Files not flagged as expected (scored flags):", "",
                "| file | expected | got | spectral cutoff Hz | clipped runs | true peak dBTP (FFmpeg's) |",
                "|---|---|---|---:|---:|---:|"]
        for item, got, result in wrong:
            cutoff, peak, reference = result.get("cutoff_hz"), result.get("true_peak"), result.get("reference_peak")
            out.append(f"| {pathlib.Path(item['path']).name} | {', '.join(sorted(item['expected'])) or '–'} | "
                       f"{', '.join(got) or '–'}{' (error: ' + result['error'] + ')' if result.get('error') else ''}"
                       f" | {'' if cutoff is None else f'{cutoff:.0f}'} | {result.get('clipped_runs', '')} | "
                       f"{'' if peak is None else f'{peak:.2f}'} ({'' if reference is None else f'{reference:.2f}'}) |")
        out.append("")
    for label, keep in (("a health flag (health.flags: what tests/test_health.py bounds)", lambda f: f != "true peak"),
                        ("any flag, 'true peak' included", lambda f: True)):
        flagged = {source: [f for f in result["flags"] if keep(f)] for source, result in clean_flags.items()}
        flagged = {source: f for source, f in flagged.items() if f}
        kinds = Counter(f for fs in flagged.values() for f in fs)
        out.append(f"Clean GTZAN-dev clips as they are (22.05 kHz mono FLAC), {label}: {len(flagged)}/{len(clean_flags)} "
                   f"({len(flagged) / len(clean_flags):.1%})"
                   + (f" ({', '.join(f'{k} {v}' for k, v in kinds.most_common())}): "
                      + "; ".join(f"{s}: {', '.join(f)}" for s, f in sorted(flagged.items())) if flagged else "")
                   + ".")
    out.append("")
    return {"made_s": made_s, "check_s": check_s, "files": len(corpus)}


def product_version() -> str:
    """The commit measured, and the product files changed since (other work in the same checkout)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
        return done.stdout.rstrip("\n")
    status = git("status", "--porcelain", "--", "transforms", "pipelines", "schemas")
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return (f"Product: commit {git('rev-parse', '--short', 'HEAD') or '?'}"
            + (f", with uncommitted changes to {', '.join(changed)}" if changed else "") + f"; index: {PRODUCT_INDEX}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=60, help="GTZAN-dev clips used as sources (round-robin by genre)")
    parser.add_argument("--workdir", default=None, help="where the copies go (kept, and reused by a rerun); "
                                                         "default: a temporary folder")
    parser.add_argument("--results", default=None, help="also write the Markdown results here")
    args = parser.parse_args()
    for tool in ("ffmpeg", "ffprobe"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (make system-deps)")
    temporary = None if args.workdir else tempfile.TemporaryDirectory(prefix="cattag-copies-")
    work = pathlib.Path(args.workdir or temporary.name)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    out: list[str] = []
    try:
        with Pool(WORKERS) as pool:
            a = part_a(args, work, pool, out)
            b = part_b(args, work, pool, out)
    finally:
        if temporary:
            temporary.cleanup()
    total = time.time() - started
    out.append(f"Runtime: {total:.0f} s in all ({WORKERS} worker processes; Part A {a['files']} files, "
               f"Part B {b['files']} files), --clips {args.clips}.")
    text = "\n".join(["# Copies and health flags: precision and recall", "", product_version(), "", *out]) + "\n"
    print("\n" + text)
    if args.results:
        pathlib.Path(args.results).write_text(text)


if __name__ == "__main__":
    main()
