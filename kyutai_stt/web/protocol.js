// Messages between the page (stt-client.js) and the inference worker (worker.js). Every message is a plain object
// {type, ...fields}. Requests carry an `id`; the worker answers each with one REPLY {id, result} or {id, error}.
// Events (no id) may come at any time. Errors are {code, message, fix} (errors.js).
// Audio from the microphone does not pass through here: the AudioWorklet posts 1920-sample Float32Array frames
// (and a final {type: 'end'}) straight to the worker over the MessagePort given in START.

// page -> worker (requests)
export const ToWorker = Object.freeze({
  // {modelUrl, plansUrl, kernelsUrl, variant?, silencePrefix?, decoder?, retries?, backoffMs?, maxBacklogSeconds?,
  // testFrameDelayMs? (tests: an artificially slow device), testDeviceMemoryGiB? (tests: a phone's memory)}:
  // fetch plans + manifest (the model's stream settings are plans.stream), pick the plan variant,
  // download/cache the package into GPU buffers, compile, warm up -> {ready info}
  LOAD: 'load',
  // {port}: a MessagePort carrying the AudioWorklet's frames; consume them as a live stream
  START: 'start',
  // stop consuming the port (after its 'end' marker), then FLUSH; -> {stats}
  STOP: 'stop',
  // {pcm: Float32Array}: 24 kHz mono samples appended to the live stream (any length; for custom sources)
  AUDIO: 'audio',
  // feed silence at full speed until the last words are out, release them, start a new stream; -> {stats}
  FLUSH: 'flush',
  // drop the current stream and start a new one (state buffers, decoder, frame counter)
  RESET: 'reset',
  // {pcm: Float32Array}: a whole recording at 24 kHz, processed as fast as the GPU goes; -> {words, stats}
  TRANSCRIBE: 'transcribe',
  // delete the cached model files of every version
  CLEAR_CACHE: 'clearCache',
  // {text?, audio? (Float32Array, 24 kHz mono)}: the prompt of every stream from now on ({}: none; prompt.js);
  // drops the current stream; -> {ids (text prompt tokens), leadInSeconds}
  SET_PROMPT: 'setPrompt',
});

// worker -> page
export const FromWorker = Object.freeze({
  // {id, result} | {id, error}: the answer to a request
  REPLY: 'reply',
  // {phase: 'download', loaded, total, file, cached} | {phase: 'compile', done, total} | {phase: 'warmup'} |
  // {phase: 'fallback', from, to, reason}: a fast path's kernel did not compile, the portable kernels load instead
  PROGRESS: 'progress',
  // {adapter, variant, fallback, timings, package}: sent once a LOAD finished (also its reply); fallback:
  // {from, reason} when the portable variant replaced one whose kernels did not compile, else null
  READY: 'ready',
  // the first audio frame of a live stream arrived from the microphone
  LISTENING: 'listening',
  // {text, start, end}: a final word, times in seconds of the stream's audio
  WORD: 'word',
  // {text}: the words recognised but not yet final (replaces the previous partial)
  PARTIAL: 'partial',
  // {time, probability}: the speaker finished a turn (semantic VAD)
  END_OF_TURN: 'endOfTurn',
  // {frame, time, token, vad}: one engine step's raw output (debugging, tests)
  STEP: 'step',
  // {frames, msPerFrame, stageMs ({lm, mimi}: GPU ms per frame from timestamp queries, null without them),
  // realTimeFactor, framesBehind, audioSeconds, droppedSeconds (live audio skipped to bound the delay: pacing.js),
  // level (dBFS RMS of the audio since the last report, null if none)}: about once a second while audio flows, and
  // after each flush
  STATS: 'stats',
  // {realTimeFactor, msPerFrame, keepsUp, frames, lowerBound, maxBacklogSeconds}: whether this device keeps up
  // with live audio, measured over the first seconds of each live stream (pacing.js)
  PACE: 'pace',
  // {id, done, total}: samples of a TRANSCRIBE recording processed so far
  TRANSCRIBE_PROGRESS: 'transcribeProgress',
  // {error: {code, message, fix}}: a failure outside any request (device lost, a live frame failed)
  ERROR: 'error',
});

// The AudioWorklet <-> page messages on the node's own port (audio-processor.js).
export const ToProcessor = Object.freeze({
  PORT: 'port',   // {port}: where to post frames
  STOP: 'stop',   // post the last partial frame (zero-padded), then {type: 'end'} to the worker, 'stopped' here
});
