// The browser host of a plan (docs/plan.md): the WebGPU twin of kyutai_stt/engine/runtime.py. It knows nothing of the model;
// the plan names the buffers, pipelines (kernel file + override constants) and the ordered dispatches of a frame.
//
// Load: create every buffer (the step buffer also as a uniform, rounded up to 16 bytes), write const values, fill
// weight buffers from the package's stream bytes (uploadShard), compile every pipeline from the same kernels/*.wgsl
// files as the native host, create one bind group per dispatch, reset.
// Frame: write the step fields and the inputs, record every dispatch into one compute pass, copy the outputs into a
// staging buffer, submit, then map that staging buffer. Readback is pipelined: a frame's submission waits only for
// the readback of the frame readbackDepth earlier (whose staging buffer it reuses), never for the previous one.
// Host constants (readback depth, wanted limits) and the variant rules come with the plans (plans.json "host",
// "rules": kyutai_stt/data/host.json and variants.json, the same data the native host reads).

import {ErrorCode, SttError} from './errors.js';

export const PLAN_FORMAT = 'kyutai-stt-plan';
export const PLAN_VERSION = 1;
// Uniform bindings need 16-byte multiples.
export const UNIFORM_ALIGN = 16;
// resolveQuerySet writes at multiples of 256 bytes of its destination.
const QUERY_RESOLVE_ALIGN = 256;
// WebGPU's most queries in one query set.
const MAX_QUERIES = 4096;
// Plans spell features as wgpu-py does ("subgroup"); WebGPU's names differ.
const WEBGPU_FEATURE = {'subgroup': 'subgroups', 'subgroups': 'subgroups', 'shader-f16': 'shader-f16'};

// ---- adapter and device -------------------------------------------------------------------------------------

export async function requestAdapter() {
  if (!globalThis.navigator?.gpu) {
    throw new SttError(ErrorCode.NO_WEBGPU, 'This browser has no WebGPU (navigator.gpu is missing).');
  }
  const adapter = await navigator.gpu.requestAdapter({powerPreference: 'high-performance'});
  if (!adapter) {
    throw new SttError(ErrorCode.NO_WEBGPU, 'This browser has WebGPU but offers no GPU adapter ' +
      '(WebGPU may be disabled, or the GPU is blocklisted).');
  }
  return adapter;
}

export function adapterSummary(adapter) {
  const info = adapter.info ?? {};
  return {
    vendor: info.vendor ?? '', architecture: info.architecture ?? '', device: info.device ?? '',
    description: info.description ?? '', isFallback: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
    subgroupMinSize: info.subgroupMinSize ?? 0, subgroupMaxSize: info.subgroupMaxSize ?? 0,
    features: [...adapter.features].filter((f) => Object.values(WEBGPU_FEATURE).includes(f)).sort(),
  };
}

// A CPU rasteriser (SwiftShader in Chrome, Mesa's llvmpipe/lavapipe), by what the adapter reports.
export function isCpuAdapter(adapter, host) {
  const s = adapterSummary(adapter);
  return s.isFallback || new RegExp(host.cpu_adapter_pattern, 'i').test(`${s.architecture} ${s.description} ${s.device}`);
}

// The WGSL language features of this browser's WebGPU (an empty set where it reports none).
export function wgslLanguageFeatures() {
  return globalThis.navigator?.gpu?.wgslLanguageFeatures ?? new Set();
}

// Which plan variant suits this adapter: the first of plans.json's rules whose conditions all hold
// (models/variants.py natively; features in wgpu-py's names, as plans spell them).
export function chooseVariant(adapter, {rules, host}, languageFeatures = wgslLanguageFeatures()) {
  const s = adapterSummary(adapter);
  const cpu = isCpuAdapter(adapter, host);
  for (const rule of rules) {
    if ((rule.cpu_adapter ?? cpu) === cpu &&
        (rule.features ?? []).every((f) => adapter.features.has(WEBGPU_FEATURE[f] ?? f)) &&
        s.subgroupMinSize >= (rule.min_subgroup_size ?? 0) &&
        (rule.language_features ?? []).every((f) => languageFeatures.has(f))) {
      return rule.variant;
    }
  }
  throw new SttError(ErrorCode.PACKAGE_MISMATCH, 'plans.json: no variant rule holds (the last must have no condition)');
}

