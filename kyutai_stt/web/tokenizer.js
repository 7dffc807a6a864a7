// The text detokeniser, from the package manifest's piece table: the same rules as kyutai_stt/weights/tokenizer.py
// (SentencePiece's DecodeIds): control pieces vanish, the unknown piece reads " ⁇ ", runs of <0xHH> byte pieces
// are read as UTF-8 (each byte that starts no valid sequence becomes U+FFFD), '▁' is a space and one leading '▁'
// is dropped while the text is still empty.

const SPACE = "\u2581";
const REPLACEMENT = "\ufffd";

export class Tokenizer {
  /** raw: manifest.tokenizer = {pieces, unk_id, control_ids, byte_ids, strip_leading_space, unk_surface} */
  constructor(raw) {
    this.pieces = raw.pieces;
    this.unkId = raw.unk_id;
    this.controlIds = new Set(raw.control_ids);
    this.byteIds = new Set(raw.byte_ids);
    this.stripLeadingSpace = raw.strip_leading_space;
    this.unkSurface = raw.unk_surface;
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
