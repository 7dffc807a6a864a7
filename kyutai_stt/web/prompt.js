// A prompt that steers the transcript: the same rules as kyutai_stt/streaming/prompt.py (read its docstring), pinned
// against it by tests/web/test_host_logic.py. Experimental: the model is very sensitive to the prompt.
//   text:  its ids go to the GPU with a stream's first frame (the plan's "prompt" input [n, e, ids]); argmax.wgsl
//          then lets only the padding tokens and the next prompt id win until all were emitted.
//   audio: 24 kHz mono samples fed after the silence prefix, padded to whole frames, then SEPARATOR_FRAMES of
//          silence; words beginning before the middle of that silence are hidden, times count from the audio.

import {ErrorCode, SttError} from './errors.js';

export const FRAME_SIZE = 1920;
export const SEPARATOR_FRAMES = 10;
export const MAX_TEXT_CHARS = 1000;
export const MAX_AUDIO_SECONDS = 30;
const RATE = 24000;
const NEVER_EMITTED = [0, 3];      // ids the rule never advances past (the official script would stall on them)

function refuse(message) {
  return new SttError(ErrorCode.PROMPT, message);
}

/** {text, audio} -> {text, audio: Float32Array | null}, or an SttError (code 'prompt') saying what to change. */
export function checkPrompt({text = '', audio = null} = {}) {
  if (typeof text !== 'string') throw refuse(`the text prompt must be a string, not ${typeof text}`);
  if (text && !text.trim()) {
    throw refuse('the text prompt is only whitespace: give a word or two (e.g. a name\'s spelling), or no text prompt');
  }
  const chars = Array.from(text).length;
  if (chars > MAX_TEXT_CHARS) {
    throw refuse(`the text prompt is ${chars} characters; at most ${MAX_TEXT_CHARS} (a prompt steers a few words: ` +
      'shorten it)');
  }
  if (audio !== null) {
    if (!(audio instanceof Float32Array) || !audio.length) {
      throw refuse('the audio prompt must be a non-empty float array of 24 kHz mono samples');
    }
    if (audio.length > MAX_AUDIO_SECONDS * RATE) {
      throw refuse(`the audio prompt is ${(audio.length / RATE).toFixed(1)} s; at most ${MAX_AUDIO_SECONDS} s ` +
        '(a few words suffice)');
    }
    if (!audio.every(Number.isFinite)) throw refuse('the audio prompt holds NaN or infinite samples');
  }
  if (!text && audio === null) throw refuse('an empty prompt: give a text prompt, an audio prompt, or both');
  return {text, audio};
}

/** The plan's prompt input [n, 0, ids, zeros] (Uint32Array(2 + capacity)) for a checked prompt (or null). */
export function promptWords(prompt, tokenizer, capacity) {
  const words = new Uint32Array(2 + capacity);
  if (!prompt?.text) return words;
  let ids;
  try {
    ids = tokenizer.encode(prompt.text);
  } catch (error) {
    throw refuse(error.message);
  }
  if (!ids.length) throw refuse('the text prompt encodes to no tokens: give a word or two');
  if (ids.length > capacity) {
    throw refuse(`the text prompt is ${ids.length} tokens; this model takes at most ${capacity}: shorten it`);
  }
  const stuck = ids.find((id) => NEVER_EMITTED.includes(id));
  if (stuck !== undefined) {
    throw refuse(`the text prompt has characters the model's tokenizer cannot write (token ${stuck}): remove them`);
  }
  words[0] = ids.length;
  words.set(ids, 2);
  return words;
}

/** The samples fed before the caller's audio: prefix silence, the audio prompt padded to frames, the separator. */
export function leadIn(prefixSamples, audio) {
  if (!audio) return new Float32Array(prefixSamples);
  const padded = Math.ceil(audio.length / FRAME_SIZE) * FRAME_SIZE;
  const out = new Float32Array(prefixSamples + padded + SEPARATOR_FRAMES * FRAME_SIZE);
  out.set(audio, prefixSamples);
  return out;
}

/** Stream seconds before which a word belongs to the audio prompt (0 without one): the separator's middle. */
export function hiddenUntil(prefixSamples, audio) {
  if (!audio) return 0;
  return (leadIn(prefixSamples, audio).length - SEPARATOR_FRAMES * FRAME_SIZE / 2) / RATE;
}