// The adapter as chooseVariant sees it, offering only the optional features `keep` lets through.
export function withFeatures(adapter, keep) {
  return {info: adapter.info, isFallbackAdapter: adapter.isFallbackAdapter,
    features: new Set([...adapter.features].filter(keep))};
}

// The variant the rules give this adapter without any optional feature or WGSL language feature: the portable
// kernels, which every WebGPU device compiles (the fallback where a fast path's kernel does not: worker.js load).
export function portableVariant(adapter, plans) {
  return chooseVariant(withFeatures(adapter, () => false), plans, new Set());
}

function webgpuFeatures(plan) {
  return plan.required_features.map((f) => WEBGPU_FEATURE[f] ?? f);
}

// The share of the device's memory (navigator.deviceMemory, GiB) the plan's buffers may take: WebGPU does not say
// how much GPU memory there is, and on a phone or an integrated GPU the GPU shares the system's memory with the
// browser, the page and the system itself. A quarter lets the 1B's default package (~0.9 GB of buffers) run with
// 4 GiB and refuses the 2.6B's (~1.9 GB) there; desktops report 8 (the API's cap) and hold both. A heuristic:
// docs/browser.md says why, and the page names both numbers when it refuses.
export const DEVICE_MEMORY_SHARE = 0.25;

// Every byte of GPU memory the plan creates (weights, state, scratch, inputs and outputs).
export function planBytes(plan) {
  return plan.buffers.reduce((sum, b) => sum + b.size, 0);
}

// What stops this plan from running with these limits, features and WGSL language features (and deviceMemoryGiB,
// when the browser says it): [] when it fits.
export function planProblems(plan, limits, features,
  {languageFeatures = wgslLanguageFeatures(), deviceMemoryGiB} = {}) {
  const problems = [];
  const needed = planBytes(plan);
  if (deviceMemoryGiB > 0 && needed > DEVICE_MEMORY_SHARE * deviceMemoryGiB * 2 ** 30) {
    problems.push(`the model needs ${(needed / 1e9).toFixed(2)} GB of GPU memory and this device has about ` +
      `${deviceMemoryGiB} GiB of memory in all (a model may use a quarter of it: more gets the tab killed)`);
  }
  for (const f of webgpuFeatures(plan)) {
    if (!features.has(f)) problems.push(`the GPU lacks the feature "${f}"`);
  }
  for (const f of plan.required_language_features ?? []) {
    if (!languageFeatures.has(f)) problems.push(`this browser's WGSL lacks the language feature "${f}"`);
  }
  const biggest = plan.buffers.reduce((a, b) => (b.size > a.size ? b : a));
  if (biggest.size > limits.maxStorageBufferBindingSize || biggest.size > limits.maxBufferSize) {
    problems.push(`buffer ${biggest.name} needs ${biggest.size} bytes, the GPU binds at most ` +
      `${Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize)}`);
  }
  const bindings = Math.max(...plan.dispatches.map((d) => Object.keys(d.bindings).length));
  if (bindings > limits.maxStorageBuffersPerShaderStage) {
    problems.push(`a kernel binds ${bindings} buffers, the GPU allows ${limits.maxStorageBuffersPerShaderStage}`);
  }
  for (const p of plan.pipelines) {
    const size = p.constants.WORKGROUP_SIZE;
    if (size > limits.maxComputeInvocationsPerWorkgroup || size > limits.maxComputeWorkgroupSizeX) {
      problems.push(`kernel ${p.kernel} runs ${size} invocations per workgroup, the GPU allows ` +
        `${limits.maxComputeInvocationsPerWorkgroup}`);
      break;
    }
  }
  const groups = Math.max(...plan.dispatches.flatMap((d) => d.workgroups));
  if (groups > limits.maxComputeWorkgroupsPerDimension) {
    problems.push(`a dispatch needs ${groups} workgroups, the GPU allows ${limits.maxComputeWorkgroupsPerDimension}`);
  }
  return problems;
}

