// The embeddable API: speech-to-text in the page, the model running in a worker on the user's GPU.
//
//   import {SttClient} from './stt-client.js';
//   const stt = new SttClient({modelUrl: 'model/'});          // URLs relative to this file's directory
//   stt.on('word', ({text, start, end}) => ...);               // also: partial, endOfTurn, stats, pace, error...
//   await stt.load({}, ({phase, loaded, total}) => ...);       // download (or cache), compile, warm up
//   await stt.start();                                         // microphone -> live events
//   await stt.stop();                                          // the last words arrive before this resolves
//   const words = await stt.transcribeFile(file);              // a File/Blob of any format the browser decodes
//   await stt.setPrompt({text: 'Loonah', audio: file});        // experimental: steer a spelling (prompt.js)
//
// Every failure is an SttError {code, message, fix} (errors.js): thrown by the call that failed, or, when no call
// is waiting (device lost mid-stream), dispatched as an 'error' event. TypeScript: stt-client.d.ts.

import {ErrorCode, SttError, fromPayload, microphoneError} from './errors.js';
import {FRAME_SIZE, PROCESSOR_NAME, TARGET_RATE} from './audio-processor.js';
import {requestPersistence} from './package.js';
import {FromWorker, ToProcessor, ToWorker} from './protocol.js';

export {ErrorCode, SttError} from './errors.js';

// How long stop() waits for the AudioWorklet to hand over its last partial frame.
const PROCESSOR_STOP_WAIT_MS = 500;

export class SttClient extends EventTarget {
  // baseUrl: where the site lives (default: this file's directory); modelUrl, plansUrl, kernelsUrl: relative to it.
  constructor({baseUrl, modelUrl = 'model/', plansUrl = 'plans.json', kernelsUrl = 'kernels/'} = {}) {
    super();
    const base = new URL(baseUrl ?? '.', import.meta.url);
    this.urls = {modelUrl: new URL(modelUrl, base).href, plansUrl: new URL(plansUrl, base).href,
      kernelsUrl: new URL(kernelsUrl, base).href};
    this.worker = null;
    this.info = null;
    this.mic = null;
    this._calls = new Map();
    this._nextId = 1;
  }

  // fn(detail) for events 'word', 'partial', 'endOfTurn', 'step', 'stats', 'pace', 'error', 'progress',
  // 'listening', 'ready', 'transcribeProgress' (protocol.js). Returns a function that removes the listener.
  on(name, fn) {
    const listener = (event) => fn(event.detail);
    this.addEventListener(name, listener);
    return () => this.removeEventListener(name, listener);
  }

  // options: {variant, silencePrefix, decoder, retries, backoffMs, maxBacklogSeconds} (protocol.js LOAD), and
  // prompt: {text, audio} (setPrompt). Resolves with the engine's info: {adapter, variant, fallback, package, plan,
  // timings}.
  async load({prompt = null, ...options} = {}, onProgress = null) {
    if (!globalThis.navigator?.gpu) {
      throw webGpuProblem();
    }
    await requestPersistence();        // only a page may ask: workers have no persist()
    this.destroy();
    this.worker = new Worker(new URL('./worker.js', import.meta.url), {type: 'module'});
    this.worker.onmessage = ({data}) => this._receive(data);
    this.worker.onerror = (event) => this._workerFailed(event);
    const off = onProgress ? this.on('progress', onProgress) : null;
    try {
      this.info = await this._call(ToWorker.LOAD, {...this.urls, ...options});
      if (prompt) await this.setPrompt(prompt);
      return this.info;
    } finally {
      off?.();
    }
  }

