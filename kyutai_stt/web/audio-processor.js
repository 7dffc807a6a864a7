// Microphone capture for the engine: an AudioWorkletProcessor that runs at the device's own rate (Firefox refuses a
// mic stream whose rate differs from the AudioContext's), mixes down to mono, resamples to 24 kHz with a
// Kaiser-windowed sinc low-pass (no aliasing when downsampling from 44.1/48 kHz) and posts 1920-sample
// Float32Array frames (80 ms, one engine step) to the inference worker over a MessagePort, so that a busy or
// throttled main thread never stalls capture.
//
// Main thread: node.port.postMessage({type: 'port', port}, [port]) hands over the worker's port; {type: 'stop'}
// sends the last partial frame (zero-padded), then {type: 'end'} on the worker's port and {type: 'stopped'} back
// (protocol.js ToProcessor; the literals are repeated here so the worklet module stands alone).
// The Resampler class is also imported by the tests (this file is then loaded as a plain module).

export const TARGET_RATE = 24000;
export const FRAME_SIZE = 1920;
export const PROCESSOR_NAME = 'kyutai-stt-capture';
// Sinc zero crossings on each side of the kernel: with the Kaiser window below, ~-80 dB stopband.
const ZERO_CROSSINGS = 16;
// Kaiser beta for ~80 dB sidelobe attenuation (Kaiser's formula: 0.1102 * (80 - 8.7)).
const KAISER_BETA = 7.857;
// Cutoff as a fraction of the lower Nyquist frequency: leaves a transition band (10.8-12 kHz at 24 kHz) so
// that frequencies above 12 kHz are attenuated before they fold back.
const ROLLOFF = 0.9;
// Kernel table resolution (entries per input sample, linearly interpolated): < -90 dB interpolation error.
const TABLE_STEPS = 256;

function besselI0(x) {
  let sum = 1, term = 1;
  for (let k = 1; term > 1e-12 * sum; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
  }
  return sum;
}

// Streaming band-limited resampler: process(samples) returns the output samples that became computable (the
// kernel needs `halfWidth` input samples beyond each output's instant: a latency of ~0.7 ms at 48 kHz). Output n
// is the input signal at time n / outRate exactly: instants are kept as integers (input samples x outRate), so
// they never drift and the result does not depend on how the input is cut into blocks.
export class Resampler {
  constructor(inRate, outRate) {
    this.inRate = Math.round(inRate);
    this.outRate = Math.round(outRate);
    const cutoff = 0.5 * Math.min(1, this.outRate / this.inRate) * ROLLOFF;   // cycles per input sample
    const width = ZERO_CROSSINGS / (2 * cutoff);                               // half width, in input samples
    this.halfWidth = Math.ceil(width);
    this.table = new Float32Array(this.halfWidth * TABLE_STEPS + 2);       // zero beyond `width`
    const norm = besselI0(KAISER_BETA);
    for (let i = 0; i < this.table.length; i++) {
      const d = i / TABLE_STEPS;
      if (d >= width) break;
      const x = 2 * cutoff * d;
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      const window = besselI0(KAISER_BETA * Math.sqrt(1 - (d / width) ** 2)) / norm;
      this.table[i] = 2 * cutoff * sinc * window;
    }
    // Input not yet consumed; it starts with halfWidth zeros, the silence before the first sample.
    this.buffer = new Float32Array(4096);
    this.length = this.halfWidth;
    this.instant = this.halfWidth * this.outRate;      // next output's instant: buffer index x outRate
  }

  get latency() {                                        // in output samples
    return this.halfWidth * this.outRate / this.inRate;
  }

  process(input) {
    if (this.length + input.length > this.buffer.length) {
      const bigger = new Float32Array(2 * (this.length + input.length));
      bigger.set(this.buffer.subarray(0, this.length));
      this.buffer = bigger;
    }
    this.buffer.set(input, this.length);
    this.length += input.length;
    const {buffer, table, halfWidth, inRate, outRate} = this;
    const out = new Float32Array(Math.ceil((input.length + 1) * outRate / inRate) + 1);   // an upper bound
    let n = 0;
    // An output needs input samples up to floor(instant) + halfWidth.
    while (Math.floor(this.instant / outRate) + halfWidth < this.length) {
      const base = Math.floor(this.instant / outRate);
      const fraction = (this.instant - base * outRate) / outRate;
      let acc = 0;
      for (let i = 1 - halfWidth; i <= halfWidth; i++) {
        const t = Math.abs(fraction - i) * TABLE_STEPS;
        const j = Math.floor(t);
        acc += buffer[base + i] * (table[j] + (t - j) * (table[j + 1] - table[j]));
      }
      out[n++] = acc;
      this.instant += inRate;
    }
    // Keep only what later outputs still read.
    const drop = Math.floor(this.instant / outRate) - halfWidth;
    if (drop > 0) {
      buffer.copyWithin(0, drop, this.length);
      this.length -= drop;
      this.instant -= drop * outRate;
    }
    return out.subarray(0, n);
  }
}

// Mean of the channels (a stereo mic's two sides, or mono as is) into `out`.
export function downmix(channels, out) {
  out.set(channels[0]);
  for (let c = 1; c < channels.length; c++) {
    const ch = channels[c];
    for (let i = 0; i < out.length; i++) out[i] += ch[i];
  }
  if (channels.length > 1) for (let i = 0; i < out.length; i++) out[i] /= channels.length;
  return out;
}

if (typeof registerProcessor === 'function') {
  class CaptureProcessor extends AudioWorkletProcessor {
    constructor(options) {
      super();
      const {targetRate = TARGET_RATE, frameSize = FRAME_SIZE} = options?.processorOptions ?? {};
      this.resampler = new Resampler(sampleRate, targetRate);        // sampleRate: the context's (device) rate
      this.frameSize = frameSize;
      this.frame = new Float32Array(frameSize);
      this.filled = 0;
      this.mono = new Float32Array(128);
      this.out = null;                                               // the worker's MessagePort
      this.stopped = false;
      this.port.onmessage = ({data}) => {
        if (data?.type === 'port') this.out = data.port;
        if (data?.type === 'stop') this.stop();
      };
    }

    stop() {
      if (this.stopped) return;
      this.stopped = true;
      if (this.filled) this.send();                                  // zero-padded: the words in it still count
      this.out?.postMessage({type: 'end'});
      this.port.postMessage({type: 'stopped'});
    }

    send() {
      this.frame.fill(0, this.filled);
      this.out?.postMessage(this.frame, [this.frame.buffer]);
      this.frame = new Float32Array(this.frameSize);
      this.filled = 0;
    }

    process(inputs) {
      if (this.stopped) return false;
      const channels = inputs[0];
      if (!channels?.length) return true;                            // no input connected yet
      if (this.mono.length !== channels[0].length) this.mono = new Float32Array(channels[0].length);
      const samples = this.resampler.process(downmix(channels, this.mono));
      for (let i = 0; i < samples.length;) {
        const n = Math.min(samples.length - i, this.frameSize - this.filled);
        this.frame.set(samples.subarray(i, i + n), this.filled);
        this.filled += n;
        i += n;
        if (this.filled === this.frameSize) this.send();
      }
      return true;
    }
  }
  registerProcessor(PROCESSOR_NAME, CaptureProcessor);
}
