"""A whole streaming frame: the LM step, then the Mimi encoder, in one plan (one submission per 80 ms frame).

Order gives the official alignment for free: the LM step of frame k reads the codes Mimi wrote during frame k-1
(start tokens after reset), then Mimi encodes frame k's 1920 samples into the same buffer for step k+1. The text
token is fed back on the GPU too, so nothing comes back to the CPU inside or between frames except the results.
"""
from __future__ import annotations

from kyutai_stt.config import LMConfig, MimiConfig
from kyutai_stt.engine.plan import Plan, PlanBuilder
from kyutai_stt.models.lm import Tensor, Tuning, build_lm, tensors_of
from kyutai_stt.models.mimi import build_mimi, split_for_streams


def stt_plan(package, tuning: Tuning, streams: int = 1) -> Plan:
    """The whole-frame plan of an opened package (weights/package.Package): every host and tool builds it here."""
    return build_stt_plan(package.config, package.mimi_config, tensors_of(package), package.manifest["tensors"],
                          tuning, streams)


def build_stt_plan(lm_cfg: LMConfig, mimi_cfg: MimiConfig, lm_tensors: dict[str, Tensor], manifest_tensors: dict,
                   tuning: Tuning, streams: int = 1) -> Plan:
    """Inputs: "pcm" f32[frame_size] per frame (24 kHz mono). Outputs: "results" [token, VAD probabilities] of
    the LM step. Each per stream, for `streams` independent streams (docs/plan.md "Streams")."""
    b = PlanBuilder("stt", streams)
    position = b.step_field("position")
    codes = b.stream_buffer("codes", "state", (lm_cfg.n_q,), "u32", reset_fill=lm_cfg.card)
    pcm = b.stream_buffer("pcm", "input", (mimi_cfg.frame_size,))
    b.inputs["pcm"] = pcm
    b.stage("lm")
    b.outputs["results"] = build_lm(b, lm_cfg, lm_tensors, codes, position, tuning)
    b.stage("mimi")
    build_mimi(b, manifest_tensors, pcm, codes, "step", cfg=mimi_cfg, tuning=split_for_streams(tuning.mimi, streams))
    return b.build()