// A device with the adapter's own values of the wanted limits (plans.json host.wanted_limits: the spec defaults
// are far below what most GPUs offer) and exactly the features the plan needs; throws a clear SttError when the
// plan does not fit the adapter (or deviceMemoryGiB, navigator.deviceMemory where the browser says it).
export async function requestDevice(adapter, plan, {wanted_limits: wantedLimits}, deviceMemoryGiB) {
  checkPlanFormat(plan);
  const problems = planProblems(plan, adapter.limits, adapter.features, {deviceMemoryGiB});
  if (problems.length) {
    throw new SttError(ErrorCode.ADAPTER_LIMITS, `This device cannot run the model: ${problems.join('; ')}.`);
  }
  const requiredLimits = {};
  for (const name of wantedLimits) {
    if (adapter.limits[name] !== undefined) requiredLimits[name] = adapter.limits[name];
  }
  try {
    // Timestamps only measure (the stats' per-stage times): asked for when offered, never required.
    const timing = plan.stages?.length && adapter.features.has('timestamp-query') ? ['timestamp-query'] : [];
    return await adapter.requestDevice({label: 'kyutai-stt', requiredFeatures: [...webgpuFeatures(plan), ...timing],
      requiredLimits});
  } catch (error) {
    throw new SttError(ErrorCode.ADAPTER_LIMITS, `The GPU refused a device for the model: ${error.message}`);
  }
}

// An output's raw words (Uint32Array, as read back) -> {field name: values} by its buffer's fields (plan.py
// Plan.decode natively): e.g. {token: [u32], vad: Float32Array}.
export function decodeOutput(plan, role, words) {
  const buffer = plan.buffers.find((b) => b.name === plan.outputs[role]);
  const out = {};
  let at = 0;
  for (const f of buffer.fields) {
    const View = f.dtype === 'f32' ? Float32Array : Uint32Array;
    out[f.name] = new View(words.buffer, words.byteOffset + 4 * at, f.count);
    at += f.count;
  }
  return out;
}

export function checkPlanFormat(plan) {
  if (plan?.format !== PLAN_FORMAT || plan?.version !== PLAN_VERSION) {
    throw new SttError(ErrorCode.PACKAGE_MISMATCH,
      `plans.json holds a ${plan?.format} v${plan?.version} plan; this page reads ${PLAN_FORMAT} v${PLAN_VERSION}.`);
  }
  // A plan of several streams (docs/plan.md "Streams"): each stream has its own frame index and reset.
  const streams = plan.streams ?? 1;
  if (!Number.isInteger(streams) || streams < 1) {
    throw new SttError(ErrorCode.PACKAGE_MISMATCH,
      `plans.json holds a plan for ${JSON.stringify(plan.streams)} streams: not a positive integer. Rebuild the ` +
      'site (kyutai-stt export-web).');
  }
}

// ---- kernels ------------------------------------------------------------------------------------------------

// Fetches kernels/<name>.wgsl relative to kernelsUrl (used as is: Chrome's Tint needs the `enable subgroups;`
// directive that the native host strips for Naga).
export function kernelFetcher(kernelsUrl) {
  const base = new URL(kernelsUrl, globalThis.location?.href);
  const cache = new Map();
  return (name) => {
    if (!cache.has(name)) {
      cache.set(name, fetch(new URL(`${name}.wgsl`, base)).then(async (response) => {
        if (!response.ok) throw new SttError(ErrorCode.DOWNLOAD, `kernel ${name}.wgsl: HTTP ${response.status}`);
        return response.text();
      }));
    }
    return cache.get(name);
  };
}

// Override constants as WebGPU takes them: numbers only (plans hold JSON booleans for bool overrides).
export function pipelineConstants(constants) {
  return Object.fromEntries(Object.entries(constants).map(([k, v]) => [k, typeof v === 'boolean' ? Number(v) : v]));
}

// Throws an SttError whose `kernel` names the kernel file where the pipeline does not compile.
export async function createPipeline(device, source, {name, kernel, constants = {}, entry = 'main'}) {
  // A module that does not compile is reported by the pipeline's rejection below, not as an uncaptured error (which
  // the worker would pass to the page although it falls back to the portable kernels: worker.js load).
  device.pushErrorScope('validation');
  const module = device.createShaderModule({label: kernel, code: source});
  const moduleError = device.popErrorScope();
  try {
    return await device.createComputePipelineAsync({
      label: name ?? kernel, layout: 'auto',
      compute: {module, entryPoint: entry, constants: pipelineConstants(constants)},
    });
  } catch (error) {
    const info = await module.getCompilationInfo();
    const messages = info.messages.filter((m) => m.type === 'error')
      .map((m) => `${kernel}.wgsl:${m.lineNum}:${m.linePos}: ${m.message}`);
    const failure = new SttError(ErrorCode.GPU, `kernel ${kernel} (${name}) does not compile on this GPU: ` +
      `${messages.join('; ') || error.message}`);
    failure.kernel = kernel;
    throw failure;
  } finally {
    await moduleError;
  }
}

