// The inference worker: owns the GPU device, the plan runtime and the delayed-streams decoder. The page talks to it
// through protocol.js messages; live audio arrives as 1920-sample frames on a MessagePort from the AudioWorklet.
//
// A stream mirrors kyutai_stt/streaming/transcriber.py: framing.js (streaming/framing.py's twin) puts
// `silencePrefix` seconds of silence first, then cuts the caller's 24 kHz audio into frames (each one submission of
// the whole-frame plan); results are decoded in frame order; a flush pads the last frame, feeds delay_steps +
// FLUSH_EXTRA_FRAMES silent frames at full speed, releases the last words and starts a new stream. All GPU work runs through one serial task queue, so requests (flush, reset, transcribe) act
// after the audio that arrived before them. Submission never waits for the previous frame's readback (runtime.js).

import {ErrorCode, SttError, errorPayload} from './errors.js';
import {Framer} from './framing.js';
import {clearCache, fetchManifest, loadShards} from './package.js';
import {DEFAULT_MAX_BACKLOG_SECONDS, LivePacer} from './pacing.js';
import {FromWorker, ToWorker} from './protocol.js';
import {checkPrompt, hiddenUntil, leadIn, promptWords} from './prompt.js';
import {
  PlanRuntime, adapterSummary, chooseVariant, decodeOutput, kernelFetcher, portableVariant, requestAdapter,
  requestDevice,
} from './runtime.js';
import {StreamDecoder} from './stream.js';
import {Tokenizer} from './tokenizer.js';

// The model's stream settings (delay_steps, the default silence prefix, whether it has a semantic VAD, what it is)
// come from plans.json's "stream", written by the same Python code that gives them to transcriber.py.
// Silent frames after delay_steps in a flush: they let the last word's closing token out (transcriber.py).
export const FLUSH_EXTRA_FRAMES = 2;
// A STATS event (and a TRANSCRIBE_PROGRESS event) every this many frames: about once a second of audio; live, also
// once a second of wall time (on a device slower than real time, 12 frames take far longer than a second).
const REPORT_EVERY_FRAMES = 12;
const REPORT_INTERVAL_MS = 1000;
// Added to the mean square before the log in the audio level: digital silence reads -120 dB instead of -inf.
const SILENCE_POWER = 1e-12;
// How long STOP waits for the AudioWorklet's last frame ('end' marker) before flushing anyway.
const END_WAIT_MS = 1000;

let engine = null;        // {runtime, decoder, manifest, frameSize, sampleRate, silencePrefix, info, prompt...}
let stream = null;        // the current stream: pending samples, counters (newStream())
let live = null;          // {port, ended: Promise, first: bool, pacer: LivePacer (the bounded frame queue)}
let tasks = Promise.resolve();
let results = Promise.resolve();
let collector = null;     // word events of a TRANSCRIBE in progress
const stats = {frames: 0, completed: 0, windowMs: 0, windowFrames: 0, lastResultAt: 0, energy: 0, samples: 0,
  stageMs: {}, reportedAt: 0, lastWindow: {msPerFrame: 0, stageMs: null, realTimeFactor: 0}};

function post(type, fields = {}, transfer = []) {
  self.postMessage({type, ...fields}, transfer);
}

// Serial queue of GPU work: each task starts when the previous one settled.
function enqueue(task) {
  const next = tasks.then(task);
  tasks = next.catch(() => {});
  return next;
}

self.onmessage = ({data}) => {
  const handler = HANDLERS[data?.type];
  const run = handler ? handler(data) : Promise.reject(new Error(`unknown message ${data?.type}`));
  Promise.resolve(run).then(
    (result) => post(FromWorker.REPLY, {id: data?.id, result: result ?? null}),
    (error) => post(FromWorker.REPLY, {id: data?.id, error: errorPayload(error)}));
};

// Requests that touch the GPU are queued behind the audio received before them; STOP queues its flush itself
// (after the worklet's last frame), CLEAR_CACHE needs no GPU.
const HANDLERS = {
  [ToWorker.LOAD]: (msg) => enqueue(() => load(msg)),
  [ToWorker.START]: (msg) => enqueue(() => start(msg)),
  [ToWorker.STOP]: stop,
  [ToWorker.AUDIO]: ({pcm}) => enqueue(() => { requireEngine(); return push(pcm); }),
  [ToWorker.FLUSH]: () => enqueue(flush),
  [ToWorker.RESET]: () => enqueue(reset),
  [ToWorker.TRANSCRIBE]: (msg) => enqueue(() => transcribe(msg)),
  [ToWorker.SET_PROMPT]: (msg) => enqueue(() => setPrompt(msg)),
  [ToWorker.CLEAR_CACHE]: clearCache,
};

