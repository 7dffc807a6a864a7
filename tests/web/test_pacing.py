"""A device too slow for live audio (web/pacing.js): the backlog bound drops the oldest frames, the verdict comes
after the first 2 s of audio with the real-time factor (a lower bound while no frame finished); end to end, an
artificially slow engine (the test-frame-delay page parameter) gets a message with the figure and what to do, and
its backlog stays within the bound."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from chromium import open_app, wait_state

PACER = """async ([script, frameMs, maxBacklogSeconds]) => {
  const {LivePacer} = await import('/pacing.js');
  const pacer = new LivePacer(frameMs, maxBacklogSeconds);
  const log = [];
  for (const [op, value, now] of script) {
    if (op === 'add') {
      const {dropped, pace} = pacer.add(value, now);
      log.push({dropped, pace});
    } else if (op === 'take') log.push(pacer.take(now) ?? null);
    else pacer.done(value);
  }
  return {log, waiting: pacer.waiting, dropped: pacer.dropped};
}"""


def run_pacer(page, script, frame_ms=80, max_backlog_s=0.4):
    return page.page.evaluate(PACER, [script, frame_ms, max_backlog_s])


def test_bound_drops_the_oldest_frames(page):
    # 0.4 s of 80 ms frames: 5 wait at most; frames are numbers here.
    got = run_pacer(page, [["add", i, i * 80] for i in range(8)] + [["take", None, 700]])
    assert [e["dropped"] for e in got["log"][:8]] == [[]] * 5 + [[0], [1], [2]]
    assert got["log"][8] == 3, "the oldest frame left is taken first"
    assert got["waiting"] == 4 and got["dropped"] == 3
    kept = run_pacer(page, [["add", i, i] for i in range(100)], max_backlog_s=float("inf"))
    assert kept["dropped"] == 0 and kept["waiting"] == 100, "Infinity keeps every frame"


def test_verdict_after_two_seconds_of_audio(page):
    # A frame takes 40 ms: keeps up. The verdict comes with the 25th frame (2 s of 80 ms frames), once.
    script = []
    for i in range(30):
        script += [["add", i, i * 80], ["take", None, i * 80], ["done", 40, None]]
    got = run_pacer(page, script, max_backlog_s=3)
    paces = [e["pace"] for e in got["log"] if isinstance(e, dict) and e["pace"]]
    assert len(paces) == 1
    assert paces[0]["keepsUp"] and paces[0]["realTimeFactor"] == pytest.approx(0.5) and not paces[0]["lowerBound"]
    assert paces[0]["frames"] == 24

    # A slow device: no frame finished before the verdict, so the time since the first frame was taken is a lower
    # bound of one frame's processing.
    script = [["add", 0, 0], ["take", None, 10]] + [["add", i, i * 80] for i in range(1, 25)]
    pace = run_pacer(page, script, max_backlog_s=3)["log"][-1]["pace"]
    assert pace["lowerBound"] and not pace["keepsUp"] and pace["frames"] == 0
    assert pace["msPerFrame"] == pytest.approx(24 * 80 - 10)
    assert pace["realTimeFactor"] == pytest.approx((24 * 80 - 10) / 80)


def test_slow_device_says_so_and_bounds_the_backlog(browser, server, tmp_path):
    page, console, _ = open_app(browser, server, "silence=0&backlog=1&test-frame-delay=300")
    assert wait_state(page, ["ready", "error"], console=console) == "ready", page.inner_text("#error")
    assert page.is_hidden("#slow")
    page.click("#mic")
    wait_state(page, ["listening"], timeout=30_000, console=console)
    page.wait_for_selector("#slow", state="visible", timeout=60_000)
    message = page.inner_text("#slow")
    rtf = float(re.search(r"real-time factor (?:more than )?([0-9.]+)", message).group(1))
    assert rtf > 3, message                      # 300 ms of delay per 80 ms frame, at the least
    assert "at most 1 s behind" in message and "Transcribe a file" in message, message
    page.wait_for_function("/s skipped/.test(document.getElementById('stats').textContent)", timeout=120_000)
    stats = page.inner_text("#stats")
    behind = int(re.search(r"(\d+) frames behind", stats).group(1))
    assert behind <= 12 + 3, f"the backlog is bounded to 1 s (12 frames) + frames in flight: {stats}"
    shot = Path(os.environ.get("KYUTAI_STT_SCREENSHOT_DIR", tmp_path)) / "app-slow-device.png"
    page.screenshot(path=str(shot), full_page=True)
    page.close()                                 # (stopping would flush the bounded backlog: tested elsewhere)
