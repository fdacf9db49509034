"""decode(uri) -> mono float32 at the target rate, or an AudioError with a readable reason.

With `loudness=True` (`health=True`) the same pass also feeds every block, on the file's own channels
and rate, to a BS.1770 loudness meter (transforms.loudness) or the fault checks (transforms.health):
downmixed or resampled audio would measure differently.

libsndfile (through soundfile) reads wav, flac, ogg/vorbis, opus, mp3, au and aiff. Formats it
cannot read (m4a/aac and friends) go through FFmpeg when it is installed, and so does an Opus file that
libsndfile gives up on part way ("malformed": libsndfile 1.2 fails on some valid Opus streams that it
decodes at 24 kHz, e.g. FFmpeg's encodings of 22.05 kHz sources). Decoding streams block
by block: channels are averaged and the rate converted per block with soxr's streaming
resampler, so a 192 kHz 8-channel file costs no more memory than its mono result.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf
import soxr
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.health import Health, HealthMeter
from transforms.loudness import Loudness, LoudnessMeter

# Extensions libsndfile cannot decode; these need FFmpeg.
FFMPEG_SUFFIXES = frozenset({".m4a", ".mp4", ".aac", ".wma", ".webm", ".mka"})
# Extensions libsndfile decodes, but not every valid file of: FFmpeg gets a second try where it fails.
FFMPEG_RETRY_SUFFIXES = frozenset({".opus"})
_BLOCK_FRAMES = 1 << 16
# A file that decodes to less than this share of its declared length is reported as truncated.
_TRUNCATED_BELOW = 0.98
# libsndfile shortens the frame count of a WAV whose data chunk runs past the end of the file and
# says so only in its log: "data : 220500 (should be 110228)".
_SHORT_DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMING_SIZES = {0, 0xFFFFFFFF}  # written by streaming encoders that cannot seek back
_RESAMPLE_QUALITY = "HQ"  # soxr's high quality: 20-bit precision, the librosa default too


class AudioError(Exception):
    """One input could not be turned into audio. `stage` is 'read' or 'decode'."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32 mono at sample_rate_hz
    sample_rate_hz: int
    source_sample_rate_hz: int  # 0 when FFmpeg decoded the file (it resamples and downmixes itself)
    source_channels: int  # likewise
    loudness: Loudness | None = None  # measured when decode() was asked to
    health: Health | None = None  # likewise

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate_hz


def decode(uri: str, *, sample_rate_hz: int, max_duration_s: float, loudness: bool = False,
           health: bool = False) -> DecodedAudio:
    """Decodes `uri` (any Beam filesystem path) to mono float32 at `sample_rate_hz`, and with
    `loudness` measures it (DecodedAudio.loudness), with `health` checks it for faults (DecodedAudio.health).

    Raises:
        AudioError: the file is missing, empty, unreadable, not audio, longer than
            `max_duration_s`, truncated, or holds NaN or infinite samples.
    """
    if _size_bytes(uri) == 0:
        raise AudioError("read", "the file is empty (0 bytes)")
    if FileSystems.get_scheme(uri) in (None, "file"):
        return _decode_path(uri, sample_rate_hz=sample_rate_hz, max_duration_s=max_duration_s, loudness=loudness,
                            health=health)
    # Remote objects are streamed to a local file first: libsndfile recognises some formats (MP3
    # behind an ID3 tag) only by the file name, which a file-like object does not have.
    with tempfile.TemporaryDirectory(prefix="cattag-") as folder:
        local = os.path.join(folder, "input" + _suffix(uri))
        try:
            with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as source, open(local, "wb") as copy:
                shutil.copyfileobj(source, copy, 1 << 20)
        except Exception as err:  # network and permission errors of any filesystem
            raise AudioError("read", f"cannot read: {err}") from err
        return _decode_path(local, sample_rate_hz=sample_rate_hz, max_duration_s=max_duration_s, loudness=loudness,
                            health=health)


def _decode_path(path: str, *, sample_rate_hz: int, max_duration_s: float, loudness: bool = False,
                 health: bool = False) -> DecodedAudio:
    if _suffix(path) in FFMPEG_SUFFIXES:
        return _decode_ffmpeg(path, sample_rate_hz=sample_rate_hz, max_duration_s=max_duration_s, loudness=loudness,
                            health=health)
    try:
        return _decode_soundfile(path, sample_rate_hz=sample_rate_hz, max_duration_s=max_duration_s,
                                 loudness=loudness, health=health)
    except sf.LibsndfileError as err:
        reason = f"corrupt or not audio (libsndfile: {_libsndfile_reason(err)})"
        if _suffix(path) in FFMPEG_RETRY_SUFFIXES and shutil.which("ffmpeg"):
            try:
                return _decode_ffmpeg(path, sample_rate_hz=sample_rate_hz, max_duration_s=max_duration_s,
                                      loudness=loudness, health=health)
            except AudioError as retried:
                raise AudioError("decode", f"{reason}; FFmpeg: {retried.reason}") from err
        raise AudioError("decode", reason) from err
    except (OSError, RuntimeError) as err:
        raise AudioError("decode", f"decoding failed: {err}") from err


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _decode_soundfile(path, *, sample_rate_hz: int, max_duration_s: float, loudness: bool = False,
                      health: bool = False) -> DecodedAudio:
    with sf.SoundFile(path) as audio:
        rate, channels = audio.samplerate, audio.channels
        if rate <= 0 or channels <= 0:
            raise AudioError("decode", f"invalid header: {rate} Hz, {channels} channels")
        _check_data_chunk(audio.extra_info)
        declared = audio.frames if 0 < audio.frames < 2**62 else None
        if declared and declared / rate > max_duration_s:
            raise _too_long(declared / rate, max_duration_s)
        resampler = (
            None if rate == sample_rate_hz
            else soxr.ResampleStream(rate, sample_rate_hz, 1, dtype="float32", quality=_RESAMPLE_QUALITY)
        )
        meter = LoudnessMeter(rate, channels) if loudness else None
        checks = HealthMeter(rate, channels) if health else None
        pieces, read = [], 0
        for block in audio.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                bad = int(np.count_nonzero(~np.isfinite(block)))
                raise AudioError(
                    "decode", f"{bad} NaN or infinite samples near {read / rate:.1f} s"
                )
            read += len(block)
            if read / rate > max_duration_s:
                raise _too_long(read / rate, max_duration_s)
            if meter:
                meter.add(block)
            if checks:
                checks.add(block)
            mono = block.mean(axis=1, dtype=np.float32) if channels > 1 else block[:, 0]
            pieces.append(resampler.resample_chunk(mono) if resampler else mono.copy())
        if resampler:
            pieces.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    if read == 0:
        raise AudioError("decode", "the file holds no audio frames")
    if declared and read < _TRUNCATED_BELOW * declared:
        raise AudioError(
            "decode",
            f"truncated: the header declares {declared / rate:.2f} s, only {read / rate:.2f} s decode",
        )
    samples = np.concatenate(pieces).astype(np.float32, copy=False)
    return DecodedAudio(samples, sample_rate_hz, rate, channels, meter.result() if meter else None,
                        checks.result() if checks else None)