function requireEngine() {
  if (!engine) throw new SttError(ErrorCode.INTERNAL, 'the engine is not loaded (call load() first, or again after ' +
    'a device loss)');
  return engine;
}

// ---- loading ----------------------------------------------------------------------------------------------------

async function load({modelUrl, plansUrl, kernelsUrl, variant, silencePrefix, decoder = {}, retries, backoffMs,
                     maxBacklogSeconds = DEFAULT_MAX_BACKLOG_SECONDS, testFrameDelayMs = 0, testDeviceMemoryGiB}) {
  const t0 = performance.now();
  if (engine) {
    engine.runtime.destroy();
    engine = null;
  }
  const [plans, {manifest, sha256}] = await Promise.all([fetchJson(plansUrl, 'plans.json'), fetchManifest(modelUrl)]);
  if (plans.package_sha !== sha256) {
    throw new SttError(ErrorCode.PACKAGE_MISMATCH, 'This site was exported for another model package (plans.json ' +
      `names manifest ${String(plans.package_sha).slice(0, 12)}…, ${modelUrl} serves ${sha256.slice(0, 12)}…); ` +
      're-run kyutai-stt export-web --model ... for this package.');
  }
  const settings = plans.stream;
  if (!Number.isInteger(settings?.delay_steps) || !settings.model) {
    throw new SttError(ErrorCode.PACKAGE_MISMATCH, 'plans.json has no stream settings (it was exported by an ' +
      'older kyutai-stt): re-run kyutai-stt export-web --model ... for this package.');
  }
  const adapter = await requestAdapter();
  const chosen = variant ?? chooseVariant(adapter, plans);
  const options = {t0, plans, manifest, sha256, kernelsUrl, modelUrl, retries, backoffMs, silencePrefix, decoder,
    maxBacklogSeconds, testFrameDelayMs, testDeviceMemoryGiB};
  try {
    return await loadVariant(adapter, chosen, null, options);
  } catch (error) {
    // A fast path's kernel that does not compile on this GPU (a driver or compiler gap no test here could see):
    // the portable kernels instead, on a new device (an adapter gives one). A variant the page asked for is not
    // replaced.
    const fallback = portableVariant(adapter, plans);
    if (variant || !(error instanceof SttError && error.kernel) || chosen === fallback) throw error;
    const reason = error.message;
    post(FromWorker.PROGRESS, {phase: 'fallback', from: chosen, to: fallback, reason});
    return await loadVariant(await requestAdapter(), fallback, {from: chosen, reason}, options);
  }
}

