"""Small pieces of the browser engine, in Chromium: the plan variant a given adapter gets, the limits check, and
the AudioWorklet's resampler (run as a plain module, in the same 128-sample blocks an AudioWorklet delivers)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

OUT_RATE = 24_000
INT8 = "packed_4x8_integer_dot_product"
VARIANT_CASES = json.loads((Path(__file__).parents[1] / "vectors" / "variant_choice.json").read_text())["cases"]
# Spec defaults of WebGPU (platform.md §3), and an adapter far below them.
DEFAULT_LIMITS = {"maxStorageBufferBindingSize": 128 << 20, "maxBufferSize": 256 << 20,
                  "maxStorageBuffersPerShaderStage": 8, "maxComputeInvocationsPerWorkgroup": 256,
                  "maxComputeWorkgroupSizeX": 256, "maxComputeWorkgroupsPerDimension": 65535}
TINY_LIMITS = {**DEFAULT_LIMITS, "maxStorageBufferBindingSize": 1 << 16, "maxComputeInvocationsPerWorkgroup": 64,
               "maxComputeWorkgroupSizeX": 64}


@pytest.mark.parametrize("case", VARIANT_CASES, ids=lambda c: c["variant"])
def test_variant_choice(page, case):
    assert page.call("variantFor", case["adapter"]) == case["variant"]
    # Where a fast path's kernel does not compile (worker.js), the variant of the same adapter with nothing optional.
    assert page.call("portableVariantFor", case["adapter"]) == ("cpu" if case["variant"] == "cpu" else "gpu")


def test_limits_check(page):
    for variant in ("cpu", "gpu"):
        assert page.call("planFit", {"variant": variant, "limits": DEFAULT_LIMITS, "features": []}) == [], \
            "the tiny model fits WebGPU's default limits"
    problems = page.call("planFit", {"variant": "gpu", "limits": TINY_LIMITS, "features": []})
    assert any("binds at most 65536" in p for p in problems)
    assert any("invocations per workgroup" in p for p in problems)
    missing = page.call("planFit", {"variant": "gpu-subgroup", "limits": DEFAULT_LIMITS, "features": []})
    assert missing == ['the GPU lacks the feature "subgroups"']
    missing = page.call("planFit", {"variant": "gpu-int8", "limits": DEFAULT_LIMITS, "features": []})
    assert missing == [f'this browser\'s WGSL lacks the language feature "{INT8}"']
    assert page.call("planFit", {"variant": "gpu-int8", "limits": DEFAULT_LIMITS, "features": [],
                                 "languageFeatures": [INT8]}) == []
    error = page.call("deviceError", {"variant": "gpu", "limits": TINY_LIMITS})
    assert error["code"] == "adapter-limits" and "cannot run the model" in error["message"]


def test_the_browser_host_takes_plans_of_several_streams_and_refuses_nonsense(page):
    """Plans of several streams run here too (test_engine_browser_int8.py runs one); a stream count that is not a
    positive integer is refused with what to do."""
    for streams in (None, 1, 4, 256):
        changes = {} if streams is None else {"streams": streams}
        assert page.call("planFormatError", {"variant": "gpu", "changes": changes}) is None
    for streams in (0, 2.5, "two"):
        error = page.call("planFormatError", {"variant": "gpu", "changes": {"streams": streams}})
        assert error["code"] == "package-mismatch" and "not a positive integer" in error["message"]
        assert "Rebuild the site" in error["message"]


def test_device_memory_check(page):
    """A plan may take a quarter of navigator.deviceMemory (runtime.js DEVICE_MEMORY_SHARE): the tiny model's
    plan (~0.022 GiB) fits 0.1 GiB, not 0.05 GiB; an unknown memory (Firefox, Safari) is not checked."""
    fit = {"variant": "gpu", "limits": DEFAULT_LIMITS, "features": []}
    assert page.call("planFit", {**fit, "deviceMemoryGiB": 0.1}) == []
    assert page.call("planFit", {**fit, "deviceMemoryGiB": None}) == []
    (problem,) = page.call("planFit", {**fit, "deviceMemoryGiB": 0.05})
    assert "GB of GPU memory" in problem and "0.05 GiB" in problem


def resample(page, samples: np.ndarray, in_rate: int, block: int = 128) -> np.ndarray:
    got = page.call("resample", {"samples": base64.b64encode(samples.astype(np.float32).tobytes()).decode(),
                                 "inRate": in_rate, "outRate": OUT_RATE, "block": block})
    return np.frombuffer(base64.b64decode(got["samples"]), np.float32)


def tone(frequency: float, rate: int, seconds: float = 0.5) -> np.ndarray:
    return np.sin(2 * np.pi * frequency * np.arange(int(rate * seconds)) / rate)


@pytest.mark.parametrize("in_rate", [48_000, 44_100, 16_000])
def test_resampler_passes_speech_band_tones(page, in_rate):
    """A 1 kHz tone comes out as the same tone sampled at 24 kHz, aligned (output n is input time n / 24 kHz):
    the windowed sinc's passband error is ~1e-4; 1e-3 allows for float32 and the kernel table's interpolation."""
    out = resample(page, tone(1000, in_rate), in_rate)
    expected_length = int(0.5 * OUT_RATE)
    assert abs(len(out) - expected_length) <= 64, "all but the last few ms come out"
    t = np.arange(len(out)) / OUT_RATE
    settled = slice(64, None)                     # the first outputs see the zeros before the input's start
    np.testing.assert_allclose(out[settled], np.sin(2 * np.pi * 1000 * t)[settled], atol=1e-3)


@pytest.mark.parametrize("in_rate", [48_000, 44_100])
def test_resampler_removes_what_would_alias(page, in_rate):
    """15 kHz is above the 12 kHz output Nyquist frequency: without the low-pass it would fold to 9 kHz at full
    amplitude; the filter leaves less than -60 dB."""
    out = resample(page, tone(15_000, in_rate), in_rate)[64:]
    assert np.sqrt(np.mean(out**2)) < 1e-3 * np.sqrt(0.5)


def test_resampler_is_independent_of_block_size(page):
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(44_100 // 4).astype(np.float32)
    whole = resample(page, noise, 44_100, block=len(noise))
    blocks = resample(page, noise, 44_100, block=128)
    np.testing.assert_array_equal(blocks, whole)
