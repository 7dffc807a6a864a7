// TypeScript declarations of the embeddable client (stt-client.js) and its events (protocol.js FromWorker).
// Checked by tests/web/test_npm.py with `tsc --strict` against a page that uses every part of it.

/** Every failure a user can meet: what happened and what to do about it. */
export declare const ErrorCode: Readonly<{
  NO_WEBGPU: 'no-webgpu';
  ADAPTER_LIMITS: 'adapter-limits';
  MIC_DENIED: 'mic-denied';
  MIC_ABSENT: 'mic-absent';
  DOWNLOAD: 'download';
  INTEGRITY: 'integrity';
  QUOTA: 'quota';
  DEVICE_LOST: 'device-lost';
  PACKAGE_MISMATCH: 'package-mismatch';
  AUDIO_DECODE: 'audio-decode';
  PROMPT: 'prompt';
  GPU: 'gpu';
  INTERNAL: 'internal';
}>;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export declare class SttError extends Error {
  constructor(code: ErrorCodeValue, message: string, fix?: string);
  readonly name: 'SttError';
  code: ErrorCodeValue;
  /** What the user can do about it, in a sentence. */
  fix: string;
}

export interface SttClientOptions {
  /** Where the site lives (default: the directory of stt-client.js). The URLs below are relative to it. */
  baseUrl?: string | URL;
  /** The model package directory (manifest.json + shards). Default 'model/'. */
  modelUrl?: string;
  /** plans.json, written by `kyutai-stt export-web` for that very package. Default 'plans.json'. */
  plansUrl?: string;
  /** The WGSL kernels (shipped in this package). Default 'kernels/'. */
  kernelsUrl?: string;
}

export interface DecoderOptions {
  /** End of turn when the semantic VAD's no-voice probability exceeds this (default 0.5). */
  eot_threshold?: number;
  [option: string]: unknown;
}

/** Experimental (the official prompting script's method); the model is very sensitive to the prompt. */
export interface Prompt {
  /** A spelling the model must write first (e.g. a name: "Loonah"); at most 1000 characters and the plan's room
   *  in tokens (128). */
  text?: string;
  /** A recording fed before each stream (e.g. someone saying that name): 24 kHz mono samples, or a file the browser
   *  decodes; at most 30 s. Its words are hidden; times count from the real audio. */
  audio?: Float32Array | Blob | ArrayBuffer | null;
}

export interface LoadOptions {
  /** Force a kernel variant instead of the one chosen from the adapter. */
  variant?: 'gpu' | 'gpu-subgroup' | 'gpu-int8' | 'gpu-int8-subgroup' | 'gpu-f16' | 'cpu';
  /** Seconds of silence fed before each stream (default: the model's, at least 1: EngineInfo.silencePrefix). */
  silencePrefix?: number;
  decoder?: DecoderOptions;
  /** Download attempts per file after the first (default 3), and the first backoff in ms (default 1000). */
  retries?: number;
  backoffMs?: number;
  /** Live text at most this many seconds behind on a device too slow for real time: older audio is dropped
   *  (default 3; Infinity keeps everything and lets the text fall behind). */
  maxBacklogSeconds?: number;
  /** Tests only: every frame this many ms slower (an artificially slow device). */
  testFrameDelayMs?: number;
  /** Tests only: the device's memory in GiB, instead of navigator.deviceMemory (a phone's, say). */
  testDeviceMemoryGiB?: number;
  /** A prompt for every stream (setPrompt). */
  prompt?: Prompt | null;
}

/** Which model runs (plans.json's stream settings, from the package's config). */
export interface ModelInfo {
  /** e.g. "Kyutai STT 2.6B", "Kyutai STT 1B", or "Kyutai STT (2 layers)" for a model of another shape. */
  name: string;
  /** e.g. "English", "English and French"; null when the vocabulary is not one of the official ones. */
  languages: string | null;
  parameters: number;
  layers: number;
  text_card: number;
  /** How far the text lags the speech (the config's audio_delay_seconds). */
  delay_seconds: number;
}

export interface AdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallback: boolean;
  subgroupMinSize: number;
  subgroupMaxSize: number;
  features: string[];
}

export interface EngineInfo {
  adapter: AdapterSummary;
  variant: string;
  /** Set when the portable variant replaced the one the rules chose, whose kernels did not compile on this GPU. */
  fallback: null | {from: string; reason: string};
  package: {quant: string; variant: string; bytes: number; sha256: string; synthetic: unknown};
  plan: {dispatches: number; pipelines: number};
  model: ModelInfo;
  /** Whether the model has the semantic VAD: without it no 'endOfTurn' event ever comes (the 2.6B family). */
  endOfTurn: boolean;
  /** The text lags the audio by this many 80 ms frames; a flush feeds this many + 2 frames of silence. */
  delaySteps: number;
  /** Seconds of silence fed before each stream. */
  silencePrefix: number;
  timings: {totalMs: number; deviceMs: number; downloadMs: number; compileMs: number; warmUpMs: number;
    cached: boolean};
}

