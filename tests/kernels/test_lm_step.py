"""The kernels chained into whole LM steps (the dispatch order a plan records) vs lm_reference.lm_step_reference.

A tiny random model (TINY_LM: D 128, 4 heads, 2 layers, F 352, a ring of 8) runs 11 steps, so the ring wraps; the
token fed back each step is the one the GPU's argmax wrote (never read by the CPU in between). Weights are stored
as the package would: q4 where the layout allows, f16 for ffn_out (F = 352 is not a multiple of 64), f32 VAD heads.

Tolerance: each kernel's a-priori f32 bound at D = 128 is ~66 roundings (~4e-6) of the sum of its terms'
magnitudes, and typical errors are sqrt(n) smaller; a step chains 2 + 5 L + 3 kernels whose errors add rather
than compound in a random network of this size (seen: ~2e-7 of the largest logit). Logits within 1e-5 of the
largest |logit| and VAD probabilities within 1e-5 keep > 10x margin yet catch any error of one part in 1e5.
Tokens must be equal wherever the reference's top two logits are further apart than that tolerance (random
weights can produce near-ties, which no tolerance can order).
"""

import numpy as np

from kernel_helpers import in_out, poisoned, weight_bindings
from kyutai_stt import gpu, quant
from kyutai_stt import lm_reference as ref
from kyutai_stt.config import TINY_LM

STEPS = 11
LOGIT_TOLERANCE = 1e-5     # relative to max |logit|
VAD_TOLERANCE = 1e-5


def random_model(rng, cfg):
    """(package-style streams per tensor, their quant types, dequantised float32 weights for the reference)."""
    d, f = cfg.dim, cfg.ffn_dim
    shapes = {"text_emb": ((cfg.text_card + 1, d), 1.0), "out_norm": ((d,), None), "text_head": ((cfg.text_card, d), d),
              "vad_heads": ((cfg.extra_heads_num_heads * cfg.extra_heads_dim, d), d)}
    shapes |= {f"audio_emb.{k}": ((cfg.card + 1, d), 1.0) for k in range(cfg.n_q)}
    for i in range(cfg.num_layers):
        shapes |= {f"layers.{i}.attn_norm": ((d,), None), f"layers.{i}.attn_qkv": ((3 * d, d), d),
                   f"layers.{i}.attn_out": ((d, d), d), f"layers.{i}.ffn_norm": ((d,), None),
                   f"layers.{i}.ffn_in": ((2 * f, d), d), f"layers.{i}.ffn_out": ((d, f), f)}
    streams, types, weights = {}, {}, {}
    for name, (shape, fan_in) in shapes.items():
        if fan_in is None:  # a norm's alpha: f32, around 1
            weights[name] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
            continue
        w = (rng.standard_normal(shape) / (np.sqrt(fan_in) if fan_in != 1.0 else 1.0)).astype(np.float32)
        types[name] = "f32" if name == "vad_heads" else "q4" if shape[1] % 64 == 0 else "f16"
        streams[name] = quant.quantize(w, types[name])
        weights[name] = quant.dequantize(streams[name], types[name], shape)
    return streams, types, weights


def concatenated(tables):
    """The audio tables as one buffer per stream, rows back to back (codebook k row r = row k * 2049 + r)."""
    return {key: np.concatenate([t[key] for t in tables]) for key in tables[0]}


