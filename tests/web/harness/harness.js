// Test harness: window.harness.* functions that the Python tests call through Playwright (tests/web/conftest.py
// Page.call). Arrays cross the boundary as base64 strings of their raw little-endian bytes.
import {
  PlanRuntime, checkPlanFormat, chooseVariant, createPipeline, kernelFetcher, planProblems, portableVariant,
  requestAdapter, requestDevice,
} from '/runtime.js';
import {clearCache, fetchManifest, loadShards, sha256Hex} from '/package.js';
import {Resampler} from '/audio-processor.js';
import {SttClient} from '/stt-client.js';

const SITE = new URL('/', location.href);
const loadKernel = kernelFetcher(new URL('kernels/', SITE));

function fromBase64(text) {
  return Uint8Array.fromBase64 ? Uint8Array.fromBase64(text) : Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function toBase64(bytes) {
  const u8 = new Uint8Array(bytes.buffer ?? bytes, bytes.byteOffset ?? 0, bytes.byteLength);
  if (u8.toBase64) return u8.toBase64();
  let s = '';
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(s);
}

// ---- single kernels ---------------------------------------------------------------------------------------------
let kernelDevice = null;
const pipelines = new Map();

async function device() {
  if (!kernelDevice) {
    const adapter = await requestAdapter();
    const {host} = await sitePlans();
    const requiredLimits = Object.fromEntries(host.wanted_limits.map((n) => [n, adapter.limits[n]]));
    const requiredFeatures = ['subgroups'].filter((f) => adapter.features.has(f));
    kernelDevice = await adapter.requestDevice({requiredLimits, requiredFeatures});
    kernelDevice.onuncapturederror = (e) => console.error(`uncaptured WebGPU error: ${e.error.message}`);
  }
  return kernelDevice;
}

// One dispatch of kernels/<kernel>.wgsl, as gpu.run_kernel natively. bindings: [{binding, kind: 'storage' |
// 'uniform' | 'output', data: base64}] (outputs start with their data and are read back). Returns {binding: base64}.
async function runKernel({kernel, entry = 'main', constants = {}, bindings, workgroups}) {
  const gpu = await device();
  const key = JSON.stringify([kernel, entry, constants]);
  if (!pipelines.has(key)) {
    pipelines.set(key, createPipeline(gpu, await loadKernel(kernel), {kernel, constants, entry}));
  }
  const pipeline = await pipelines.get(key);
  gpu.pushErrorScope('validation');
  const buffers = bindings.map(({binding, kind, data}) => {
    const bytes = fromBase64(data);
    // Read-only inputs are padded to 16 bytes: kernels read several as vec4 arrays, and a test array whose length
    // is not a multiple of 4 elements (conv1d's 37-channel bias) would otherwise end inside a vec4 that Chrome's
    // bounds checks clamp away (lavapipe reads the allocation's padding). Plans never bind such a buffer:
    // test_webapp.py checks every vector binding of every plan variant.
    const multiple = kind === 'output' ? 4 : 16;
    const size = Math.max(multiple, Math.ceil(bytes.byteLength / multiple) * multiple);
    const usage = kind === 'uniform' ? GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST
      : GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const buffer = gpu.createBuffer({size, usage, mappedAtCreation: true});
    new Uint8Array(buffer.getMappedRange()).set(bytes);
    buffer.unmap();
    return {binding, kind, buffer, bytes: bytes.byteLength};
  });
  const group = gpu.createBindGroup({layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map(({binding, buffer}) => ({binding, resource: {buffer}}))});
  const encoder = gpu.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(...workgroups);
  pass.end();
  const reads = buffers.filter((b) => b.kind === 'output').map((b) => {
    const staging = gpu.createBuffer({size: b.buffer.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST});
    encoder.copyBufferToBuffer(b.buffer, 0, staging, 0, b.buffer.size);
    return {...b, staging};
  });
  gpu.queue.submit([encoder.finish()]);
  const error = await gpu.popErrorScope();
  if (error) throw new Error(`WebGPU validation error: ${error.message}`);
  const out = {};
  for (const r of reads) {
    await r.staging.mapAsync(GPUMapMode.READ);
    out[r.binding] = toBase64(new Uint8Array(r.staging.getMappedRange(), 0, r.bytes));
    r.staging.unmap();
    r.staging.destroy();
  }
  buffers.forEach((b) => b.buffer.destroy());
  return out;
}

async function adapterInfo() {
  const adapter = await requestAdapter();
  return {architecture: adapter.info.architecture, subgroupMinSize: adapter.info.subgroupMinSize,
    features: [...adapter.features], wgslLanguageFeatures: [...(navigator.gpu.wgslLanguageFeatures ?? [])]};
}

// ---- the package loader -------------------------------------------------------------------------------------------
// loadShards over the site's model/ with a shard callback that only hashes; {result, last progress, ...} or {error}.
// fakeQuota: bytes navigator.storage.estimate() reports as the quota (usage 0) during the load.
async function loadPackage({retries = 0, backoffMs = 10, fakeQuota = null} = {}) {
  const {manifest} = await fetchManifest(new URL('model/', SITE));
  const progress = [];
  const shards = [];
  const estimate = StorageManager.prototype.estimate;
  if (fakeQuota !== null) StorageManager.prototype.estimate = async () => ({quota: fakeQuota, usage: 0});
  try {
    const result = await loadShards({baseUrl: new URL('model/', SITE), manifest, retries, backoffMs,
      onProgress: (p) => progress.push(p),
      onShard: async (name, bytes) => {
        shards.push({name, bytes: bytes.byteLength, sha256: await sha256Hex(bytes)});
      }});
    return {result, shards, total: manifest.total_bytes, last: progress.at(-1), events: progress.length,
      monotonic: progress.every((p, i) => i === 0 || p.loaded >= progress[i - 1].loaded)};
  } catch (error) {
    return {error: {name: error.name, code: error.code, message: error.message, fix: error.fix}};
  } finally {
    StorageManager.prototype.estimate = estimate;
  }
}

// ---- variant choice and limits, on stand-in adapters ---------------------------------------------------------
function fakeAdapter({info = {}, features = [], limits = {}}) {
  const requestDevice = async () => { throw new Error('not a real adapter'); };
  return {info, features: new Set(features), limits, requestDevice};
}

async function sitePlans() {
  return (await fetch(new URL('plans.json', SITE))).json();
}

// adapter.languageFeatures: the WGSL language features to pretend (default none, whatever this browser has).
async function variantFor(adapter) {
  return chooseVariant(fakeAdapter(adapter), await sitePlans(), new Set(adapter.languageFeatures ?? []));
}

// The variant a fast path that does not compile falls back to (worker.js load).
async function portableVariantFor(adapter) {
  return portableVariant(fakeAdapter(adapter), await sitePlans());
}

async function planFit({variant, limits, features, languageFeatures = [], deviceMemoryGiB}) {
  return planProblems((await sitePlans()).variants[variant], limits, new Set(features),
    {languageFeatures: new Set(languageFeatures), deviceMemoryGiB});
}

// The site's plan of `variant` with `changes` applied: checkPlanFormat's error ({code, message}), or null.
async function planFormatError({variant, changes}) {
  try {
    checkPlanFormat({...(await sitePlans()).variants[variant], ...changes});
    return null;
  } catch (error) {
    return {code: error.code, message: error.message};
  }
}

async function deviceError({variant, ...adapter}) {
  try {
    const plans = await sitePlans();
    await requestDevice(fakeAdapter(adapter), plans.variants[variant], plans.host);
    return null;
  } catch (error) {
    return {code: error.code, message: error.message};
  }
}

// ---- audio ----------------------------------------------------------------------------------------------------
// Resample base64 f32 samples in blocks of `block` (an AudioWorklet's 128) from inRate to outRate.
function resample({samples, inRate, outRate, block = 128}) {
  const input = new Float32Array(fromBase64(samples).buffer);
  const resampler = new Resampler(inRate, outRate);
  const parts = [];
  for (let i = 0; i < input.length; i += block) parts.push(resampler.process(input.subarray(i, i + block)));
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return {samples: toBase64(out), latency: resampler.latency};
}

// ---- the embeddable client (worker, AudioWorklet) ------------------------------------------------------------
const CLIENT_EVENTS = ['word', 'partial', 'endOfTurn', 'step', 'stats', 'error', 'progress', 'listening', 'ready',
  'transcribeProgress'];
let client = null;
const events = [];

function record(name, detail) {
  events.push(name === 'error' ? {event: name, code: detail.code, message: detail.message, fix: detail.fix}
    : {event: name, ...detail});
}

async function clientLoad(options = {}) {
  client?.destroy();
  events.length = 0;
  client = new SttClient({baseUrl: SITE});
  for (const name of CLIENT_EVENTS) client.on(name, (detail) => record(name, detail));
  return client.load(options);
}

// Events recorded since index `since`, optionally of one kind; and the next index.
function clientEvents({since = 0, event = null} = {}) {
  return {events: events.slice(since).filter((e) => !event || e.event === event), next: events.length};
}

async function clientTranscribe({wav}) {
  const words = await client.transcribeFile(new Blob([fromBase64(wav)], {type: 'audio/wav'}));
  return words;
}

// setPrompt on the loaded client; audio: base64 float32 samples. The result, or the error as {code, message}.
async function clientSetPrompt({text = '', audio = null} = {}) {
  try {
    return await client.setPrompt(text || audio ? {text, audio: audio && new Float32Array(fromBase64(audio).buffer)}
      : null);
  } catch (error) {
    return {error: {code: error.code, message: error.message}};
  }
}

// The transcript of 24 kHz samples (base64 float32): {words, stats}.
async function clientTranscribePcm({pcm}) {
  return client.transcribePcm(new Float32Array(fromBase64(pcm).buffer));
}

// A plan given as JSON (e.g. one no variant of plans.json holds), run by runtime.js over the site's model: one frame
// per entry of `inputs` ({role: u32 words}, every stream's); each frame's outputs as {role: u32 words}, and its
// streams' frame indices. resets: {submission index: [stream, ...]} restarted (resetStream) before that frame.
// actives: per frame, each stream's "takes this frame" flag (null: all).
async function runPlan({plan, inputs, resets = {}, actives = null}) {
  const {host} = await sitePlans();
  const device = await requestDevice(await requestAdapter(), plan, host);
  const runtime = new PlanRuntime(device, plan, {readbackDepth: host.readback_depth});
  try {
    const compiled = runtime.compile(kernelFetcher(new URL('kernels/', SITE)));
    const {manifest} = await fetchManifest(new URL('model/', SITE));
    const uploads = runtime.weightUploads(manifest);
    await loadShards({baseUrl: new URL('model/', SITE), manifest,
      onShard: (name, bytes) => runtime.uploadShard(uploads.get(name), bytes)});
    runtime.checkWeightsComplete();
    await compiled;
    const results = [];
    for (const [i, frame] of inputs.entries()) {
      for (const stream of resets[i] ?? []) runtime.resetStream(stream);
      const typed = Object.fromEntries(Object.entries(frame).map(([role, words]) => [role, new Uint32Array(words)]));
      results.push((await runtime.submit(typed, {active: actives?.[i] ?? null})).result);
    }
    return (await Promise.all(results)).map((r) => ({
      ...Object.fromEntries(Object.entries(r.outputs).map(([role, words]) => [role, [...words]])),
      streamFrames: r.streamFrames,
      active: r.active,
    }));
  } finally {
    runtime.destroy();
  }
}

// A load that is expected to fail (another client: the loaded one stays): the error as {code, message, fix}.
async function loadError({options = {}, hideWebGpu = false} = {}) {
  const saved = Object.getOwnPropertyDescriptor(Navigator.prototype, 'gpu');
  if (hideWebGpu) Object.defineProperty(Navigator.prototype, 'gpu', {get: () => undefined, configurable: true});
  const other = new SttClient({baseUrl: SITE});
  try {
    await other.load(options);
    return null;
  } catch (error) {
    return {code: error.code, message: error.message, fix: error.fix};
  } finally {
    if (hideWebGpu) Object.defineProperty(Navigator.prototype, 'gpu', saved);
    other.destroy();
  }
}

window.harness = {runKernel, adapterInfo, loadPackage, clearCache, resample, variantFor, portableVariantFor, planFit,
  deviceError, planFormatError,
  runPlan,
  clientLoad, clientEvents, clientTranscribe, clientTranscribePcm, clientSetPrompt, loadError,
  clientStart: (options) => client.start(options), clientStop: () => client.stop()};
window.harnessReady = true;