// Loads plans.variants[chosen] on a device of this adapter; fallback: {from, reason} when it replaces a variant
// whose kernels did not compile (info.fallback), else null.
async function loadVariant(adapter, chosen, fallback, {t0, plans, manifest, sha256, kernelsUrl, modelUrl, retries,
  backoffMs, silencePrefix, decoder, maxBacklogSeconds, testFrameDelayMs, testDeviceMemoryGiB}) {
  const settings = plans.stream;
  const plan = plans.variants?.[chosen];
  if (!plan) throw new SttError(ErrorCode.PACKAGE_MISMATCH, `plans.json has no "${chosen}" variant`);
  // testDeviceMemoryGiB: a test hook standing in for navigator.deviceMemory (a phone's); unset otherwise.
  const memory = testDeviceMemoryGiB ?? globalThis.navigator?.deviceMemory;
  const device = await requestDevice(adapter, plan, plans.host, memory);
  watchDevice(device);
  const tDevice = performance.now();

  // Pipelines compile while the shards download and upload.
  const runtime = new PlanRuntime(device, plan, {readbackDepth: plans.host.readback_depth});
  let download, compile, warm;
  try {
    const compiled = timed(runtime.compile(kernelFetcher(kernelsUrl), (p) => post(FromWorker.PROGRESS, p)));
    compiled.catch(() => {});            // awaited below; a failure must not count as unhandled meanwhile
    const uploads = runtime.weightUploads(manifest);
    download = await timed(loadShards({
      baseUrl: modelUrl, manifest, retries, backoffMs,
      onProgress: (p) => post(FromWorker.PROGRESS, {phase: 'download', ...p}),
      onShard: (name, bytes) => runtime.uploadShard(uploads.get(name), bytes),
    }));
    runtime.checkWeightsComplete();
    compile = await compiled;
    post(FromWorker.PROGRESS, {phase: 'warmup'});
    warm = await timed(runtime.warmUp());
  } catch (error) {
    runtime.destroy();                   // a failed load keeps no GPU memory
    throw error;
  }

  const input = plan.buffers.find((b) => b.name === plan.inputs.pcm);
  silencePrefix ??= settings.silence_prefix;
  const info = {
    adapter: adapterSummary(adapter), variant: chosen, fallback,
    // What runs, for the page to say: {name, parameters, layers, text_card, delay_seconds, languages} (plans.json).
    model: settings.model, endOfTurn: settings.end_of_turn, delaySteps: settings.delay_steps, silencePrefix,
    package: {quant: manifest.quant, variant: manifest.variant, bytes: manifest.total_bytes, sha256,
      synthetic: manifest.synthetic ?? null},
    plan: {dispatches: plan.dispatches.length, pipelines: plan.pipelines.length},
    timings: {
      totalMs: Math.round(performance.now() - t0), deviceMs: Math.round(tDevice - t0),
      downloadMs: Math.round(download.ms), compileMs: Math.round(compile.ms), warmUpMs: Math.round(warm.ms),
      cached: download.value.downloadedFiles === 0,
    },
  };
  // testFrameDelayMs: a test hook that makes every frame slower (an artificially slow device); 0 otherwise.
  engine = {runtime, manifest, info, silencePrefix, frameSize: input.size / 4, maxBacklogSeconds,
    frameDelayMs: Math.max(0, Number(testFrameDelayMs) || 0),
    sampleRate: manifest.config.mimi.sample_rate, decoderOptions: {delay_steps: settings.delay_steps, ...decoder},
    tokenizer: null};
  usePrompt(null);
  newStream();
  post(FromWorker.READY, info);
  return info;
}

async function fetchJson(url, what) {
  let response;
  try {
    response = await fetch(url, {cache: 'no-cache'});
  } catch (error) {
    throw new SttError(ErrorCode.DOWNLOAD, `could not fetch ${what} (${url}): ${error.message}`);
  }
  if (!response.ok) throw new SttError(ErrorCode.DOWNLOAD, `could not fetch ${what} (${url}): HTTP ${response.status}`);
  return response.json();
}

async function timed(promise) {
  const t0 = performance.now();
  const value = await promise;
  return {value, ms: performance.now() - t0};
}

function watchDevice(device) {
  let reported = false;
  device.lost.then((info) => {
    if (info.reason === 'destroyed') return;             // our own destroy() (a new LOAD)
    if (engine?.runtime.device === device) engine = null;
    post(FromWorker.ERROR, {error: errorPayload(new SttError(ErrorCode.DEVICE_LOST,
      `The GPU device was lost: ${info.message || 'no reason given'}.`))});
  });
  device.onuncapturederror = (event) => {
    if (reported) return;                                // one report: the next ones are usually consequences
    reported = true;
    post(FromWorker.ERROR, {error: errorPayload(new SttError(ErrorCode.GPU, `WebGPU error: ${event.error.message}`))});
  };
}

// ---- streams ------------------------------------------------------------------------------------------------------

function newStream() {
  stream = {framer: new Framer(engine.frameSize, engine.leadIn.length, engine.leadIn), samples: 0, words: 0,
    dropped: 0, first: true};
}

// ---- prompt (prompt.js) -------------------------------------------------------------------------------------------

// The prompt ids the plan has room for: its "prompt" input holds [n, e, ids].
function promptRoom() {
  const plan = engine.runtime.plan;
  return plan.buffers.find((b) => b.name === plan.inputs.prompt).size / 4 - 2;
}