def _decode_ffmpeg(path: str, *, sample_rate_hz: int, max_duration_s: float, loudness: bool = False,
                   health: bool = False) -> DecodedAudio:
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        raise AudioError(
            "decode",
            f"{_suffix(path)[1:]} files need FFmpeg, which is not installed on this worker "
            "(install the ffmpeg package, or convert the file to FLAC)",
        )
    if loudness or health:
        return _decode_ffmpeg_as_wav(ffmpeg, path, sample_rate_hz=sample_rate_hz, max_duration_s=max_duration_s,
                                     loudness=loudness, health=health)
    # FFmpeg downmixes and resamples itself (-ac 1 -ar), and -t bounds how much it decodes.
    command = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path,
        "-map", "0:a:0", "-t", f"{max_duration_s + 1:.3f}",
        "-ac", "1", "-ar", str(sample_rate_hz), "-f", "f32le", "pipe:1",
    ]
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError("decode", f"FFmpeg could not decode it: {message[-1] if message else 'no message'}")
    samples = np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)
    if samples.size == 0:
        raise AudioError("decode", "the file holds no audio frames")
    if samples.size / sample_rate_hz > max_duration_s:
        raise _too_long(samples.size / sample_rate_hz, max_duration_s)
    if not np.isfinite(samples).all():
        raise AudioError("decode", "NaN or infinite samples")
    return DecodedAudio(samples, sample_rate_hz, 0, 0)


def _decode_ffmpeg_as_wav(ffmpeg: str, path: str, *, sample_rate_hz: int, max_duration_s: float,
                          loudness: bool, health: bool) -> DecodedAudio:
    """FFmpeg to a float WAV on its own channels and rate, then the soundfile path: the loudness meter
    needs the channels a downmix would lose."""
    with tempfile.TemporaryDirectory(prefix="cattag-") as folder:
        wav = os.path.join(folder, "decoded.wav")
        command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path,
                   "-map", "0:a:0", "-t", f"{max_duration_s + 1:.3f}", "-c:a", "pcm_f32le", wav]
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            raise AudioError("decode", f"FFmpeg could not decode it: {message[-1] if message else 'no message'}")
        decoded = _decode_soundfile(wav, sample_rate_hz=sample_rate_hz, max_duration_s=max_duration_s,
                                    loudness=loudness, health=health)
    return dataclasses.replace(decoded, source_sample_rate_hz=0, source_channels=0)


def _size_bytes(uri: str) -> int:
    # exists()/size() of the filesystem take the path literally; FileSystems.match would read
    # the brackets of "Song [live].mp3" as a glob.
    filesystem = FileSystems.get_filesystem(uri)
    try:
        if not filesystem.exists(uri):
            raise AudioError("read", "no such file")
        return filesystem.size(uri)
    except AudioError:
        raise
    except Exception as err:  # permissions, network errors, BeamIOError
        raise AudioError("read", f"cannot open: {err}") from err


def _check_data_chunk(log: str) -> None:
    match = _SHORT_DATA_CHUNK.search(log)
    if match:
        declared, present = int(match.group(1)), int(match.group(2))
        if declared not in _STREAMING_SIZES and present < _TRUNCATED_BELOW * declared:
            raise AudioError(
                "decode",
                f"truncated: the header declares {declared} bytes of audio, the file holds {present}",
            )


def _too_long(seconds: float, limit_s: float) -> AudioError:
    return AudioError(
        "decode",
        f"too long: {seconds / 60:.1f} min exceeds the {limit_s / 60:.0f} min limit "
        "(raise --max-track-seconds to process it)",
    )


def _libsndfile_reason(err: sf.LibsndfileError) -> str:
    text = (getattr(err, "error_string", "") or str(err)).strip().rstrip(".")
    # libsndfile's MP3 probe says this of data it cannot parse; decode() has already checked
    # that the file exists and is not empty, so say what it means here.
    if "does not exist or is not a regular file" in text:
        return "no recognisable audio format in the data"
    return text