  // Open the microphone and stream it to the engine.
  async start({audio = {channelCount: 1, echoCancellation: true, noiseSuppression: false}} = {}) {
    this._requireLoaded();
    if (this.mic) return;
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new SttError(ErrorCode.MIC_ABSENT, 'This page cannot use a microphone (it needs https or localhost).',
        'Open the page over https (or from localhost).');
    }
    let media;
    try {
      media = await navigator.mediaDevices.getUserMedia({audio});
    } catch (error) {
      throw microphoneError(error);
    }
    // The device's own rate: the worklet resamples (Firefox refuses a mic whose rate differs from the context's).
    const context = new AudioContext({latencyHint: 'interactive'});
    try {
      await context.audioWorklet.addModule(new URL('./audio-processor.js', import.meta.url));
      const source = context.createMediaStreamSource(media);
      const node = new AudioWorkletNode(context, PROCESSOR_NAME, {numberOfInputs: 1, numberOfOutputs: 1,
        outputChannelCount: [1], processorOptions: {targetRate: TARGET_RATE, frameSize: FRAME_SIZE}});
      const channel = new MessageChannel();
      node.port.postMessage({type: ToProcessor.PORT, port: channel.port1}, [channel.port1]);
      await this._call(ToWorker.START, {port: channel.port2}, [channel.port2]);
      source.connect(node);
      node.connect(context.destination);        // Chrome calls process() only for nodes connected to the graph
      await context.resume();
      this.mic = {media, context, source, node};
    } catch (error) {
      media.getTracks().forEach((t) => t.stop());
      context.close();
      throw error;
    }
  }

  // Stop the microphone; resolves once the last words were released (the engine flushes at full speed).
  async stop() {
    const mic = this.mic;
    this.mic = null;
    if (mic) {
      const stopped = new Promise((resolve) => {
        mic.node.port.onmessage = ({data}) => { if (data?.type === 'stopped') resolve(); };
        setTimeout(resolve, PROCESSOR_STOP_WAIT_MS);
      });
      mic.node.port.postMessage({type: ToProcessor.STOP});
      await stopped;
      mic.media.getTracks().forEach((t) => t.stop());
      mic.source.disconnect();
      mic.node.disconnect();
      await mic.context.close();
    }
    if (this.worker) return this._call(ToWorker.STOP);
    return {stats: null};
  }

  // Push 24 kHz mono samples into the live stream (a custom audio source instead of the microphone).
  pushAudio(pcm) {
    this._requireLoaded();
    return this._call(ToWorker.AUDIO, {pcm}, [pcm.buffer]);
  }

  flush() {
    this._requireLoaded();
    return this._call(ToWorker.FLUSH);
  }

  reset() {
    this._requireLoaded();
    return this._call(ToWorker.RESET);
  }

  // Experimental, as the official prompting script: steer every later stream with a text prompt (a spelling the
  // model must write first, e.g. a name) and/or an audio prompt (a recording fed before each stream, e.g. someone
  // saying that name; its words are hidden, times count from the real audio). audio: a Float32Array of 24 kHz mono
  // samples or a File/Blob/ArrayBuffer. {} or null clears it. Drops the current stream. The model is very sensitive
  // to the prompt. Resolves with {ids (text prompt tokens), leadInSeconds}; an unusable prompt is an SttError 'prompt'.
  async setPrompt(prompt = null) {
    this._requireLoaded();
    const {text = '', audio = null} = prompt ?? {};
    const pcm = audio === null || audio instanceof Float32Array ? audio
      : await decodeToMono24k(audio instanceof ArrayBuffer ? audio : await audio.arrayBuffer(), audio?.name);
    return this._call(ToWorker.SET_PROMPT, {text, audio: pcm});
  }

  // Transcribe a recording (File/Blob/ArrayBuffer in any format the browser decodes), faster than real time.
  // Resolves with [{text, start, end}]; onProgress({done, total}) in 24 kHz samples.
  async transcribeFile(file, onProgress = null) {
    this._requireLoaded();
    const pcm = await decodeToMono24k(file instanceof ArrayBuffer ? file : await file.arrayBuffer(), file?.name);
    return (await this.transcribePcm(pcm, onProgress)).words;
  }

  // The same for samples already at 24 kHz mono; resolves with {words, stats}.
  async transcribePcm(pcm, onProgress = null) {
    this._requireLoaded();
    const id = this._nextId;           // the id _call will use: progress events carry it
    const off = onProgress ? this.on('transcribeProgress', (p) => { if (p.id === id) onProgress(p); }) : null;
    try {
      return await this._call(ToWorker.TRANSCRIBE, {pcm}, [pcm.buffer]);
    } finally {
      off?.();
    }
  }

  // Browser, adapter (info, features, limits), the variant it gets and, once loaded, the engine's info: for bug
  // reports (diagnostics.js). Works before load() and after a failed one.
  async diagnostics() {
    const {collectDiagnostics} = await import('./diagnostics.js');
    return collectDiagnostics(this.info, this.urls.plansUrl);
  }

  // Delete the cached model files (the next load downloads them again).
  async clearCache() {
    const {clearCache} = await import('./package.js');
    await clearCache();
  }

  destroy() {
    if (this.mic) {
      this.mic.media.getTracks().forEach((t) => t.stop());
      this.mic.context.close();
      this.mic = null;
    }
    this.worker?.terminate();
    this.worker = null;
    for (const {reject} of this._calls.values()) reject(new SttError(ErrorCode.INTERNAL, 'the engine was closed'));
    this._calls.clear();
  }

  // ---- plumbing ---------------------------------------------------------------------------------------------------
  _call(type, fields = {}, transfer = []) {
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      this._calls.set(id, {resolve, reject});
      this.worker.postMessage({type, id, ...fields}, transfer);
    });
  }

  _receive(message) {
    const {type, ...detail} = message;
    if (type === FromWorker.REPLY) {
      const call = this._calls.get(detail.id);
      this._calls.delete(detail.id);
      if (detail.error) call?.reject(fromPayload(detail.error));
      else call?.resolve(detail.result);
      return;
    }
    if (type === FromWorker.ERROR) {
      this._emit('error', fromPayload(detail.error));
      return;
    }
    this._emit(type, detail);
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, {detail}));
  }

  _workerFailed(event) {
    const error = new SttError(ErrorCode.INTERNAL, `the engine worker failed: ${event.message ?? 'script error'}`);
    event.preventDefault?.();
    for (const {reject} of this._calls.values()) reject(error);
    this._calls.clear();
    this._emit('error', error);
  }

  _requireLoaded() {
    if (!this.worker) throw new SttError(ErrorCode.INTERNAL, 'call load() first');
  }
}

// Decode with the browser's decoders (main thread only), resample to 24 kHz and mix down to mono.
export async function decodeToMono24k(bytes, name = 'the file') {
  let decoded;
  try {
    decoded = await new OfflineAudioContext(1, 1, TARGET_RATE).decodeAudioData(bytes);  // resamples to 24 kHz
  } catch (error) {
    throw new SttError(ErrorCode.AUDIO_DECODE, `could not decode ${name}: ${error?.message ?? error}`);
  }
  if (!decoded.length) throw new SttError(ErrorCode.AUDIO_DECODE, `${name} holds no audio`);
  if (decoded.numberOfChannels === 1) return decoded.getChannelData(0).slice();
  const context = new OfflineAudioContext(1, decoded.length, TARGET_RATE);   // the destination mixes down
  const source = context.createBufferSource();
  source.buffer = decoded;
  source.connect(context.destination);
  source.start();
  return (await context.startRendering()).getChannelData(0);
}

// A clear error before anything loads: null when WebGPU exists (the adapter is checked by load()).
export function webGpuProblem() {
  return globalThis.navigator?.gpu ? null
    : new SttError(ErrorCode.NO_WEBGPU, 'This browser has no WebGPU (navigator.gpu is missing).');
}