// The encoder, made on first use (only a text prompt needs it).
function tokenizer(prompt) {
  if (prompt?.text && !engine.tokenizer) engine.tokenizer = new Tokenizer(engine.manifest.tokenizer);
  return engine.tokenizer;
}

// The prompt of every stream from now on ({} or null: none); the current stream is dropped. -> {ids, leadInSeconds}
async function setPrompt({text = '', audio = null}) {
  requireEngine();
  const prompt = text || audio ? checkPrompt({text, audio}) : null;
  promptWords(prompt, tokenizer(prompt), promptRoom());     // throws before anything changes if unusable
  await reset();                         // the current stream ends with its own decoder
  usePrompt(prompt);
  newStream();
  return {ids: engine.promptWords[0], leadInSeconds: engine.leadIn.length / engine.sampleRate};
}

// Lead-in, the plan's prompt input and the decoder (hiding, times) for `prompt` (checked, or null).
function usePrompt(prompt) {
  const {manifest, sampleRate, silencePrefix} = engine;
  const words = promptWords(prompt, tokenizer(prompt), promptRoom());
  const prefix = Math.round(silencePrefix * sampleRate);
  engine.leadIn = leadIn(prefix, prompt?.audio ?? null);
  engine.promptWords = words;
  engine.decoder = new StreamDecoder(manifest.tokenizer, {...engine.decoderOptions,
    silence_prefix: silencePrefix + (engine.leadIn.length - prefix) / sampleRate,
    hide_words_before: hiddenUntil(prefix, prompt?.audio ?? null)});
}

// Append the caller's samples and submit every whole frame.
async function push(samples) {
  requireEngine();
  stream.samples += samples.length;
  for (const v of samples) stats.energy += v * v;
  stats.samples += samples.length;
  await submitFrames(stream.framer.push(samples));
}

async function submitFrames(frames) {
  for (const frame of frames) await submitFrame(frame);
}

async function submitFrame(frame) {
  const submittedAt = performance.now();
  if (engine.frameDelayMs) await new Promise((resolve) => setTimeout(resolve, engine.frameDelayMs));
  const inputs = {pcm: frame};
  if (stream.first) {                    // the prompt's ids reach the GPU with a stream's first frame
    inputs.prompt = engine.promptWords;
    stream.first = false;
  }
  const {result} = await engine.runtime.submit(inputs);
  stats.frames += 1;
  results = results.then(() => result).then((r) => onResult(r, submittedAt)).catch(reportError);
}

function onResult({outputs, stageMs}, submittedAt) {
  if (!engine) return;                   // the device was lost meanwhile: its error was reported once
  const {token, vad} = decodeOutput(engine.runtime.plan, 'results', outputs.results);
  for (const event of engine.decoder.step(token[0], vad)) emit(event);
  // Service time: from submission, or from the previous result when this frame was queued behind it.
  const now = performance.now();
  const serviceMs = now - Math.max(submittedAt, stats.lastResultAt);
  live?.pacer.done(serviceMs);
  stats.windowMs += serviceMs;
  stats.windowFrames += 1;
  for (const [stage, ms] of Object.entries(stageMs ?? {})) stats.stageMs[stage] = (stats.stageMs[stage] ?? 0) + ms;
  stats.completed += 1;
  stats.lastResultAt = now;
  if (stats.windowFrames >= REPORT_EVERY_FRAMES || (live && now - stats.reportedAt >= REPORT_INTERVAL_MS)) postStats();
}

function emit(event) {
  const {type, ...fields} = event;
  if (type === 'word') {
    stream.words += 1;
    collector?.push({text: fields.text, start: fields.start, end: fields.end});
  }
  post(type, fields);
}

function postStats() {
  // An empty window (a flush right after a report: on a slow device live, every frame is reported) repeats the
  // last window's per-frame figures rather than reading 0 ms.
  if (!stats.windowFrames) return postSummary(stats.lastWindow);
  const msPerFrame = stats.windowMs / stats.windowFrames;
  const frameMs = 1000 * engine.frameSize / engine.sampleRate;
  // GPU time of each plan stage (LM, Mimi) per frame, from timestamp queries; null where the GPU has none.
  const stageMs = Object.keys(stats.stageMs).length ? Object.fromEntries(
    Object.entries(stats.stageMs).map(([stage, ms]) => [stage, ms / stats.windowFrames])) : null;
  stats.lastWindow = {msPerFrame, stageMs, realTimeFactor: msPerFrame / frameMs};
  return postSummary(stats.lastWindow);
}