// ---- the plan interpreter -----------------------------------------------------------------------------------

// A step field's value at a stream's frame (engine/plan.py StepField.value): a stream sitting the frame out gets
// the field's `idle` value where it has one (the "active" flag), else the value at its frame, which holds.
export function stepValue(field, frame, active = true) {
  if (!active && field.idle !== null && field.idle !== undefined) return field.idle;
  const v = frame * field.scale + field.offset;
  return field.modulo ? v % field.modulo : v;
}

export class PlanRuntime {
  // Buffers, compiled pipelines and bind groups, reset; the weights still to upload (uploadShard).
  // loadKernel(name) -> Promise<WGSL text>; onProgress({phase: 'compile', done, total}).
  static async create(device, plan, {loadKernel, onProgress, readbackDepth}) {
    const runtime = new PlanRuntime(device, plan, {readbackDepth});
    await runtime.compile(loadKernel, onProgress);
    return runtime;
  }

  // Creates the buffers (so weights can be uploaded while compile() runs).
  // readbackDepth: frames in flight (plans.json host.readback_depth).
  constructor(device, plan, {readbackDepth}) {
    checkPlanFormat(plan);
    this.device = device;
    this.plan = plan;
    this.frame = 0;
    device.pushErrorScope('out-of-memory');
    this.buffers = new Map(plan.buffers.map((b) => [b.name, this._createBuffer(b)]));
    this._memoryCheck = device.popErrorScope();
    for (const b of plan.buffers) {
      if (b.kind === 'const') {
        const values = b.dtype === 'u32' ? new Uint32Array(b.values) : new Float32Array(b.values);
        device.queue.writeBuffer(this.buffers.get(b.name), 0, values);
      }
    }
    this._weightsPending = new Set(plan.buffers.flatMap((b) => b.sources.map((s) => s.stream)));
    this._staging = Array.from({length: readbackDepth}, () => Object.fromEntries(
      Object.entries(plan.outputs).map(([role, name]) => [role, device.createBuffer({
        label: `staging ${role}`, size: this.buffers.get(name).size,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      })])));
    this._timing = this._createTiming(readbackDepth);
    this._slots = new Array(readbackDepth).fill(Promise.resolve());   // readback of the frame using each slot
    this._pending = [];                                                // result promises not yet drained
    this._chain = Promise.resolve();                                   // submissions, in call order
    this.streams = plan.streams ?? 1;
    this.streamFrames = new Array(this.streams).fill(0);    // each stream's frame index, since its own reset
    // Field-major: field f of stream s at word f * streams + s (docs/plan.md "Streams").
    this._stepWords = new Uint32Array(plan.step_fields.length * this.streams);
  }

  // With timestamp queries and plan stages: a begin/end timestamp per stage and slot, resolved into a buffer and
  // read back with the outputs (result.stageMs). Without: null, and the frame is one compute pass.
  _createTiming(depth) {
    const stages = this.plan.stages ?? [];
    if (!stages.length || !this.device.features.has('timestamp-query')) return null;
    const perSlot = 2 * stages.length;
    const bytes = 8 * perSlot;              // one u64 per timestamp
    const slotBytes = Math.ceil(bytes / QUERY_RESOLVE_ALIGN) * QUERY_RESOLVE_ALIGN;
    return {
      stages, perSlot, slotBytes,
      querySet: this.device.createQuerySet({type: 'timestamp', count: perSlot * depth}),
      resolve: this.device.createBuffer({label: 'timestamps', size: slotBytes * depth,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC}),
      staging: Array.from({length: depth}, () => this.device.createBuffer({label: 'staging timestamps', size: bytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST})),
    };
  }

  _createBuffer(b) {
    let usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    let size = b.size;
    if (b.kind === 'step') {
      usage |= GPUBufferUsage.UNIFORM;
      size = Math.ceil(size / UNIFORM_ALIGN) * UNIFORM_ALIGN;
    }
    return this.device.createBuffer({label: b.name, size, usage});
  }

