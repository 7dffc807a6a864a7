// Greedy text token: the index of the largest logit, the lowest index on ties; written where the next step's
// embedding reads it (no CPU round trip) and where the host reads results back. A text prompt (the official
// prompting script's rule) restricts the candidates until its ids have all been emitted.
//
//   logits: [STREAMS, LOGITS_STRIDE] f32   (the COUNT logits of stream s start at s * LOGITS_STRIDE + LOGITS_OFFSET)
//   prompt: [STREAMS, 2 + PROMPT_CAPACITY] u32 = [n, e, id_0 .. id_{n-1}, unused]: n prompt ids, e of them emitted
//   A_s = {BOUNDARY_TOKEN, PADDING_TOKEN, id_e} while e < n, else every i < COUNT
//   token_s = min { i in A_s : logits[s, LOGITS_OFFSET + i] = max_{j in A_s} logits[s, LOGITS_OFFSET + j] }
//   e += 1 when token_s = id_e and token_s is neither BOUNDARY_TOKEN nor PADDING_TOKEN (the GPU keeps the position:
//   the host writes [n, 0, ids] once, at the stream's first frame; all zeros = no prompt)
//   tokens[s * TOKEN_STRIDE + TOKEN_INDEX] = token_s     (the next step's text id: embed_sum's ids)
//   results[s * RESULT_STRIDE + RESULT_INDEX] = token_s  (the step's results, copied out for readback)
// NaN logits are never chosen (all NaN or -inf: token 0).
//
// A stream sitting the frame out (step[ACTIVE_INDEX + s] == 0, plans of several streams) keeps its token and prompt
// position: nothing is written for it.
//
// Bindings (group 0): 0 = logits (read), 1 = tokens (read_write, u32), 2 = results (read_write, u32),
// 3 = prompt (read_write, u32), 4 = step (read, u32: the plan's step buffer).
// Dispatch: (STREAMS, 1, 1) workgroups of WORKGROUP_SIZE invocations (one workgroup per stream).

// The text vocabulary: 8000 for the LM.
override COUNT: u32;
// Where the logits sit in their buffer (e.g. the text head and the VAD heads sharing one output buffer).
override LOGITS_OFFSET: u32 = 0u;
override LOGITS_STRIDE: u32 = COUNT;
// Where the token goes for the next step (e.g. TOKEN_INDEX 32 of a [codes | token] ids row, TOKEN_STRIDE 33).
override TOKEN_STRIDE: u32 = 1u;
override TOKEN_INDEX: u32 = 0u;
// Where it goes in the readback results (e.g. [token, 4 VAD probabilities] per stream).
override RESULT_STRIDE: u32 = 1u;
override RESULT_INDEX: u32 = 0u;
// The prompt's room per stream (ids), and the two tokens that stay allowed while it is enforced (the word
// boundary 0 and the text padding id 3 in the Kyutai models).
override PROMPT_CAPACITY: u32 = 0u;
override BOUNDARY_TOKEN: u32 = 0u;
override PADDING_TOKEN: u32 = 3u;
// 256: the portable maximum; 8000 logits are ~32 per invocation before the reduction.
override WORKGROUP_SIZE: u32 = 256u;
// Where stream 0's "active" flag sits in the step buffer; 0xFFFFFFFF: every stream takes every frame.
override ACTIVE_INDEX: u32 = 0xFFFFFFFFu;

const LOWEST = -3.402823e38;
const NONE = 0xFFFFFFFFu;  // index of "no candidate": loses every tie

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> results: array<u32>;
@group(0) @binding(3) var<storage, read_write> prompt: array<u32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

var<workgroup> best_values: array<f32, WORKGROUP_SIZE>;
var<workgroup> best_indices: array<u32, WORKGROUP_SIZE>;
var<workgroup> prompt_next: u32;      // the prompt id that may win besides the two tokens, NONE without a prompt

// Whether candidate (value, index) beats the current best: larger, or equal with a lower index.
fn beats(value: f32, index: u32, best_value: f32, best_index: u32) -> bool {
    return value > best_value || (value == best_value && index < best_index);
}

struct Candidate {
    value: f32,
    index: u32,
}

// best after index i of value v: taken if larger; indices past COUNT, or outside the prompt's allowed ones while a
// prompt is enforced (next != NONE), are skipped.
fn scan(best: Candidate, i: u32, value: f32, next: u32) -> Candidate {
    if (i >= COUNT || (next != NONE && i != next && i != BOUNDARY_TOKEN && i != PADDING_TOKEN)) {
        return best;
    }
    if (value > best.value) {
        return Candidate(value, i);
    }
    return best;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let stream = workgroup.x;
    if (ACTIVE_INDEX != NONE && step[ACTIVE_INDEX + stream] == 0u) {
        return;      // the whole workgroup: its stream sits this frame out
    }
    let base = stream * LOGITS_STRIDE + LOGITS_OFFSET;
    let prompt_base = stream * (2u + PROMPT_CAPACITY);
    // Lane 0 alone touches the prompt buffer (reads here, the position update at the end): no storage race.
    if (lane == 0u) {
        let e = prompt[prompt_base + 1u];
        prompt_next = NONE;
        if (e < min(prompt[prompt_base], PROMPT_CAPACITY)) {
            prompt_next = prompt[prompt_base + 2u + e];
        }
    }
    workgroupBarrier();
    let next = prompt_next;

    // Each invocation scans its strided indices in increasing order: strict > keeps the lowest of equals. Four
    // indices a round, their loads issued before any is compared: the driver does not overlap the loads of
    // successive loop iterations (BENCHMARKS.md).
    var best = Candidate(LOWEST, NONE);
    for (var i = lane; i < COUNT; i += 4u * WORKGROUP_SIZE) {
        let i1 = i + WORKGROUP_SIZE;
        let i2 = i + 2u * WORKGROUP_SIZE;
        let i3 = i + 3u * WORKGROUP_SIZE;
        let v0 = logits[base + i];
        let v1 = logits[base + min(i1, COUNT - 1u)];
        let v2 = logits[base + min(i2, COUNT - 1u)];
        let v3 = logits[base + min(i3, COUNT - 1u)];
        best = scan(best, i, v0, next);
        best = scan(best, i1, v1, next);
        best = scan(best, i2, v2, next);
        best = scan(best, i3, v3, next);
    }
    best_values[lane] = best.value;
    best_indices[lane] = best.index;
    workgroupBarrier();

    // Tree reduction halving the active count (rounding up): any WORKGROUP_SIZE works.
    var active_count = WORKGROUP_SIZE;
    while (active_count > 1u) {
        let upper_half_start = (active_count + 1u) / 2u;
        if (lane + upper_half_start < active_count) {
            let other = lane + upper_half_start;
            if (beats(best_values[other], best_indices[other], best_values[lane], best_indices[lane])) {
                best_values[lane] = best_values[other];
                best_indices[lane] = best_indices[other];
            }
        }
        workgroupBarrier();
        active_count = upper_half_start;
    }

    if (lane == 0u) {
        // No candidate only if every logit is NaN or -inf: token 0 keeps the next step's table read in range.
        let token = select(best_indices[0], 0u, best_indices[0] == NONE);
        tokens[stream * TOKEN_STRIDE + TOKEN_INDEX] = token;
        results[stream * RESULT_STRIDE + RESULT_INDEX] = token;
        if (next != NONE && token == next && token != BOUNDARY_TOKEN && token != PADDING_TOKEN) {
            prompt[prompt_base + 1u] = prompt[prompt_base + 1u] + 1u;
        }
    }
}