class GpuLM:
    """The dispatch sequence of one step, on run_kernel: buffers live here as numpy arrays between dispatches."""

    def __init__(self, cfg, streams, types, weights):
        self.cfg, self.streams, self.types, self.weights = cfg, streams, types, weights
        self.audio_table = concatenated([streams[f"audio_emb.{k}"] for k in range(cfg.n_q)])
        self.freqs = ref.rope_frequencies(cfg.head_dim, cfg.max_period)
        ring = (cfg.num_heads, cfg.context, cfg.head_dim)
        self.k_cache = [np.zeros(ring, np.float32) for _ in range(cfg.num_layers)]
        self.v_cache = [np.zeros(ring, np.float32) for _ in range(cfg.num_layers)]
        self.token = np.array([cfg.text_card], np.uint32)  # the start token, then whatever argmax writes
        self.results = np.zeros(1 + cfg.extra_heads_num_heads, np.uint32)  # [token, VAD probabilities as f32]

    def matvec(self, name, x, y=None, input_mode=0, alpha=None, accumulate=False):
        rows, columns = self.weights[name].shape
        constants = {"ROWS": rows, "COLUMNS": columns, "INPUT_MODE": input_mode, "ACCUMULATE": accumulate}
        bindings = {**weight_bindings(self.streams[name]), 2: x,
                    3: in_out(y) if accumulate else poisoned(rows), 4: alpha if alpha is not None else x}
        rows_per_workgroup = 256 // 64 * 4  # the default tuning constants
        return gpu.run_kernel(f"matvec_{self.types[name]}", bindings, (-(-rows // rows_per_workgroup), 1, 1),
                              constants)[3]

    def step(self, position, codes):
        cfg, d = self.cfg, self.cfg.dim
        step_buffer = np.array([position, position % cfg.context], np.uint32)  # step fields: position, slot
        embed_workgroups = (-(-d // (8 * 8)), 1, 1)  # 8 elements per word, 8 words per workgroup
        x = gpu.run_kernel("embed_sum_q4", {**weight_bindings(self.audio_table), 2: codes.astype(np.uint32),
                                            3: poisoned(d)}, embed_workgroups,
                           {"DIM": d, "TABLES": cfg.n_q, "TABLE_ROWS": cfg.card + 1})[3]
        x = gpu.run_kernel("embed_sum_q4", {**weight_bindings(self.streams["text_emb"]), 2: self.token,
                                            3: in_out(x)}, embed_workgroups,
                           {"DIM": d, "TABLES": 1, "TABLE_ROWS": cfg.text_card + 1, "ACCUMULATE": True})[3]
        for i in range(cfg.num_layers):
            layer = f"layers.{i}."
            qkv = self.matvec(layer + "attn_qkv", x, input_mode=1, alpha=self.weights[layer + "attn_norm"])
            attention = gpu.run_kernel("attention", {
                0: qkv, 1: step_buffer, 2: self.freqs, 3: in_out(self.k_cache[i]), 4: in_out(self.v_cache[i]),
                5: poisoned(d), 6: poisoned(2)}, (cfg.num_heads, 1, 1),
                {"HEADS": cfg.num_heads, "HEAD_DIM": cfg.head_dim, "CONTEXT": cfg.context, "WORKGROUP_SIZE": 32})
            self.k_cache[i], self.v_cache[i] = attention[3], attention[4]
            x = self.matvec(layer + "attn_out", attention[5], y=x, accumulate=True)
            hidden = self.matvec(layer + "ffn_in", x, input_mode=1, alpha=self.weights[layer + "ffn_norm"])
            x = self.matvec(layer + "ffn_out", hidden, y=x, input_mode=2, accumulate=True)
        logits = self.matvec("text_head", x, input_mode=1, alpha=self.weights["out_norm"])
        outputs = gpu.run_kernel("argmax", {0: logits, 1: in_out(self.token), 2: in_out(self.results)}, (1, 1, 1),
                                 {"COUNT": cfg.text_card, "RESULT_STRIDE": len(self.results)})
        self.token, results = outputs[1], outputs[2]
        heads = cfg.extra_heads_num_heads
        vad = gpu.run_kernel("vad_heads", {0: x, 1: self.weights["out_norm"], 2: self.streams["vad_heads"]["w"],
                                           3: in_out(results.view(np.float32))}, (heads, 1, 1),
                             {"DIM": d, "HEADS": heads, "CLASSES": cfg.extra_heads_dim, "RESULT_STRIDE": 1 + heads,
                              "RESULT_OFFSET": 1})[3]
        self.results = vad.view(np.uint32)
        return logits, vad[1:], int(self.results[0])


def test_tiny_lm_steps_match_the_reference_across_the_ring_wrap(rng):
    cfg = TINY_LM
    streams, types, weights = random_model(rng, cfg)
    lm = GpuLM(cfg, streams, types, weights)
    state = ref.LMState.new(cfg)
    codes, token = ref.initial_inputs(cfg)
    for position in range(STEPS):
        logits, vad, gpu_token = lm.step(position, codes)
        expected_logits, expected_vad, expected_token = ref.lm_step_reference(weights, cfg, state, codes, token)

        scale = np.abs(expected_logits).max()
        np.testing.assert_allclose(logits, expected_logits, rtol=0, atol=LOGIT_TOLERANCE * scale,
                                   err_msg=f"logits at position {position}")
        np.testing.assert_allclose(vad, expected_vad, rtol=0, atol=VAD_TOLERANCE, err_msg=f"VAD at {position}")
        top_two = np.sort(expected_logits)[-2:]
        if top_two[1] - top_two[0] > 2 * LOGIT_TOLERANCE * scale:
            assert gpu_token == expected_token, f"token at position {position}"
        # Both continue from the GPU's token (as the engine will): a near-tie must not derail the comparison.
        token = gpu_token
        codes = rng.integers(0, cfg.card, cfg.n_q)
    assert state.position == STEPS