  async compile(loadKernel, onProgress = () => {}) {
    const memoryError = await this._memoryCheck;
    if (memoryError) {
      throw new SttError(ErrorCode.ADAPTER_LIMITS, `Not enough GPU memory for the model: ${memoryError.message}`);
    }
    let done = 0;
    const total = this.plan.pipelines.length;
    const pipelines = await Promise.all(this.plan.pipelines.map(async (p) => {
      const pipeline = await createPipeline(this.device, await loadKernel(p.kernel), p);
      onProgress({phase: 'compile', done: ++done, total});
      return [p.name, pipeline];
    }));
    const byName = new Map(pipelines);
    this.device.pushErrorScope('validation');
    this._commands = this.plan.dispatches.map((d) => {
      const pipeline = byName.get(d.pipeline);
      const entries = Object.entries(d.bindings).map(([binding, name]) => (
        {binding: Number(binding), resource: {buffer: this.buffers.get(name)}}));
      const group = this.device.createBindGroup({label: d.label, layout: pipeline.getBindGroupLayout(0), entries});
      return [pipeline, group, d.workgroups];
    });
    const error = await this.device.popErrorScope();
    if (error) throw new SttError(ErrorCode.GPU, `the plan's bind groups are invalid: ${error.message}`);
    await this.reset();
  }

  // Where each package stream of a shard file goes: [{stream, buffer, bufferOffset, fileOffset, nbytes}] by file.
  weightUploads(manifest) {
    const byFile = new Map();
    for (const b of this.plan.buffers) {
      for (const source of b.sources) {
        const dot = source.stream.lastIndexOf('.');
        const stream = manifest.tensors[source.stream.slice(0, dot)]?.streams?.[source.stream.slice(dot + 1)];
        if (!stream) {
          throw new SttError(ErrorCode.PACKAGE_MISMATCH, `the plan needs stream ${source.stream}, ` +
            'which this model package lacks');
        }
        if (!byFile.has(stream.file)) byFile.set(stream.file, []);
        byFile.get(stream.file).push({stream: source.stream, buffer: this.buffers.get(b.name),
          bufferOffset: source.offset, fileOffset: stream.offset, nbytes: stream.nbytes});
      }
    }
    return byFile;
  }

  // Write the streams that live in one shard file (its bytes as an ArrayBuffer) into their weight buffers.
  uploadShard(uploads, bytes) {
    for (const u of uploads ?? []) {
      if (u.fileOffset + u.nbytes > bytes.byteLength) {
        throw new SttError(ErrorCode.INTEGRITY, `stream ${u.stream} runs past the end of its file`);
      }
      this.device.queue.writeBuffer(u.buffer, u.bufferOffset, bytes, u.fileOffset, u.nbytes);
      this._weightsPending.delete(u.stream);
    }
  }

  checkWeightsComplete() {
    if (this._weightsPending.size) {
      throw new SttError(ErrorCode.PACKAGE_MISMATCH, `${this._weightsPending.size} weight streams were never ` +
        `uploaded (first: ${[...this._weightsPending][0]})`);
    }
  }

  // A new stream: wait for frames in flight, refill the state buffers, frame index back to firstFrame.
  async reset(firstFrame = 0) {
    await this.drain();
    this._refillState(null);
    this.frame = firstFrame;
    this.streamFrames.fill(firstFrame);
  }

  // Start stream `stream` anew while the others go on: its part of every state buffer refilled, queued after the
  // frames submitted so far and before the next; its frame index back to firstFrame (as Engine.reset_stream).
  resetStream(stream, firstFrame = 0) {
    this._checkStream(stream);
    return this._queue(() => {
      this._refillState(stream);
      this.streamFrames[stream] = firstFrame;
    });
  }

  // Every state buffer (or stream `stream`'s part) back to its reset_fill: zero fills cleared on the GPU (KV rings:
  // no copy from here), the others (a few words: start tokens) written (as Engine._refill_state).
  _refillState(stream) {
    const encoder = this.device.createCommandEncoder();
    for (const b of this.plan.buffers.filter((buffer) => buffer.kind === 'state')) {
      const part = stream === null ? b.size : b.size / this.streams;
      const offset = stream === null ? 0 : stream * part;
      if (b.reset_fill === 0) {
        encoder.clearBuffer(this.buffers.get(b.name), offset, part);
      } else {
        this.device.queue.writeBuffer(this.buffers.get(b.name), offset, new Uint32Array(part / 4).fill(b.reset_fill));
      }
    }
    this.device.queue.submit([encoder.finish()]);
  }

  // Write input `role` before the next frame: the whole buffer, or stream `stream`'s part (as Engine.write_input).
  writeInput(role, data, stream = null) {
    return this._queue(this._inputWrite(role, data, stream));
  }

