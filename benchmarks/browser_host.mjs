// The browser host on a real GPU without a browser: web/runtime.js, unchanged, in Node on Dawn (Chrome's WebGPU
// implementation, through the `webgpu` npm package: the root package.json's dev dependency). Driven by
// benchmarks/browser_host.py, which writes the config and prints the one JSON line; run alone:
//   node benchmarks/browser_host.mjs CONFIG.json
// CONFIG: {site: an exported site (its runtime.js, kernels/ and model/ are used), plans: a plans.json document
// {host, rules, variants} (the plans `kyutai-stt bench` runs), steps, warmup, position (first frame index), latency_samples,
// no_int8 (choose the variant as a browser without dot4I8Packed would), no_f16 (likewise without shader-f16),
// inputs: {role: {u32_below: n} | {f32_scale: s}}, toggles: Dawn toggles, tokens (also print each timed step's text
// token: to compare hosts), inputs_out (a path: write the frames taken there as JSON, [{role: [words]}], so that
// another host can take the same), profile (also each dispatch's GPU time, in a pass of its own: dispatch_ms)}.
// Prints one JSON line: the variant the browser's own rules chose, the adapter, the interval between completed
// frames (p50, p95), the mean (the throughput), the GPU time per frame from timestamp queries, a frame's latency.
import {readFile, writeFile} from 'node:fs/promises';
import {join} from 'node:path';
import {pathToFileURL} from 'node:url';

import {create, globals} from 'webgpu';

const config = JSON.parse(await readFile(process.argv[2], 'utf8'));
Object.assign(globalThis, globals);
// Node 21+ defines navigator as a getter: define it, do not assign it.
Object.defineProperty(globalThis, 'navigator', {value: {gpu: create(['backend=vulkan', ...config.toggles])},
  configurable: true});

const web = pathToFileURL(join(config.site, '/'));
const {PlanRuntime, chooseVariant, requestAdapter, requestDevice, adapterSummary, wgslLanguageFeatures, withFeatures} =
  await import(new URL('runtime.js', web));
const {checkManifestFiles, MANIFEST} = await import(new URL('package.js', web));

function percentile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.round(q * (sorted.length - 1)))];
}

// Deterministic inputs (the work does not depend on the values): a small LCG, as many frames as `count`.
function makeInputs(plan, runtime, count) {
  let seed = 12345;
  const next = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  return Array.from({length: count}, () => Object.fromEntries(Object.entries(config.inputs).map(([role, spec]) => {
    const words = runtime.buffers.get(plan.inputs[role]).size / 4;
    if (spec.u32_below) return [role, Uint32Array.from({length: words}, () => Math.floor(next() * spec.u32_below))];
    return [role, Float32Array.from({length: words}, () => spec.f32_scale * (2 * next() - 1))];
  })));
}

async function loadWeights(runtime) {
  const model = join(config.site, 'model');
  const manifest = JSON.parse(await readFile(join(model, MANIFEST), 'utf8'));
  checkManifestFiles(manifest);      // file names are data: plain names inside the package directory, checked
  const uploads = runtime.weightUploads(manifest);
  for (const file of manifest.files) {
    if (!uploads.has(file.name)) continue;
    const bytes = await readFile(join(model, file.name));
    runtime.uploadShard(uploads.get(file.name), bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  }
  runtime.checkWeightsComplete();
}

async function main() {
  const adapter = await requestAdapter();
  const plans = config.plans;
  const languageFeatures = config.no_int8 ? new Set() : wgslLanguageFeatures();
  // Without shader-f16: the rules see the adapter's other features.
  const chooser = config.no_f16 ? withFeatures(adapter, (f) => f !== 'shader-f16') : adapter;
  const variant = chooseVariant(chooser, plans, languageFeatures);
  const plan = plans.variants[variant];
  const device = await requestDevice(adapter, plan, plans.host);
  const runtime = new PlanRuntime(device, plan, {readbackDepth: plans.host.readback_depth});
  await loadWeights(runtime);
  await runtime.compile(async (name) => readFile(join(config.site, 'kernels', `${name}.wgsl`), 'utf8'));
  const inputs = makeInputs(plan, runtime, 16);
  if (config.inputs_out) {
    await writeFile(config.inputs_out, JSON.stringify(inputs.map((frame) =>
      Object.fromEntries(Object.entries(frame).map(([role, words]) => [role, Array.from(words)])))));
  }
  await runtime.reset(config.position);
  for (let i = 0; i < config.warmup; i++) await runtime.submit(inputs[i % inputs.length]);
  await runtime.drain();

  const stamps = [];
  const gpuMs = [];
  const tokens = [];
  const start = performance.now();
  for (let i = 0; i < config.steps; i++) {
    const {result} = await runtime.submit(inputs[i % inputs.length]);
    result.then((r) => {
      stamps.push(performance.now());
      if (config.tokens) tokens.push(r.outputs.results[0]);
      if (r.stageMs) gpuMs.push(Object.values(r.stageMs).reduce((a, b) => a + b, 0));
    });
  }
  await runtime.drain();
  const meanMs = (performance.now() - start) / config.steps;
  // A live stream's frame latency: one submission on an otherwise idle GPU, until its result is back.
  const latencies = [];
  for (let i = 0; i < Math.min(config.latency_samples, config.steps); i++) {
    const begin = performance.now();
    await (await runtime.submit(inputs[i % inputs.length])).result;
    latencies.push(performance.now() - begin);
  }
  // GPU milliseconds of each dispatch, each in a pass of its own (--profile).
  const dispatchMs = config.profile ? await runtime.dispatchTimes(3) : null;
  const intervals = stamps.slice(1).map((t, i) => t - stamps[i]).sort((a, b) => a - b);
  const summary = adapterSummary(adapter);
  console.log(JSON.stringify({
    variant, adapter: [summary.vendor, summary.architecture, summary.description].filter(Boolean).join(' '),
    mean_ms: meanMs, p50_ms: percentile(intervals, 0.5), p95_ms: percentile(intervals, 0.95),
    gpu_mean_ms: gpuMs.length ? gpuMs.reduce((a, b) => a + b, 0) / gpuMs.length : null,
    frame_latency_p50_ms: percentile(latencies.sort((a, b) => a - b), 0.5),
    dispatches_per_step: plan.dispatches.length, streams: plan.streams ?? 1, ...(config.tokens ? {tokens} : {}),
    ...(dispatchMs ? {dispatch_ms: dispatchMs} : {}),
  }));
  runtime.destroy();
}

await main();
