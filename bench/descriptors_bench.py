"""Tempo and key estimators on the published annotations of GTZAN-dev, side by side in one run, with their
speed; optionally Essentia's extractors as a reference from a separate virtual environment.

    .venv/bin/python bench/descriptors_bench.py [--essentia-python /tmp/essentia-venv/bin/python]

Annotations: ../shared/data/gtzan-dev/annotations.csv (tempo: GTZAN-Rhythm via TempoBeatDownbeat, all 60
clips; key: Kraft and Lerch, 51 clips). Scores: Acc1 = within 4% of the annotated tempo; Acc2 = within 4%
of it times 1, 2, 3, 1/2 or 1/3; key = MIREX weighted score (1 same, 0.5 fifth, 0.3 relative, 0.2
parallel). Speed: audio seconds per second of one core (BLAS and FFT threads limited to one), decoding
excluded (every estimator gets the same decoded 16 kHz mono, cattag's; librosa's own defaults get 22.05 kHz).

Essentia is AGPL: it is never imported here. With --essentia-python, a script runs in that interpreter
(a venv with `pip install essentia`) and prints its estimates as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import threadpoolctl  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GTZAN = REPO.parent / "shared" / "data" / "gtzan-dev"

from transforms import audio  # noqa: E402
from transforms import key as key_estimation  # noqa: E402
from transforms import tempo as tempo_estimation  # noqa: E402

RATE = 16000
PITCH = key_estimation.PITCH_CLASSES
# Krumhansl and Kessler (1982) and Temperley (1999) profiles: the classic alternatives to the default.
KRUMHANSL = ([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88],
             [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
TEMPERLEY = ([5, 2, 3.5, 2, 4.5, 4, 2, 4.5, 2, 3.5, 1.5, 4], [5, 2, 3.5, 4.5, 2, 4, 2, 4.5, 3.5, 2, 1.5, 4])

ESSENTIA_SCRIPT = r"""
import json, sys
import essentia.standard as es
out = {}
for path in sys.argv[1:]:
    audio = es.MonoLoader(filename=path, sampleRate=44100)()
    bpm = es.RhythmExtractor2013(method="multifeature")(audio)[0]
    keys = {}
    for profile in ("bgate", "edma", "krumhansl", "temperley"):
        key, scale, strength = es.KeyExtractor(profileType=profile)(audio)
        keys[profile] = key + " " + scale
    out[path] = {"bpm": float(bpm), "keys": keys}
