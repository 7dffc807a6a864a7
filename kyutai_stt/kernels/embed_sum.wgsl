// Embedding sum: the LM's input, the sum of one row of each of several tables (a gather + add).
//
//   table: [TABLES * TABLE_ROWS, DIM] in the package layout of FORMAT (0 f32, 1 f16, 2 q8, 3 q4:
//          kyutai_stt/quant.py; tables concatenated: row r of table t is row t * TABLE_ROWS + r):
//          f32: w f32[rows, DIM]
//          f16: w f16[rows, DIM] two per u32 (even element in the low half); DIM even
//          q8:  qs u32[rows, DIM/4] (byte i of word j = int8 q[4j+i]), table[r, e] = d[r, e/32] * q[r, e]
//          q4:  qs u32[rows, DIM/8] (nibble i of word j = q[8j+i]), table[r, e] = d[r, e/32] * (q[r, e] - 8)
//          q8/q4: d f16[rows, DIM/32] two per u32; DIM a multiple of 64
//   ids:   u32[STREAMS, IDS_STRIDE]   (TABLES ids from IDS_OFFSET of each stream's row are used)
//   x[s, e] = (ACCUMULATE ? x[s, e] : 0) + sum_{t = 0, 1, .. TABLES-1} table[t * TABLE_ROWS + ids[s, IDS_OFFSET + t], e]
//          summed in order t = 0, 1, ... (as PyTorch adds the streams), for e < DIM
// The LM step uses it twice: the 32 audio codebooks (TABLES 32, TABLE_ROWS 2049, ids = the Mimi codes), then the
// text table (TABLES 1, ids = the token the previous step's argmax wrote, ACCUMULATE): no CPU in the loop. A host
// whose concatenated tables exceed a binding (128 MiB portable) splits them over several ACCUMULATE dispatches.
//
// Bindings (group 0): 0 = w or qs (read, as u32), 1 = d (read, as u32: q8/q4; bind any buffer, e.g. the table
//   again, for f32/f16), 2 = ids (read), 3 = x (read_write, [STREAMS, DIM] f32).
// Dispatch: (ceil(DIM / (ELEMENTS_PER_WORD * WORDS_PER_WORKGROUP)), STREAMS, 1) workgroups of
//   (WORDS_PER_WORKGROUP, TABLE_THREADS) invocations: invocation (w, t) decodes word w of the rows of tables
//   t, t + TABLE_THREADS, ... into workgroup memory; then each element's pieces are added in table order.

// Table layout: 0 f32, 1 f16, 2 q8, 3 q4 (as matvec.wgsl).
override FORMAT: u32;
override DIM: u32;
// Tables summed by one dispatch, and rows per table (2049 for an audio codebook: 2048 codes + the start token).
override TABLES: u32;
override TABLE_ROWS: u32;
// ids per stream (e.g. 33 when the codes and the text token share one buffer).
override IDS_STRIDE: u32 = TABLES;
// First id of this dispatch in each stream's row: tables over one binding are summed by several dispatches.
override IDS_OFFSET: u32 = 0u;
// true: x += sum (a further group of tables); false: x = sum.
override ACCUMULATE: bool = false;
// Words of a row per workgroup, and invocations over the tables: 8 x 32 = 256 invocations, so the LM's 32 audio rows
// are read all at once (the kernel is latency-bound: 256 q4 words per 2048-wide row).
override WORDS_PER_WORKGROUP: u32 = 8u;
override TABLE_THREADS: u32 = 32u;

@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

// pieces[(t * WORDS_PER_WORKGROUP + w) * ELEMENTS_PER_WORD + i]: element i of word w of table t's row.
var<workgroup> pieces: array<f32, TABLES * WORDS_PER_WORKGROUP * ELEMENTS_PER_WORD>;

const FORMAT_F32 = 0u;
const FORMAT_F16 = 1u;
const FORMAT_Q8 = 2u;
const FORMAT_Q4 = 3u;
// Elements of a row per u32 word, from FORMAT (f32 1, f16 2, q8 4, q4 8): derived, not for the host to set;
// private arrays are sized by the largest (an override cannot size them).
const MAX_ELEMENTS_PER_WORD = 8u;
override ELEMENTS_PER_WORD: u32 = select(select(1u, 2u, FORMAT == FORMAT_F16), select(4u, 8u, FORMAT == FORMAT_Q4),
                                         FORMAT >= FORMAT_Q8);
const Q4_OFFSET = 8.0;

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> scales: array<u32>;

// sum[i] += table[row, ELEMENTS_PER_WORD * word + i], i < ELEMENTS_PER_WORD.
fn add_row_word(row: u32, word: u32, sum: ptr<function, array<f32, MAX_ELEMENTS_PER_WORD>>) {
    let bits = w[row * (DIM / ELEMENTS_PER_WORD) + word];
    if (FORMAT == FORMAT_F32) {
        (*sum)[0] += bitcast<f32>(bits);
        return;
    }
    if (FORMAT == FORMAT_F16) {
        let values = unpack2x16float(bits);
        (*sum)[0] += values.x;
        (*sum)[1] += values.y;
        return;
    }
    let block_index = row * (DIM / 32u) + word / (32u / ELEMENTS_PER_WORD);
    let scale = unpack2x16float(scales[block_index / 2u])[block_index % 2u];
    for (var i = 0u; i < ELEMENTS_PER_WORD; i++) {
        if (FORMAT == FORMAT_Q8) {
            // Byte i to the top, then an arithmetic shift back: the sign-extended int8.
            let q = bitcast<i32>(bits << (24u - 8u * i)) >> 24u;
            (*sum)[i] += scale * f32(q);
        } else {
            (*sum)[i] += scale * (f32((bits >> (4u * i)) & 0xFu) - Q4_OFFSET);
        }
    }
}

@compute @workgroup_size(WORDS_PER_WORKGROUP, TABLE_THREADS)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let stream = workgroup.y;
    let first_word = workgroup.x * WORDS_PER_WORKGROUP;
    let word = first_word + local.x;

    // Every (word, table) row piece at once: one id and one row load per invocation and table, all in flight.
    if (word < DIM / ELEMENTS_PER_WORD) {
        for (var t = local.y; t < TABLES; t += TABLE_THREADS) {
            var values = array<f32, MAX_ELEMENTS_PER_WORD>();
            add_row_word(t * TABLE_ROWS + ids[stream * IDS_STRIDE + IDS_OFFSET + t], word, &values);
            for (var i = 0u; i < ELEMENTS_PER_WORD; i++) {
                pieces[(t * WORDS_PER_WORKGROUP + local.x) * ELEMENTS_PER_WORD + i] = values[i];
            }
        }
    }
    workgroupBarrier();

    // Then each output element adds its TABLES pieces in table order (the reference's order: exact same sums).
    let elements = WORDS_PER_WORKGROUP * ELEMENTS_PER_WORD;
    for (var e = lane; e < elements; e += WORDS_PER_WORKGROUP * TABLE_THREADS) {
        let column = first_word * ELEMENTS_PER_WORD + e;
        if (column < DIM) {
            var sum = 0.0;
            for (var t = 0u; t < TABLES; t++) {
                sum += pieces[t * elements + e];
            }
            let index = stream * DIM + column;
            if (ACCUMULATE) {
                sum = x[index] + sum;
            }
            x[index] = sum;
        }
    }
}
