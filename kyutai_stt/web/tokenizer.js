// The text detokeniser, from the package manifest's piece table: the same rules as kyutai_stt/weights/tokenizer.py
// (SentencePiece's DecodeIds): control pieces vanish, the unknown piece reads " ⁇ ", runs of <0xHH> byte pieces
// are read as UTF-8 (each byte that starts no valid sequence becomes U+FFFD), '▁' is a space and one leading '▁'
// is dropped while the text is still empty.
// encode(text) (a text prompt's ids): SentencePiece's unigram Viterbi from the manifest's piece scores, the same
// code as Tokenizer.encode in kyutai_stt/weights/tokenizer.py, pinned by tests/vectors/tokenizer_encode.json.

const SPACE = "\u2581";
const REPLACEMENT = "\ufffd";
const UNK_PENALTY = 10.0;                   // SentencePiece's kUnkPenalty: the unknown piece scores min_score - 10

export class Tokenizer {
  /** raw: manifest.tokenizer = {pieces, unk_id, control_ids, byte_ids, strip_leading_space, unk_surface} */
  constructor(raw) {
    this.pieces = raw.pieces;
    this.unkId = raw.unk_id;
    this.controlIds = new Set(raw.control_ids);
    this.byteIds = new Set(raw.byte_ids);
    this.stripLeadingSpace = raw.strip_leading_space;
    this.unkSurface = raw.unk_surface;
    this.scores = raw.scores ?? [];
    this.normalizer = raw.normalizer ?? "identity";
    this._table = null;
  }

  /** Text -> ids, as sentencepiece's encode(text). Throws when the package has no piece scores. */
  encode(text) {
    if (this.scores.length !== this.pieces.length) {
      throw new Error("this model package's tokenizer has no piece scores (converted by an older kyutai-stt): " +
        "convert the checkpoint again to use a text prompt");
    }
    const chars = Array.from(this.normalize(text));          // code points, as Python indexes a str
    const {vocab, longest, unkScore} = this._encodingTable();
    const best = new Array(chars.length + 1).fill(null);     // [score, start, id] of the best chars[:end]
    best[0] = [0, -1, -1];
    for (let start = 0; start < chars.length; start++) {
      if (best[start] === null) continue;
      let covered = false;
      let piece = "";
      for (let end = start + 1; end <= Math.min(chars.length, start + longest); end++) {
        piece += chars[end - 1];
        const id = vocab.get(piece);
        if (id === undefined) continue;
        if (end === start + 1) covered = true;
        const score = best[start][0] + this.scores[id];
        if (best[end] === null || score > best[end][0]) best[end] = [score, start, id];
      }
      if (!covered) {
        const score = best[start][0] + unkScore;
        if (best[start + 1] === null || score > best[start + 1][0]) best[start + 1] = [score, start, this.unkId];
      }
    }
    const ids = [];
    for (let end = chars.length; end > 0;) {
      const [, start, id] = best[end];
      if (id === this.unkId && this.byteIds.size) {
        const bytes = new TextEncoder().encode(chars.slice(start, end).join(""));
        for (let i = bytes.length - 1; i >= 0; i--) ids.push(this.pieces.indexOf(`<0x${bytes[i].toString(16).toUpperCase().padStart(2, "0")}>`));
      } else {
        ids.push(id);
      }
      end = start;
    }
    return ids.reverse();
  }

  /** SentencePiece's normalisation for the options the converter keeps (tokenizer.py's normalize). */
  normalize(text) {
    if (this.normalizer.includes("nfkc")) text = text.normalize("NFKC");
    if (this.stripLeadingSpace) {
      text = text.split(" ").filter((w) => w).join(" ");
      if (text) text = " " + text;
    }
    return text.replaceAll(" ", SPACE);
  }

  _encodingTable() {
    if (!this._table) {
      const vocab = new Map();
      let longest = 1, min = Infinity;
      this.pieces.forEach((p, i) => {
        if (!p || i === this.unkId || this.controlIds.has(i) || this.byteIds.has(i)) return;
        vocab.set(p, i);
        longest = Math.max(longest, Array.from(p).length);
        min = Math.min(min, this.scores[i]);
      });
      this._table = {vocab, longest, unkScore: (vocab.size ? min : 0) - UNK_PENALTY};
    }
    return this._table;
  }

  decode(ids) {
    const text = [];
    let pending = [];                       // a run of byte pieces, decoded when the run ends
    const flush = () => { if (pending.length) { text.push(decodeUtf8Bytes(pending)); pending = []; } };
    for (const id of ids) {
      if (!(id >= 0 && id < this.pieces.length)) {
        throw new RangeError(`token id ${id} is outside the vocabulary (0..${this.pieces.length - 1})`);
      }
      if (this.byteIds.has(id)) { pending.push(parseInt(this.pieces[id].slice(3, 5), 16)); continue; }
      flush();
      if (this.controlIds.has(id)) continue;
      if (id === this.unkId) { text.push(this.unkSurface); continue; }
      let piece = this.pieces[id];
      if (this.stripLeadingSpace && !text.some((t) => t.length) && piece.startsWith(SPACE)) piece = piece.slice(1);
      text.push(piece.replaceAll(SPACE, " "));
    }
    flush();
    return text.join("");
  }
}

/** UTF-8 read byte by byte as SentencePiece does: a valid sequence is its character, any other byte U+FFFD. */
export function decodeUtf8Bytes(bytes) {
  const strict = new TextDecoder("utf-8", { fatal: true });
  const out = [];
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i];
    let length = lead < 0x80 ? 1 : lead >= 0xc2 && lead <= 0xdf ? 2 : lead >= 0xe0 && lead <= 0xef ? 3
      : lead >= 0xf0 && lead <= 0xf4 ? 4 : 0;
    let ch = null;
    if (length && i + length <= bytes.length) {
      try { ch = strict.decode(new Uint8Array(bytes.slice(i, i + length))); } catch { ch = null; }
    }
    if (ch === null) { ch = REPLACEMENT; length = 1; }
    out.push(ch);
    i += length;
  }
  return out.join("");
}