function postSummary(figures) {
  // The caller's audio since the last report, RMS in dB relative to full scale (null: none arrived).
  const level = stats.samples ? 10 * Math.log10(stats.energy / stats.samples + SILENCE_POWER) : null;
  const summary = {frames: stats.completed, ...figures, level, framesBehind: stats.frames - stats.completed +
    queuedFrames(), audioSeconds: stream.samples / engine.sampleRate, droppedSeconds: stream.dropped / engine.sampleRate};
  Object.assign(stats, {windowMs: 0, windowFrames: 0, energy: 0, samples: 0, stageMs: {},
    reportedAt: performance.now()});
  post(FromWorker.STATS, summary);
  return summary;
}

function queuedFrames() {
  return live ? live.pacer.waiting : 0;
}

async function flush() {
  requireEngine();
  const {decoder, runtime, sampleRate} = engine;
  if (!stream.samples) {                 // no audio in this stream: nothing to release (as transcriber.py)
    await reset();
    return {stats: null};
  }
  decoder.endOfAudio(stream.samples / sampleRate);     // words the flush's silence releases end within the audio
  await submitFrames(stream.framer.flush(decoder.config.delay_steps + FLUSH_EXTRA_FRAMES));
  await runtime.drain();
  await results;
  for (const event of decoder.finish()) emit(event);          // clamped to the audio's end, set above
  const summary = postStats();
  await runtime.reset();
  decoder.reset();
  newStream();
  return {stats: summary};
}

async function reset() {
  requireEngine();
  await engine.runtime.drain();
  await results;
  await engine.runtime.reset();
  engine.decoder.reset();
  newStream();
}

function reportError(error) {
  post(FromWorker.ERROR, {error: errorPayload(error)});
}

// ---- live audio ---------------------------------------------------------------------------------------------------

async function start({port}) {
  requireEngine();
  if (live) throw new SttError(ErrorCode.INTERNAL, 'already listening: stop() first');
  let ended;
  const frameMs = (1000 * engine.frameSize) / engine.sampleRate;
  live = {port, ended: new Promise((resolve) => { ended = resolve; }), first: true,
    pacer: new LivePacer(frameMs, engine.maxBacklogSeconds)};
  const session = live;
  port.onmessage = ({data}) => {
    if (data instanceof Float32Array) {
      if (!engine) return;               // the device was lost: reported once, the page reloads the engine
      if (session.first) {
        session.first = false;
        post(FromWorker.LISTENING);
      }
      // Bounded: beyond maxBacklogSeconds waiting, the oldest frames are dropped (pacing.js says why).
      const {dropped, pace} = session.pacer.add(data, performance.now());
      for (const frame of dropped) stream.dropped += frame.length;
      if (pace) post(FromWorker.PACE, pace);
      enqueue(() => {
        const frame = session.pacer.take(performance.now());
        return frame && push(frame);
      }).catch(reportError);
    } else if (data?.type === 'end') {
      ended();
    }
  };
}

// Waits (briefly) for the worklet's last frame, detaches the port, then flushes behind every frame received.
async function stop() {
  if (live) {
    const session = live;
    await Promise.race([session.ended, new Promise((resolve) => setTimeout(resolve, END_WAIT_MS))]);
    session.port.onmessage = null;
    session.port.close();
    if (live === session) live = null;
  }
  return enqueue(() => (engine ? flush() : {stats: null}));
}

// ---- whole recordings ---------------------------------------------------------------------------------------------

async function transcribe({id, pcm}) {
  requireEngine();
  if (live) throw new SttError(ErrorCode.INTERNAL, 'stop the microphone before transcribing a file');
  await reset();
  const {frameSize} = engine;
  collector = [];
  try {
    const chunk = REPORT_EVERY_FRAMES * frameSize;
    for (let at = 0; at < pcm.length; at += chunk) {
      await push(pcm.subarray(at, at + chunk));
      post(FromWorker.TRANSCRIBE_PROGRESS, {id, done: Math.min(pcm.length, at + chunk), total: pcm.length});
    }
    const {stats: summary} = await flush();
    return {words: collector, stats: summary};
  } finally {
    collector = null;
  }
}