export interface Word {
  text: string;
  /** Seconds of the stream's audio. */
  start: number;
  end: number;
}

export type Progress =
  | {phase: 'download'; loaded: number; total: number; file: string; cached: boolean}
  | {phase: 'compile'; done: number; total: number}
  | {phase: 'warmup'}
  | {phase: 'fallback'; from: string; to: string; reason: string};

export interface Stats {
  frames: number;
  msPerFrame: number;
  /** GPU ms per frame of each plan stage (LM, Mimi), null without timestamp queries. */
  stageMs: Record<string, number> | null;
  realTimeFactor: number;
  framesBehind: number;
  audioSeconds: number;
  /** Live audio skipped so far to keep the text within maxBacklogSeconds. */
  droppedSeconds: number;
  /** dBFS RMS of the audio since the last report (null if none). */
  level: number | null;
}

export interface Pace {
  realTimeFactor: number;
  msPerFrame: number;
  /** false: this device cannot transcribe live audio in real time (show the user). */
  keepsUp: boolean;
  /** Results measured; 0 means no frame finished yet and the figures are lower bounds (lowerBound). */
  frames: number;
  lowerBound: boolean;
  maxBacklogSeconds: number;
}

/** The events of SttClient.on(name, fn), by name. */
export interface SttEvents {
  word: Word;
  partial: {text: string};
  endOfTurn: {time: number; probability: number};
  step: {frame: number; time: number; token: number; vad: number[]};
  stats: Stats;
  pace: Pace;
  error: SttError;
  progress: Progress;
  listening: Record<string, never>;
  ready: EngineInfo;
  transcribeProgress: {id: number; done: number; total: number};
}

export interface Diagnostics {
  time: string;
  userAgent: string;
  secureContext: boolean;
  crossOriginIsolated: boolean;
  webgpu: string;
  adapter: null | string | {
    info: Record<string, string | number | boolean>;
    summary: AdapterSummary;
    /** The variant plans.json's rules give this adapter (null without a plans.json URL). */
    variant: string | null;
    features: string[];
    limits: Record<string, number>;
  };
  engine: null | Pick<EngineInfo, 'variant' | 'fallback' | 'package' | 'plan' | 'timings'>;
}

export declare class SttClient extends EventTarget {
  constructor(options?: SttClientOptions);
  readonly urls: {modelUrl: string; plansUrl: string; kernelsUrl: string};
  /** The engine's info once loaded, else null. */
  info: EngineInfo | null;
  /** Listen to an event; returns a function that removes the listener. */
  on<K extends keyof SttEvents>(name: K, fn: (detail: SttEvents[K]) => void): () => void;
  /** Download (or take from the browser's cache), compile and warm up the model. */
  load(options?: LoadOptions, onProgress?: ((progress: Progress) => void) | null): Promise<EngineInfo>;
  /** Open the microphone and stream it: events 'word', 'partial', 'endOfTurn', 'stats', 'pace'. */
  start(options?: {audio?: MediaTrackConstraints}): Promise<void>;
  /** Stop the microphone; resolves once the last words were released. */
  stop(): Promise<{stats: Stats | null}>;
  /** Push 24 kHz mono samples into the live stream (a custom audio source). The buffer is transferred. */
  pushAudio(pcm: Float32Array): Promise<null>;
  flush(): Promise<{stats: Stats | null}>;
  reset(): Promise<null>;
  /** Steer every later stream with a prompt ({} or null: none); drops the current stream. An unusable prompt
   *  rejects with an SttError of code 'prompt'. */
  setPrompt(prompt?: Prompt | null): Promise<{ids: number; leadInSeconds: number}>;
  /** Transcribe a recording (any format the browser decodes), faster than real time where the GPU allows. */
  transcribeFile(file: Blob | ArrayBuffer, onProgress?: ((progress: {done: number; total: number}) => void) | null):
    Promise<Word[]>;
  transcribePcm(pcm: Float32Array, onProgress?: ((progress: {done: number; total: number}) => void) | null):
    Promise<{words: Word[]; stats: Stats | null}>;
  /** Browser, adapter, limits, features, chosen variant: for bug reports. Works before load() too. */
  diagnostics(): Promise<Diagnostics>;
  /** Delete the cached model files (the next load downloads them again). */
  clearCache(): Promise<void>;
  destroy(): void;
}

/** Decode a recording with the browser's decoders into 24 kHz mono samples. */
export declare function decodeToMono24k(bytes: ArrayBuffer, name?: string): Promise<Float32Array>;

/** A clear error when this browser has no WebGPU at all, else null. */
export declare function webGpuProblem(): SttError | null;