print(json.dumps(out))
"""


def annotations() -> list[dict]:
    with open(GTZAN / "annotations.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def clip_path(track_id: str) -> pathlib.Path:
    return GTZAN / track_id.split(".")[0] / f"{track_id}.flac"


def tempo_scores(estimates: dict[str, float], rows: list[dict]) -> tuple[float, float]:
    acc1 = acc2 = 0
    for row in rows:
        truth, found = float(row["tempo_bpm"]), estimates[row["track_id"]]
        acc1 += abs(found - truth) <= 0.04 * truth
        acc2 += any(abs(found - truth * m) <= 0.04 * truth * m for m in (1, 2, 3, 1 / 2, 1 / 3))
    return acc1 / len(rows), acc2 / len(rows)


def mirex(found: str, truth: str) -> float:
    if found == truth:
        return 1.0
    (ft, fm), (tt, tm) = found.replace("Bb", "A#").split(), truth.split()
    flats = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
    fi, ti = PITCH.index(flats.get(ft, ft)), PITCH.index(tt)
    if fm == tm and (fi - ti) % 12 in (5, 7):
        return 0.5
    if fm == "minor" and tm == "major" and (ti - fi) % 12 == 3 or fm == "major" and tm == "minor" and (fi - ti) % 12 == 3:
        return 0.3
    if fm != tm and fi == ti:
        return 0.2
    return 0.0


def key_score(estimates: dict[str, str], rows: list[dict]) -> float:
    keyed = [row for row in rows if row["key"]]
    return sum(mirex(estimates[row["track_id"]], row["key"]) for row in keyed) / len(keyed)


def timed(function, clips: dict[str, np.ndarray], rate: int) -> tuple[dict, float]:
    started = time.perf_counter()
    results = {track: function(samples) for track, samples in clips.items()}
    elapsed = time.perf_counter() - started
    return results, sum(len(s) for s in clips.values()) / rate / elapsed


def correlate_profile(profile: np.ndarray, templates) -> str:
    best, best_r = "", -2.0
    for mode, template in zip(("major", "minor"), templates):
        for tonic in range(12):
            r = float(np.corrcoef(profile, np.roll(np.asarray(template, float), tonic))[0, 1])
            if r > best_r:
                best, best_r = f"{PITCH[tonic]} {mode}", r
    return best


def loudness_against_ffmpeg() -> None:
    """cattag's meter against FFmpeg's ebur128 filter (an independent BS.1770-4 / R128 meter, one decimal)
    on the 60 GTZAN-dev clips (mono 22.05 kHz), catalogue-sample's music and speech (stereo and mono,
    Ogg and MP3) and generated 5.1 at 96 kHz and stereo at 192 kHz: the largest differences."""
    import re
    import shutil
    import tempfile

    import soundfile as sf

    ffmpeg = shutil.which("ffmpeg")
    folder = pathlib.Path(tempfile.mkdtemp(prefix="cattag-loudness-"))
    rng = np.random.default_rng(3)
    for name, rate, channels in (("surround-5.1-96k.wav", 96000, 6), ("stereo-192k.wav", 192000, 2)):
        seconds = 10
        t = np.arange(seconds * rate) / rate
        steps = np.repeat(rng.uniform(0.05, 0.8, (seconds * 4, channels)), rate // 4, axis=0)
        tones = np.stack([np.sin(2 * np.pi * (110 * (c + 1)) * t) for c in range(channels)], axis=1)
        sf.write(folder / name, (tones * steps).astype(np.float32), rate, subtype="PCM_24")
    paths = sorted(GTZAN.glob("*/*.flac")) + sorted(p for p in (GTZAN.parent / "catalogue-sample").glob("*.*")
                                            if p.suffix in (".ogg", ".mp3", ".flac", ".wav")) \
        + sorted(folder.glob("*.wav"))
    worst = {"lufs": 0.0, "lra": 0.0, "peak": 0.0}
    started, audio_s, measured = 0.0, 0.0, 0
    for path in paths:
        begin = time.perf_counter()
        decoded = audio.decode(str(path), sample_rate_hz=RATE, max_duration_s=600, loudness=True)
        started += time.perf_counter() - begin
        audio_s += decoded.duration_s
        ours = decoded.loudness
        done = subprocess.run([ffmpeg, "-nostats", "-hide_banner", "-i", str(path), "-af", "ebur128=peak=true",
                               "-f", "null", "-"], capture_output=True, text=True, check=True)
        summary = done.stderr[done.stderr.rindex("Summary:"):]
        ref = {k: float(re.search(rf"{label}:\s+(-?[\d.]+|-inf)", summary).group(1))
               for k, label in (("lufs", "I"), ("lra", "LRA"), ("peak", "Peak"))}
        if ours.loudness_lufs is None or ref["lufs"] <= -70:
            continue
        measured += 1
        for key, value in (("lufs", ours.loudness_lufs), ("lra", ours.loudness_range_lu), ("peak", ours.true_peak_dbtp)):
            if value is not None:
                worst[key] = max(worst[key], abs(value - ref[key]))
                if abs(value - ref[key]) > 0.3:
                    print(f"  {path.name}: {key} {value:.2f} against {ref[key]:.1f}")
    print(f"Loudness against FFmpeg's ebur128 on {measured} files: largest |difference| integrated "
          f"{worst['lufs']:.2f} LU, range {worst['lra']:.2f} LU, true peak {worst['peak']:.2f} dB "
          f"(FFmpeg prints one decimal); decode with the meter {audio_s / started:.0f}x realtime")
    shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--essentia-python", help="an interpreter with essentia installed (reference only)")
    parser.add_argument("--output", default="/tmp/cattag-descriptors-bench.json")
    parser.add_argument("--loudness-only", action="store_true", help="only the loudness comparison with FFmpeg")
    parser.add_argument("--mtt-tags", help="a `cattag tag --model musicnn-mtt` output of GTZAN-dev's manifest: also "
                                           "measure a tempo prior moved by the tagger's fast / slow tags")
    args = parser.parse_args()
    loudness_against_ffmpeg()
    if args.loudness_only:
        return
    threadpoolctl.threadpool_limits(1)
    import librosa  # a reference estimator, not cattag's code path

    rows = annotations()
    clips = {row["track_id"]: audio.decode(str(clip_path(row["track_id"])), sample_rate_hz=RATE,
                                           max_duration_s=60).samples for row in rows}
    clips22 = {row["track_id"]: audio.decode(str(clip_path(row["track_id"])), sample_rate_hz=22050,
                                             max_duration_s=60).samples for row in rows}
    results: dict[str, dict] = {}

    onsets = tempo_estimation.onset_basis(RATE)
    found, speed = timed(lambda s: tempo_estimation.estimate_tempo(s, onsets).bpm, clips, RATE)
    results["tempo: cattag (flux comb, 4 multiples, 120 BPM prior), 16 kHz"] = {
        "scores": tempo_scores(found, rows), "x_realtime": speed}
    found, speed = timed(lambda s: float(librosa.feature.tempo(y=s, sr=22050)[0]), clips22, 22050)
    results["tempo: librosa feature.tempo, 22.05 kHz, default"] = {"scores": tempo_scores(found, rows), "x_realtime": speed}
    found, speed = timed(lambda s: float(librosa.feature.tempo(y=s, sr=RATE, hop_length=160)[0]), clips, RATE)
    results["tempo: librosa feature.tempo, 16 kHz, 100 frames/s"] = {"scores": tempo_scores(found, rows),
                                                                     "x_realtime": speed}

    def comb_variant(multiples: int, octaves: float):
        def estimate(samples):
            envelope = tempo_estimation.onset_envelope(samples, onsets)
            return tempo_estimation.best_tempo(envelope, onsets.frame_rate_hz, multiples=multiples, octaves=octaves)[0]
        return estimate

    for multiples in (1, 2, 3, 4):
        for octaves in (0.5, 1.0, 2.0):
            found, speed = timed(comb_variant(multiples, octaves), clips, RATE)
            results[f"tempo: flux comb of {multiples}, prior sd {octaves} octave"] = {
                "scores": tempo_scores(found, rows), "x_realtime": speed}

    if args.mtt_tags:
        # A rule declared before measuring: the prior's centre moves by (p_fast - p_slow) octaves.
        from schemas import tags as tag_schema
        from schemas.tag_output import TagOutput

        table = TagOutput(args.mtt_tags).read_tags(["track_id", "probabilities"])
        files = TagOutput(args.mtt_tags).tag_files()
        labels = tag_schema.labels_of(__import__("pyarrow.parquet").parquet.read_schema(files[0]))
        fast, slow = labels.index("fast"), labels.index("slow")
        centre = {row["track_id"]: 120.0 * 2 ** float(np.clip(row["probabilities"][fast] - row["probabilities"][slow],
                                                               -1, 1)) for row in table.to_pylist()}

        def tag_prior(track: str):
            def estimate(samples):
                envelope = tempo_estimation.onset_envelope(samples, onsets)
                return tempo_estimation.best_tempo(envelope, onsets.frame_rate_hz, centre_bpm=centre[track])[0]
            return estimate

        found = {track: tag_prior(track)(samples) for track, samples in clips.items()}
        results["tempo: comb of 4, prior centred at 120 x 2^(p_fast - p_slow) of musicnn-mtt"] = {
            "scores": tempo_scores(found, rows)}

    chroma = key_estimation.chroma_basis(RATE)
    found, speed = timed(lambda s: key_estimation.estimate_key(s, chroma).key, clips, RATE)
    results["key: cattag (STFT peaks, tuning, Albrecht-Shanahan), 16 kHz"] = {
        "score": key_score(found, rows), "x_realtime": speed}
    for name, templates in (("Krumhansl-Kessler", KRUMHANSL), ("Temperley", TEMPERLEY)):
        found, speed = timed(lambda s, t=templates: correlate_profile(key_estimation.pitch_class_profile(s, chroma), t),
                             clips, RATE)
        results[f"key: cattag's profile of STFT peaks, {name} templates"] = {"score": key_score(found, rows),
                                                                            "x_realtime": speed}
        found, speed = timed(lambda s, t=templates: correlate_profile(
            librosa.feature.chroma_cqt(y=s, sr=22050).sum(axis=1), t), clips22, 22050)
        results[f"key: librosa chroma_cqt, {name} templates"] = {"score": key_score(found, rows), "x_realtime": speed}

    if args.essentia_python:
        paths = [str(clip_path(row["track_id"])) for row in rows]
        started = time.perf_counter()
        done = subprocess.run([args.essentia_python, "-c", ESSENTIA_SCRIPT, *paths], capture_output=True, text=True,
                              check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        elapsed = time.perf_counter() - started
        essentia = {pathlib.Path(p).stem: v for p, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
        results["tempo: Essentia RhythmExtractor2013 multifeature (AGPL, reference)"] = {
            "scores": tempo_scores({t: v["bpm"] for t, v in essentia.items()}, rows),
            "x_realtime_incl_decode_all_extractors": sum(len(s) for s in clips.values()) / RATE / elapsed}
        for profile in ("bgate", "edma", "krumhansl", "temperley"):
            results[f"key: Essentia KeyExtractor {profile} (AGPL, reference)"] = {
                "score": key_score({t: v["keys"][profile] for t, v in essentia.items()}, rows)}

    print("| estimator | tempo Acc1 / Acc2 (60 clips) | key MIREX score (51 clips) | x realtime, one core |")
    print("|---|---|---|---|")
    for name, result in results.items():
        tempo = "%.3f / %.3f" % tuple(result["scores"]) if "scores" in result else "-"
        key = "%.3f" % result["score"] if "score" in result else "-"
        speed = result.get("x_realtime")
        print(f"| {name} | {tempo} | {key} | {f'{speed:.0f}' if speed else '-'} |")
    pathlib.Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