  // The write of input `role` (all of it, or stream `stream`'s part), checked now, to run when called.
  _inputWrite(role, data, stream = null) {
    const name = this.plan.inputs[role];
    if (!name) throw new Error(`the plan has no input "${role}"`);
    if (stream !== null) this._checkStream(stream);
    const buffer = this.buffers.get(name);
    const room = stream === null ? buffer.size : buffer.size / this.streams;
    if (data.byteLength > room) throw new Error(`input ${role}: ${data.byteLength} bytes for ${room}`);
    return () => this.device.queue.writeBuffer(buffer, (stream ?? 0) * room, data);
  }

  _checkStream(stream) {
    if (!Number.isInteger(stream) || stream < 0 || stream >= this.streams) {
      throw new Error(`stream ${stream} of a plan of ${this.streams}`);
    }
  }

  // Runs `work` in submission order (after the frames submitted so far, before the next).
  _queue(work) {
    const next = this._chain.then(work);
    this._chain = next.catch(() => {});
    return next;
  }

  // Run one frame. inputs: {role: typed array} (e.g. {pcm: Float32Array(1920)}), not modified until this resolves.
  // Resolves, once the frame is submitted, to {frame, result}: result is a Promise of {frame, streamFrames,
  // outputs: {role: Uint32Array}} (raw words, every stream's; the caller views them; streamFrames: each stream's
  // frame index in this submission). Calls are queued: call it again without awaiting.
  // active: per stream, whether it takes this frame (as Engine.submit): a stream sitting it out keeps its state and
  // frame index; a frame no stream takes is not submitted (resolves to null).
  submit(inputs = {}, {active = null} = {}) {
    const flags = active ? active.map(Boolean) : new Array(this.streams).fill(true);
    if (flags.length !== this.streams) throw new Error(`${flags.length} active flags for a plan of ${this.streams} streams`);
    if (!flags.every(Boolean) && !this.plan.step_fields.some((f) => f.idle !== null && f.idle !== undefined)) {
      throw new Error(`plan ${this.plan.name} has no "active" step field: its streams cannot sit a frame out`);
    }
    return this._queue(() => (flags.some(Boolean) ? this._submit(inputs, flags) : null));
  }

  async _submit(inputs, active) {
    const frame = this.frame;
    const slot = frame % this._staging.length;
    await this._slots[slot];          // frame - depth's readback must be done with this staging buffer
    const queue = this.device.queue;
    const streamFrames = [...this.streamFrames];
    this.plan.step_fields.forEach((f, i) => {
      streamFrames.forEach((n, s) => { this._stepWords[i * this.streams + s] = stepValue(f, n, active[s]); });
    });
    queue.writeBuffer(this.buffers.get(this.plan.step_buffer), 0, this._stepWords);
    for (const [role, data] of Object.entries(inputs)) this._inputWrite(role, data)();
    const encoder = this.device.createCommandEncoder();
    const timing = this._timing;
    if (timing) {
      const first = slot * timing.perSlot;
      timing.stages.forEach((stage, i) => {
        const end = timing.stages[i + 1]?.first ?? this._commands.length;
        this._record(encoder.beginComputePass({timestampWrites: {querySet: timing.querySet,
          beginningOfPassWriteIndex: first + 2 * i, endOfPassWriteIndex: first + 2 * i + 1}}), stage.first, end);
      });
      encoder.resolveQuerySet(timing.querySet, first, timing.perSlot, timing.resolve, slot * timing.slotBytes);
      encoder.copyBufferToBuffer(timing.resolve, slot * timing.slotBytes, timing.staging[slot], 0, 8 * timing.perSlot);
    } else {
      this._record(encoder.beginComputePass(), 0, this._commands.length);
    }
    const staging = this._staging[slot];
    for (const [role, name] of Object.entries(this.plan.outputs)) {
      encoder.copyBufferToBuffer(this.buffers.get(name), 0, staging[role], 0, staging[role].size);
    }
    queue.submit([encoder.finish()]);
    this.frame = frame + 1;
    this.streamFrames = this.streamFrames.map((n, s) => n + (active[s] ? 1 : 0));
    const result = this._readback(frame, streamFrames, staging, timing?.staging[slot], active);
    this._slots[slot] = result.catch(() => {});
    this._pending.push(result);
    result.finally(() => { this._pending.splice(this._pending.indexOf(result), 1); }).catch(() => {});
    return {frame, result};
  }

