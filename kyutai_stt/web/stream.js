// Delayed-streams decoding for the browser: the same logic as kyutai_stt/streaming/decoder.py (read its docstring for the
// official rules), pinned by the same vectors (tests/vectors/stream/*.json). Events are plain objects:
//   {type: "word", text, start, end}   {type: "partial", text}   {type: "endOfTurn", time, probability}
//   {type: "step", frame, time, token, vad}

import { Tokenizer } from "./tokenizer.js";

const WORD_BOUNDARY = 0;
const PADDING = 3;

export const DEFAULT_CONFIG = Object.freeze({
  delay_steps: null,     // required: the model's (plans.json stream.delay_steps; 6 for stt-1b-en_fr, 31 for 2.6B)
  frame_rate: 12.5,
  silence_prefix: 0.0,   // seconds of silence fed before the caller's audio
  eot_head: 2,
  eot_threshold: 0.5,
  eot_smoothing: 0.0,    // exponential smoothing weight of the previous value: 0 = none (official)
  hide_words_before: 0.0, // stream seconds: words beginning earlier are dropped (an audio prompt's)
});

export class StreamDecoder {
  /** tokenizer: a Tokenizer or the manifest's tokenizer object; config: keys of DEFAULT_CONFIG. */
  constructor(tokenizer, config = {}) {
    this.tokenizer = tokenizer instanceof Tokenizer ? tokenizer : new Tokenizer(tokenizer);
    const unknown = Object.keys(config).filter((k) => !(k in DEFAULT_CONFIG));
    if (unknown.length) throw new TypeError(`unknown decoder settings: ${unknown.join(", ")}`);
    this.config = { ...DEFAULT_CONFIG, ...config };
    if (!Number.isInteger(this.config.delay_steps) || this.config.delay_steps < 0) {
      throw new TypeError(`delay_steps must be the model's delay in frames, not ${this.config.delay_steps}`);
    }
    this.reset();
  }

  reset() {
    this.steps = 0;          // the official counter: incremented before use
    this.open = [];          // pieces of the word being read
    this.openHidden = false; // the open word began before hide_words_before
    this.waiting = [];       // closed words without an end: [pieces, start]
    this.lastStop = 0;
    this.eotArmed = false;
    this.noVoice = null;     // smoothed head probability
    this.partial = "";
    this.audioEnd = null;    // the caller's audio length, once it is known (the flush)
  }

  step(token, vad = []) {
    const cfg = this.config;
    this.steps += 1;
    const stop = (this.steps - cfg.delay_steps) / cfg.frame_rate;
    const events = [{ type: "step", frame: this.steps - 1, time: this._time(stop), token, vad: Array.from(vad) }];
    if (this.steps >= cfg.delay_steps) {
      if (token === WORD_BOUNDARY || token === PADDING) {
        if (this.open.length && this.openHidden) {
          this.open = [];
        } else if (this.open.length) {
          if (this.waiting.length) events.push(...this._release(this.lastStop));
          this.waiting.push([this.open, this.lastStop]);
          this.open = [];
          this.eotArmed = true;
        }
      } else {
        if (!this.open.length) this.openHidden = stop < cfg.hide_words_before;
        this.open.push(token);
      }
      if (token === WORD_BOUNDARY) {
        if (this.waiting.length) {
          events.push(...this._release(stop));
          this.eotArmed = true;
        }
        this.lastStop = stop;
      }
    }
    events.push(...this._endOfTurn(vad, stop), ...this._partialChanged());
    return events;
  }

  /** The caller's audio ends at audioEnd seconds (its own time): every word released from now on, during the
   * flush's silent frames or by finish(), is clamped to it, as official_events clamps every word. */
  endOfAudio(audioEnd) {
    this.audioEnd = audioEnd;
  }

  /** Release every word at the current stop time (clamped to audioEnd, in the caller's seconds). */
  finish(audioEnd = null) {
    if (audioEnd !== null) this.endOfAudio(audioEnd);
    const stop = Math.max(this.lastStop, (this.steps - this.config.delay_steps) / this.config.frame_rate);
    if (this.open.length && !this.openHidden) this.waiting.push([this.open, this.lastStop]);
    this.open = [];
    return [...this._release(stop), ...this._partialChanged()];
  }

  _release(stop) {
    const out = [], audioEnd = this.audioEnd;
    for (const [pieces, start] of this.waiting) {
      let startS = this._time(start), endS = this._time(stop);
      if (audioEnd !== null) { startS = Math.min(startS, audioEnd); endS = Math.min(endS, audioEnd); }
      const text = this.tokenizer.decode(pieces).trim();
      if (text) out.push({ type: "word", text, start: startS, end: Math.max(startS, endS) });
    }
    this.waiting = [];
    return out;
  }

  _endOfTurn(vad, stop) {
    const cfg = this.config;
    if (vad.length <= cfg.eot_head) return [];
    const p = Number(vad[cfg.eot_head]);
    this.noVoice = this.noVoice === null ? p : cfg.eot_smoothing * this.noVoice + (1 - cfg.eot_smoothing) * p;
    if (this.eotArmed && this.noVoice > cfg.eot_threshold) {
      this.eotArmed = false;
      return [{ type: "endOfTurn", time: this._time(stop), probability: this.noVoice }];
    }
    return [];
  }

  _partialChanged() {
    const texts = this.waiting.map(([p]) => this.tokenizer.decode(p).trim());
    if (!this.openHidden) texts.push(this.tokenizer.decode(this.open).trim());
    const text = texts.filter((t) => t).join(" ");
    if (text === this.partial) return [];
    this.partial = text;
    return [{ type: "partial", text }];
  }

  _time(t) {
    return Math.max(0, t - this.config.silence_prefix);
  }
}
