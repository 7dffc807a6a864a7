"""`kyutai-stt transcribe`: outputs, formats, several files, progress, summary, and bad inputs.

Most tests run the command in-process against a fake Transcriber (tests/fake_model.py) that names each second of
audio after its dominant frequency, so they check the plumbing (decode -> 24 kHz -> feed -> writers) on their own.
The last tests run the real command (Transcriber, models_cache) in a subprocess on the tiny synthetic package.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import fake_model
import numpy as np
import pytest
from audio_helpers import sine, unreadable_file, write_audio, write_wav_int16

from kyutai_stt import cli
from kyutai_stt.cli.transcribe import PLAIN_INTERVAL_S, Progress
from kyutai_stt.models.lm import MAX_STREAMS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake(monkeypatch):
    return fake_model.install(monkeypatch)


@pytest.fixture
def pkg(tmp_path):
    """What the fake resolve_model accepts: any folder."""
    path = tmp_path / "pkg"
    path.mkdir()
    return path


def tone(path: Path, freq: float, seconds: float, rate: int = 44100, kind: str = "flac", channels: int = 1):
    planes = np.zeros((channels, round(rate * seconds)), np.float32)
    planes[0] = sine(freq, rate, seconds)
    return write_audio(path, planes, rate, kind)


def main(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["transcribe", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(*argv, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kyutai_stt.cli", *map(str, argv)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def summary(err: str) -> dict:
    return json.loads(err.strip().splitlines()[-1])


def test_text_to_stdout_with_note_and_summary(tmp_path, capsys, fake, pkg):
    audio = tone(tmp_path / "a.flac", 440, 2.5)
    code, out, err = main(capsys, audio, "--model", pkg, "--silence-prefix", "0.25")
    assert code == 0, err
    assert out == "440hz 440hz 440hz\n"                      # 1 s, 1 s, then the 0.5 s flushed
    assert f"NOTE: model {pkg} is a synthetic package (random weights): its transcript is meaningless" in err
    s = summary(err)
    assert s["files"] == 1 and s["audio_s"] == 2.5
    assert s["rtf"] == pytest.approx(s["wall_s"] / s["audio_s"], rel=0.01, abs=1e-3)
    (transcriber,) = fake.instances
    assert transcriber.silence_prefix == 0.25 and transcriber.package_dir == pkg
    assert max(transcriber.fed_seconds) == 1.0                  # 1 s chunks


def test_several_files_into_an_output_folder(tmp_path, capsys, fake, pkg):
    a = tone(tmp_path / "a.flac", 440, 2.2)
    b = tone(tmp_path / "b.mp3", 1000, 1.0, kind="mp3")
    out_dir = tmp_path / "subs"
    code, out, err = main(capsys, a, b, "--model", pkg, "--format", "srt", "--output", out_dir)
    assert code == 0, err
    assert out == ""
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.srt", "b.srt"]      # no temporary files left
    assert (out_dir / "a.srt").read_text() == "1\n00:00:00,000 --> 00:00:02,160\n440hz 440hz 440hz\n"
    assert (out_dir / "b.srt").read_text().startswith("1\n00:00:00,000 --> 00:00:00,8")   # reset between files
    assert "1000hz" in (out_dir / "b.srt").read_text()
    assert fake.instances[0].resets >= 2
    assert summary(err)["files"] == 2


def test_several_files_to_stdout_have_headers(tmp_path, capsys, fake, pkg):
    a, b = tone(tmp_path / "a.flac", 440, 1.0), tone(tmp_path / "b.flac", 2000, 1.0)
    code, out, _ = main(capsys, a, b, "--model", pkg, "--quiet")
    assert code == 0
    assert out == f"==> {a} <==\n440hz\n\n==> {b} <==\n2000hz\n"


def test_several_files_as_json_lines(tmp_path, capsys, fake, pkg):
    a, b = tone(tmp_path / "a.flac", 440, 1.0), tone(tmp_path / "b.wav", 700, 1.0, rate=16000, kind="wav16")
    code, out, _ = main(capsys, a, b, "--model", pkg, "--format", "json", "--quiet")
    assert code == 0
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["text"] for d in docs] == ["440hz", "700hz"]
    assert docs[1]["audio"] == {"path": str(b), "sample_rate": 16000, "channels": 1, "codec": "pcm_s16le",
                                "container": "wav", "duration_s": 1.0}
    assert docs[0]["synthetic"] is True and docs[0]["model"] == {"package": str(pkg), "variant": "fake",
                                                                 "quant": "q4", "created_by": "tests"}
    assert docs[0]["end_of_turns"] == [1.5]


def test_several_files_run_as_a_batch_and_come_out_in_input_order(tmp_path, capsys, fake, pkg):
    # The fake batch finishes the shortest file first: the transcripts still come in input order.
    a, b, c = (tone(tmp_path / f"{n}.flac", hz, s) for n, hz, s in (("a", 440, 3.0), ("b", 2000, 1.0),
                                                                     ("c", 700, 2.0)))
    code, out, err = main(capsys, a, b, c, "--model", pkg)
    assert code == 0, err
    assert out == (f"==> {a} <==\n440hz 440hz 440hz\n\n==> {b} <==\n2000hz\n\n==> {c} <==\n700hz 700hz\n")
    (batch,) = fake_model.FakeBatchTranscriber.instances
    assert batch.streams == 3
    assert summary(err)["streams"] == 3 and summary(err)["audio_s"] == 6.0
    code, out_one, err = main(capsys, a, b, c, "--model", pkg, "--streams", "1", "--quiet")
    assert code == 0 and out_one == out and len(fake_model.FakeBatchTranscriber.instances) == 1
    for bad in ("0", str(MAX_STREAMS + 1)):
        code, _, err = main(capsys, a, "--model", pkg, "--streams", bad)
        assert code == 2 and f"--streams {bad}: from 1 to {MAX_STREAMS}" in err
    assert summary(err := main(capsys, a, b, "--model", pkg, "--mimi-frames", "2")[2])["mimi_frames"] == 2, err
    assert fake_model.FakeBatchTranscriber.instances[-1].mimi_frames == 2
    for bad in ("0", "65"):
        code, _, err = main(capsys, a, b, "--model", pkg, "--mimi-frames", bad)
        assert code == 2 and f"--mimi-frames {bad}: from 1 to 64" in err


def test_parallel_segments_take_the_batch_one_file_at_a_time(tmp_path, capsys, fake, pkg):
    # A 50 s file is cut near 16.7 and 33.3 s (3 even parts of at least 15 s: streaming/segments.py), each
    # segment on its own stream: the fake names every second of each segment (and a last part of 0.1 s or more),
    # so 50 to 52 words come back, moved into place.
    a = tone(tmp_path / "a.flac", 440, 50.0)
    code, out, err = main(capsys, a, "--model", pkg, "--parallel-segments", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["text"].split()) == {"440hz"} and 50 <= len(doc["words"]) <= 52
    assert doc["audio"]["duration_s"] == 50.0
    starts = [w["start"] for w in doc["words"]]
    assert starts == sorted(starts) and starts[-1] >= 49.0
    (batch,) = fake_model.FakeBatchTranscriber.instances
    assert batch.streams == 3 and summary(err)["streams"] == 3, "no more streams than the file's 15 s segments"
    code, _, err = main(capsys, a, "--model", pkg, "--parallel-segments", "--streams", "4")
    assert code == 0 and summary(err)["streams"] == 4


def test_one_file_to_an_output_file_and_into_an_existing_folder(tmp_path, capsys, fake, pkg):
    audio = tone(tmp_path / "talk.flac", 440, 1.0)
    code, out, _ = main(capsys, audio, "--model", pkg, "--format", "vtt", "--output", tmp_path / "t.vtt")
    assert code == 0 and out == ""
    assert (tmp_path / "t.vtt").read_text() == "WEBVTT\n\n00:00:00.000 --> 00:00:00.800\n440hz\n"
    folder = tmp_path / "existing"
    folder.mkdir()
    assert main(capsys, audio, "--model", pkg, "--output", folder)[0] == 0
    assert (folder / "talk.txt").read_text() == "440hz\n"


def test_quiet_drops_progress_and_summary_but_keeps_the_note(tmp_path, capsys, fake, pkg):
    code, out, err = main(capsys, tone(tmp_path / "a.flac", 440, 1.0), "--model", pkg, "--quiet")
    assert code == 0 and out == "440hz\n"
    assert err.strip().splitlines() == [f"NOTE: model {pkg} is a synthetic package (random weights): its "
                                        "transcript is meaningless; it only exercises the pipeline."]


def test_8khz_warns_and_succeeds(tmp_path, capsys, fake, pkg):
    audio = tone(tmp_path / "phone.wav", 440, 1.5, rate=8000, kind="wav16")
    code, out, err = main(capsys, audio, "--model", pkg)
    assert code == 0, err
    assert out == "440hz 440hz\n"
    assert (f"warning: {audio}: 8000 Hz audio (telephone band): accuracy will be lower than with 16 kHz or more"
            in err)


def test_96khz_six_channels_succeed(tmp_path, capsys, fake, pkg):
    audio = tone(tmp_path / "film.flac", 3000, 1.0, rate=96000, channels=6)
    code, out, err = main(capsys, audio, "--model", pkg)
    assert code == 0, err
    assert out == "3000hz\n" and "warning" not in err


# ---- bad inputs: one clear message, exit 1, no traceback, and the model is never loaded ----------------------

def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "words.mp3"
    text.write_text("not audio, just text\n" * 30)
    nan = sine(440, 16000, 1.0)
    nan[100] = np.nan
    return {
        "missing": (tmp_path / "nope.wav", "nope.wav: no such file"),
        "unsupported": (text, "words.mp3: not an audio file this decoder can read"),
        "empty": (write_wav_int16(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000),
                  "empty.wav: the file holds no audio samples"),
        "nan": (write_audio(tmp_path / "nan.wav", nan, 16000, "wavf32"),
                "nan.wav: the audio contains NaN or infinite samples"),
        "too_low": (write_wav_int16(tmp_path / "low.wav", sine(100, 4000, 0.5), 4000),
                    "low.wav: sample rate 4000 Hz is outside the supported range 8000..384000 Hz"),
        "folder": (tmp_path, "is a directory, not an audio file"),
    }


@pytest.mark.parametrize("case", ["missing", "unsupported", "empty", "nan", "too_low", "folder"])
def test_bad_input_in_process(tmp_path, capsys, fake, pkg, case):
    path, message = bad_inputs(tmp_path)[case]
    good = tone(tmp_path / "good.flac", 440, 1.0)
    after = tone(tmp_path / "after.flac", 700, 1.0)
    code, out, err = main(capsys, good, path, after, "--model", pkg, "--output", tmp_path / "outs")
    assert code == 2 and out == ""
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("kyutai-stt transcribe: error: ") and message in err
    if case == "nan":             # found when its turn comes: the other files are done, their transcripts kept
        assert (tmp_path / "outs" / "good.txt").read_text() == "440hz\n"
        assert (tmp_path / "outs" / "after.txt").read_text() == "700hz\n"
        assert sorted(p.name for p in (tmp_path / "outs").iterdir()) == ["after.txt", "good.txt"]
    else:                         # found by the upfront check: no work done, no model loaded
        assert not (tmp_path / "outs").exists() and fake.instances == []


def test_unreadable_file_in_process(tmp_path, capsys, fake, pkg):
    import av  # noqa: F401,E401  (loaded before the effective user loses access to the virtualenv)
    with unreadable_file() as path:
        code = cli.main(["transcribe", str(path), "--model", str(pkg)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    assert "secret.wav: permission denied" in err


@pytest.mark.parametrize("case", ["missing", "unsupported", "empty", "too_low", "folder"])
def test_bad_input_in_a_subprocess(tmp_path, case):
    """The real command line; these inputs fail before the model is looked up, so no model is needed."""
    path, message = bad_inputs(tmp_path)[case]
    proc = run_cli("transcribe", path, "--model", tmp_path / "no-such-package", timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_output_name_collision_and_missing_output_folder(tmp_path, capsys, fake, pkg):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a, b = tone(tmp_path / "x" / "talk.flac", 440, 1.0), tone(tmp_path / "y" / "talk.flac", 440, 1.0)
    code, _, err = main(capsys, a, b, "--model", pkg, "--output", tmp_path / "out")
    assert code == 2 and "would both be written to" in err and "Traceback" not in err
    code, _, err = main(capsys, a, "--model", pkg, "--output", tmp_path / "no" / "such" / "t.txt")
    assert code == 2 and "does not exist" in err
    (tmp_path / "file.txt").write_text("")
    code, _, err = main(capsys, a, b, "--model", pkg, "--output", tmp_path / "file.txt")
    assert code == 2 and "--output must be a folder" in err


def test_bad_silence_prefix(tmp_path, capsys, fake, pkg):
    code, _, err = main(capsys, tone(tmp_path / "a.flac", 440, 1.0), "--model", pkg, "--silence-prefix", "-1")
    assert code == 2 and "--silence-prefix must be 0 or more" in err


def test_model_that_does_not_resolve(tmp_path, capsys, fake):
    code, _, err = main(capsys, tone(tmp_path / "a.flac", 440, 1.0), "--model", tmp_path / "nothing")
    assert code == 2 and "nothing: no such model package" in err and "Traceback" not in err


# ---- progress ----------------------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_progress_bar_on_a_terminal():
    stream, clock = io.StringIO(), Clock()
    p = Progress(stream, "talk.wav", 10.0, tty=True, clock=clock)
    clock.t += 2.0
    p.update(5.0)
    assert stream.getvalue() == "\r\033[K" + "talk.wav: " + "#" * 12 + "." * 12 + "  50.0% 0:05 / 0:10 RTF 0.40"
    clock.t += 0.01
    p.update(5.5)                                     # redraws at most every 0.1 s
    assert stream.getvalue().count("\r") == 1
    clock.t += 2.0
    p.finish(10.0)
    assert stream.getvalue().endswith("100.0% 0:10 / 0:10 RTF 0.40\n")


def test_progress_abandoned_mid_line_ends_the_line():
    stream, clock = io.StringIO(), Clock()
    p = Progress(stream, "talk.wav", 10.0, tty=True, clock=clock)
    p.abandon()
    assert stream.getvalue() == ""                    # nothing drawn: nothing to end
    clock.t += 1.0
    p.update(2.0)
    p.abandon()
    assert stream.getvalue().endswith("RTF 0.50\n")


def test_progress_without_a_terminal_is_a_plain_line_now_and_then():
    stream, clock = io.StringIO(), Clock()
    p = Progress(stream, "long.flac", 7200.0, tty=False, clock=clock)
    for minute in range(1, 4):                        # 3 minutes of wall time, 6 minutes of audio
        for _ in range(6):
            clock.t += 10.0
            p.update(minute * 120.0)
    p.finish(360.0)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 180 // PLAIN_INTERVAL_S
    assert lines[0] == "long.flac:   1.7% 2:00 / 2:00:00 RTF 0.25"
    assert "\r" not in stream.getvalue()


def test_progress_unknown_duration_and_disabled():
    stream, clock = io.StringIO(), Clock()
    p = Progress(stream, "s.ogg", None, tty=True, clock=clock)
    clock.t += 1.0
    p.update(4.0)
    assert stream.getvalue().endswith("s.ogg: 0:04 of audio RTF 0.25")
    quiet = io.StringIO()
    q = Progress(quiet, "s.ogg", 10.0, tty=True, clock=clock, enabled=False)
    clock.t += 1.0
    q.update(4.0)
    q.finish(10.0)
    assert quiet.getvalue() == ""


# ---- the real Transcriber on the tiny synthetic package ------------------------------------------------------------

def test_real_transcriber_on_8k_96k_and_six_channels(tmp_path, tiny_packages):
    package = tiny_packages("q4").root
    files = [tone(tmp_path / "phone.wav", 440, 1.0, rate=8000, kind="wav16"),
             tone(tmp_path / "hifi.flac", 1000, 1.0, rate=96000),
             tone(tmp_path / "film.m4a", 600, 1.0, rate=48000, kind="aac", channels=6)]
    out = tmp_path / "out"
    proc = run_cli("transcribe", *files, "--model", package, "--format", "json", "--output", out,
                   "--silence-prefix", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "8000 Hz audio (telephone band)" in proc.stderr
    assert f"NOTE: model {package} is a synthetic package" in proc.stderr
    for f in files:
        doc = json.loads((out / (f.stem + ".json")).read_text())
        assert doc["synthetic"] is True and doc["audio"]["duration_s"] == pytest.approx(1.0, abs=0.05)
        assert all(w["start"] <= w["end"] for w in doc["words"])
    s = json.loads(proc.stderr.strip().splitlines()[-1])
    # Three files on three streams (each transcript equal to a one-stream run's: tests/test_batch.py).
    assert s["files"] == 3 and s["streams"] == 3 and s["audio_s"] == pytest.approx(3.0, abs=0.1) and s["rtf"] > 0


def test_real_transcriber_text_to_stdout(tmp_path, tiny_packages):
    package = tiny_packages("q4").root
    proc = run_cli("transcribe", tone(tmp_path / "a.flac", 440, 1.0), "--model", package, "--silence-prefix", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "" or proc.stdout.endswith("\n")
    assert any(line.startswith("NOTE: model") for line in proc.stderr.splitlines())
    assert summary(proc.stderr)["mimi_frames"] == 8, "one file: Mimi 8 frames ahead on a CPU adapter (variants.json)"


def test_real_package_that_does_not_exist(tmp_path):
    proc = run_cli("transcribe", tone(tmp_path / "a.flac", 440, 1.0), "--model", tmp_path / "missing-package",
                   timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "missing-package" in proc.stderr and proc.stderr.startswith("kyutai-stt transcribe: error: ")


def test_real_command_with_nan_samples_and_an_empty_file(tmp_path, tiny_packages):
    cases = bad_inputs(tmp_path)
    package = tiny_packages("q4").root
    for case in ("nan", "empty"):
        path, message = cases[case]
        proc = run_cli("transcribe", path, "--model", package)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert message in proc.stderr and proc.stdout == ""


# ---- prompts (prompt.py) ---------------------------------------------------------------------------------------------

PROMPT_WAV = ROOT / "tests" / "fixtures" / "prompt_fr_24k.wav"


def test_prompt_options_reach_the_transcriber(tmp_path, capsys, fake, pkg):
    audio = tone(tmp_path / "a.flac", 440, 1.0)
    code, _, err = main(capsys, audio, "--model", pkg, "--prompt-text", "Loonah", "--prompt-audio", PROMPT_WAV)
    assert code == 0, err
    (transcriber,) = fake.instances
    assert transcriber.prompt.text == "Loonah" and transcriber.prompt.audio.size == 30000


def test_kv_rings_reach_the_transcriber(tmp_path, capsys, fake, pkg):
    files = [tone(tmp_path / f"{i}.flac", 440, 1.0) for i in range(2)]
    for args in ([files[0]], files):          # one file (Transcriber), two (BatchTranscriber)
        fake_model.FakeTranscriber.instances.clear()
        code, _, err = main(capsys, *args, "--model", pkg, "--kv-rings", "int8")
        assert code == 0, err
        assert [t.kv_rings for t in fake_model.FakeTranscriber.instances] == ["int8"]
    with pytest.raises(SystemExit) as exit_info:
        main(capsys, files[0], "--model", pkg, "--kv-rings", "f8")
    assert exit_info.value.code == 2 and "invalid choice: 'f8'" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, message", [
    ("--prompt-text", "", "--prompt-text is empty"),
    ("--prompt-text", "x" * 1001, "at most 1000"),
    ("--prompt-audio", "missing.wav", "missing.wav"),
    ("--prompt-audio", "junk.wav", "junk.wav"),
])
def test_bad_prompts_exit_2_before_the_model_loads(tmp_path, capsys, fake, pkg, option, value, message):
    audio = tone(tmp_path / "a.flac", 440, 1.0)
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wave file" * 20)
    if option == "--prompt-audio":
        value = tmp_path / value
    code, out, err = main(capsys, audio, "--model", pkg, option, value)
    assert code == 2 and out == "" and message in err and "Traceback" not in err, err
    assert err.startswith("kyutai-stt transcribe: error: ") and not fake.instances


def test_real_command_refuses_a_prompt_beyond_the_plan_room(tmp_path, tiny_packages):
    """Too many tokens is known once the model (its tokenizer, its plan) is: exit 2, before any GPU work."""
    audio = tone(tmp_path / "a.flac", 440, 0.5)
    proc = run_cli("transcribe", audio, "--model", tiny_packages("q4").root, "--prompt-text", "à " * 200,
                   timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "at most 128" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_real_transcriber_with_a_text_prompt(tmp_path, tiny_packages):
    """The real command with --prompt-text on the tiny package (~45 s on lavapipe, mostly compiling pipelines;
    tests/test_prompt.py covers the prompt itself)."""
    audio = tone(tmp_path / "a.flac", 440, 0.5)
    proc = run_cli("transcribe", audio, "--model", tiny_packages("q4").root, "--quiet", "--silence-prefix", "0",
                   "--prompt-text", "bonjour à tous", "--format", "json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(w["start"] >= 0 and w["end"] <= 0.5 for w in json.loads(proc.stdout)["words"])