  _record(pass, first, end) {
    for (const [pipeline, group, [x, y, z]] of this._commands.slice(first, end)) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(x, y, z);
    }
    pass.end();
  }

  // {frame, streamFrames, active, outputs: {role: Uint32Array}, stageMs: {stage: GPU ms} | null}
  async _readback(frame, streamFrames, staging, timestamps, active) {
    const outputs = {};
    const buffers = Object.entries(staging);
    await Promise.all([...buffers.map(([, buffer]) => buffer.mapAsync(GPUMapMode.READ)),
      timestamps?.mapAsync(GPUMapMode.READ)]);
    for (const [role, buffer] of buffers) {
      outputs[role] = new Uint32Array(buffer.getMappedRange().slice(0));
      buffer.unmap();
    }
    let stageMs = null;
    if (timestamps) {
      const ns = new BigUint64Array(timestamps.getMappedRange().slice(0));
      stageMs = Object.fromEntries(this._timing.stages.map((stage, i) =>
        [stage.name, Number(ns[2 * i + 1] - ns[2 * i]) / 1e6]));
      timestamps.unmap();
    }
    return {frame, streamFrames, active, outputs, stageMs};
  }

  // One throwaway frame of zeros (the first dispatch of each pipeline is slower on many drivers), then reset.
  async warmUp() {
    const inputs = Object.fromEntries(Object.entries(this.plan.inputs).map(
      ([role, name]) => [role, new Uint8Array(this.buffers.get(name).size)]));
    await this.submit(inputs);
    await this.reset();
  }

  // Wait for every frame submitted (or queued) so far; returns their results in frame order.
  async drain() {
    await this._chain;
    return Promise.all([...this._pending]);
  }

  // Debugging/tests: a buffer's current contents as u32 words (waits for the GPU).
  async read(name) {
    const source = this.buffers.get(name);
    const usage = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
    const copy = this.device.createBuffer({size: source.size, usage});
    const encoder = this.device.createCommandEncoder();
    encoder.copyBufferToBuffer(source, 0, copy, 0, source.size);
    this.device.queue.submit([encoder.finish()]);
    await copy.mapAsync(GPUMapMode.READ);
    const words = new Uint32Array(copy.getMappedRange().slice(0));
    copy.destroy();
    return words;
  }

  // Benchmarks: GPU milliseconds of each of the plan's dispatches, in plan order, the mean of `repeats` frames with
  // each dispatch in a compute pass of its own (so they add up to more than a frame: a pass's overhead each), at the
  // step values of the last frame submitted; state buffers advance, the frame index does not (the native
  // Engine.dispatch_times). Needs the timestamp-query feature.
  async dispatchTimes(repeats = 3) {
    if (!this.device.features.has('timestamp-query')) throw new Error('dispatch times need the timestamp-query feature');
    const count = this._commands.length;
    if (2 * count > MAX_QUERIES) throw new Error(`${count} dispatches: more than a query set times`);
    const frames = Math.max(1, Math.min(repeats, Math.floor(MAX_QUERIES / (2 * count))));
    return this._queue(async () => {
      const queries = 2 * count * frames;
      const querySet = this.device.createQuerySet({type: 'timestamp', count: queries});
      const resolve = this.device.createBuffer({size: 8 * queries,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC});
      const copy = this.device.createBuffer({size: 8 * queries, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST});
      const encoder = this.device.createCommandEncoder();
      for (let at = 0; at < queries; at += 2) {
        const i = (at / 2) % count;
        this._record(encoder.beginComputePass({timestampWrites: {querySet, beginningOfPassWriteIndex: at,
          endOfPassWriteIndex: at + 1}}), i, i + 1);
      }
      encoder.resolveQuerySet(querySet, 0, queries, resolve, 0);
      encoder.copyBufferToBuffer(resolve, 0, copy, 0, 8 * queries);
      this.device.queue.submit([encoder.finish()]);
      await copy.mapAsync(GPUMapMode.READ);
      const ns = new BigUint64Array(copy.getMappedRange().slice(0));
      const ms = new Array(count).fill(0);
      for (let at = 0; at < queries; at += 2) ms[(at / 2) % count] += Number(ns[at + 1] - ns[at]) / 1e6 / frames;
      copy.unmap();
      [querySet, resolve, copy].forEach((o) => o.destroy());
      return ms;
    });
  }

  destroy() {
    this.device.destroy();
  }
}
