// A stream's audio as model frames: `prefix` samples of silence first, then the caller's samples cut into whole
// frames; flush() pads the last frame with silence and appends `tail` silent frames (the text lags the audio), then
// starts the next stream. The twin of kyutai_stt/streaming/framing.py; both are held to tests/vectors/framing.json.

export class Framer {
  constructor(frameSize, prefix) {
    if (!(frameSize >= 1) || !(prefix >= 0)) throw new RangeError(`frameSize ${frameSize} >= 1, prefix ${prefix} >= 0`);
    this.frameSize = frameSize;
    this.prefix = prefix;
    this.pendingSamples = new Float32Array(prefix);   // [< frameSize after each push] not yet framed
  }

  // Samples held back until they fill a frame (the prefix, before the first push).
  get pending() {
    return this.pendingSamples.length;
  }

  // Append samples; return every frame (Float32Array [frameSize]) now whole, in order.
  push(samples) {
    const all = new Float32Array(this.pendingSamples.length + samples.length);
    all.set(this.pendingSamples);
    all.set(samples, this.pendingSamples.length);
    const frames = [];
    let at = 0;
    for (; at + this.frameSize <= all.length; at += this.frameSize) frames.push(all.slice(at, at + this.frameSize));
    this.pendingSamples = all.slice(at);
    return frames;
  }

  // The last frame padded with silence, then `tail` silent frames; the next push starts a new stream.
  flush(tail) {
    const frames = Math.ceil(this.pendingSamples.length / this.frameSize) + tail;
    const out = this.push(new Float32Array(frames * this.frameSize - this.pendingSamples.length));
    this.pendingSamples = new Float32Array(this.prefix);
    return out;
  }
}
