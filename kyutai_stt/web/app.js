// The page: loads the engine (stt-client.js), shows progress, the live transcript, file transcription, downloads,
// statistics and every failure as a message with what to do. URL parameters:
//   model=URL    the package directory (default: model/ next to this page, as `serve` and `export-web` lay it out)
//   plans=URL    plans.json (default: next to this page)
//   silence=S    seconds of silence fed before each stream (default: the model's, at least 1 s)
//   eot=P        end-of-turn threshold on the semantic VAD's no-voice probability (default 0.5; models without the
//                VAD, the 2.6B family, have no end of turn: the page says so)
//   backlog=S    live text at most S seconds behind on a device too slow for real time (default 3; pacing.js)
//   test-frame-delay=MS   tests only: every frame MS ms slower (an artificially slow device)
//   test-device-memory=GIB  tests only: the device's memory in GiB, instead of navigator.deviceMemory

import {SttClient, webGpuProblem} from './stt-client.js';
import {FORMATS} from './formats.js';
import {DEFAULT_MAX_BACKLOG_SECONDS} from './pacing.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const client = new SttClient({modelUrl: params.get('model') ?? 'model/', plansUrl: params.get('plans') ?? 'plans.json'});
// What the downloads contain: the words and ends of turn shown in the transcript.
const transcript = {words: [], endOfTurns: []};
let info = null;
let lastStats = null;
let lastError = null;
let turnTimer = null;
const TURN_FLASH_MS = 1500;    // how long the end-of-turn indicator stays lit
const STAGE_NAMES = {lm: 'LM', mimi: 'Mimi'};

function setState(state) {
  document.body.dataset.state = state;
  const ready = state === 'ready' || state === 'listening';
  $('mic').disabled = !ready;
  $('file').disabled = state !== 'ready';
  $('file-label').setAttribute('aria-disabled', String(state !== 'ready'));
  $('prompt-apply').disabled = state !== 'ready';
  $('prompt-clear').disabled = state !== 'ready';
}

function showError(error) {
  lastError = {code: error.code ?? 'internal', message: error.message ?? String(error)};
  $('error-message').textContent = error.message ?? String(error);
  $('error-fix').textContent = error.fix ?? '';
  $('error').hidden = false;
  $('error').dataset.code = error.code ?? 'internal';
  setState('error');
}

function megabytes(bytes) {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function onProgress(p) {
  if (p.phase === 'download') {
    $('progress').max = p.total;
    $('progress').value = p.loaded;
    $('progress-text').textContent = `Model: ${megabytes(p.loaded)} of ${megabytes(p.total)}` +
      (p.cached ? ' (from this browser\'s cache)' : '');
  } else if (p.phase === 'compile') {
    $('progress-text').textContent = `Compiling GPU kernels ${p.done}/${p.total}…`;
  } else if (p.phase === 'warmup') {
    $('progress-text').textContent = 'Warming up…';
  } else if (p.phase === 'fallback') {
    $('progress-text').textContent = `The ${p.from} kernels do not compile on this GPU: loading the portable ones…`;
  }
}

function loadOptions() {
  const options = {};
  if (params.has('silence')) options.silencePrefix = Number(params.get('silence'));
  if (params.has('eot')) options.decoder = {eot_threshold: Number(params.get('eot'))};
  if (params.has('backlog')) options.maxBacklogSeconds = Number(params.get('backlog'));
  if (params.has('test-frame-delay')) options.testFrameDelayMs = Number(params.get('test-frame-delay'));
  if (params.has('test-device-memory')) options.testDeviceMemoryGiB = Number(params.get('test-device-memory'));
  return options;
}

async function load() {
  $('error').hidden = true;
  const problem = webGpuProblem();
  if (problem) return showError(problem);
  setState('loading');
  try {
    info = await client.load(loadOptions(), onProgress);
  } catch (error) {
    return showError(error);
  }
  const t = info.timings;
  $('progress-text').textContent = `Model ready in ${(t.totalMs / 1000).toFixed(1)} s` +
    (t.cached ? ' (cached)' : '') + ` on ${[info.adapter.vendor, info.adapter.architecture, info.adapter.description].filter(Boolean).join(' ') || 'this GPU'} (${info.variant} kernels)` +
    (info.fallback ? `: the faster ${info.fallback.from} kernels do not compile here (${info.fallback.reason}).` : '.');
  $('synthetic').hidden = !info.package.synthetic;
  $('model').textContent = describeModel(info.model);
  // Without the semantic VAD no end of turn ever comes: no indicator, and a note saying why.
  $('turn').hidden = !info.endOfTurn;
  $('no-eot').hidden = info.endOfTurn;
  setState('ready');
}

// "Running Kyutai STT 2.6B (English): 2.62 billion parameters, 48 layers, text 2.5 s behind the speech."
function describeModel({name, parameters, layers, delay_seconds: delay, languages}) {
  const count = parameters >= 1e9 ? `${(parameters / 1e9).toFixed(2)} billion` : `${(parameters / 1e6).toFixed(1)} million`;
  return `Running ${name}${languages ? ` (${languages})` : ''}: ${count} parameters, ${layers} layers, text ` +
    `${delay} s behind the speech.`;
}

// ---- transcript ------------------------------------------------------------------------------------------------
function clearTranscript() {
  transcript.words = [];
  transcript.endOfTurns = [];
  $('final').replaceChildren();
  $('partial').textContent = '';
  updateDownloads();
}

function addWord({text, start, end}) {
  transcript.words.push({text, start, end});
  const span = document.createElement('span');
  span.className = 'word';
  span.textContent = text;
  span.title = `${start.toFixed(2)} – ${end.toFixed(2)} s`;
  $('final').append(span, ' ');
  updateDownloads();
}

function addEndOfTurn({time}) {
  transcript.endOfTurns.push(time);
  const mark = document.createElement('span');
  mark.className = 'eot';
  mark.textContent = 'end of turn';
  mark.title = `${time.toFixed(2)} s`;
  $('final').append(mark, document.createElement('br'));
  $('turn').classList.add('on');
  clearTimeout(turnTimer);
  turnTimer = setTimeout(() => $('turn').classList.remove('on'), TURN_FLASH_MS);
}

function updateDownloads() {
  $('hint').hidden = transcript.words.length > 0 || $('partial').textContent !== '';
  for (const b of document.querySelectorAll('#downloads [data-format]')) b.disabled = !transcript.words.length;
}

function download(format) {
  const {render, mime} = FORMATS[format];
  const blob = new Blob([render(transcript.words, transcript.endOfTurns)], {type: mime});
  const a = Object.assign(document.createElement('a'), {href: URL.createObjectURL(blob), download: `transcript.${format}`});
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 0);
}

client.on('word', addWord);
client.on('endOfTurn', addEndOfTurn);
client.on('partial', ({text}) => { $('partial').textContent = text; updateDownloads(); });
client.on('stats', (s) => {
  lastStats = s;
  const stages = s.stageMs ? ` (GPU: ${Object.entries(s.stageMs).map(([name, ms]) =>
    `${STAGE_NAMES[name] ?? name} ${ms.toFixed(1)} ms`).join(', ')})` : '';
  $('stats').textContent = `${s.msPerFrame.toFixed(1)} ms per 80 ms frame${stages} · real-time factor ` +
    `${s.realTimeFactor.toFixed(2)} · ${s.framesBehind} frames behind · ${info?.variant ?? ''} kernels · ` +
    `${s.audioSeconds.toFixed(1)} s of audio` +
    (s.droppedSeconds ? ` · ${s.droppedSeconds.toFixed(1)} s skipped (too slow for live)` : '');
  if (s.droppedSeconds && $('slow').hidden) showSlow({realTimeFactor: s.realTimeFactor, msPerFrame: s.msPerFrame});
});
client.on('pace', (pace) => { if (!pace.keepsUp) showSlow(pace); });

// A device that cannot keep up with live audio: the figure, what the app does about it, and what the user can do.
function showSlow({realTimeFactor, msPerFrame, lowerBound = false, maxBacklogSeconds}) {
  const backlog = maxBacklogSeconds ?? loadOptions().maxBacklogSeconds ?? DEFAULT_MAX_BACKLOG_SECONDS;
  const more = lowerBound ? 'more than ' : '';
  $('slow-message').textContent = `This device is too slow for live transcription: it needs ${more}` +
    `${Math.round(msPerFrame)} ms for each 80 ms of audio (real-time factor ${more}${realTimeFactor.toFixed(1)}).`;
  $('slow-fix').textContent = (Number.isFinite(backlog)
    ? `To keep the text at most ${backlog} s behind you, audio it cannot process in time is skipped, and the ` +
      'words spoken in it are lost. '
    : 'The text will fall further and further behind you. ') +
    'To transcribe everything, record it and use "Transcribe a file…" (it runs at this device\'s own pace), or use ' +
    'a device with a faster GPU (and close other tabs that use it). A smaller model is not available yet.';
  $('slow').hidden = false;
}
client.on('error', (error) => {
  setState('error');
  showError(error);
});

// ---- controls --------------------------------------------------------------------------------------------------
async function toggleMic() {
  const button = $('mic');
  if (document.body.dataset.state === 'listening') {
    button.disabled = true;
    button.textContent = 'Stopping…';
    try {
      await client.stop();
    } catch (error) {
      showError(error);
    }
    button.classList.remove('listening');
    button.textContent = 'Start microphone';
    if (document.body.dataset.state !== 'error') setState('ready');
    return;
  }
  clearTranscript();
  $('slow').hidden = true;
  try {
    await client.start();
  } catch (error) {
    return showError(error);
  }
  button.classList.add('listening');
  button.textContent = 'Stop';
  setState('listening');
}

async function transcribeFile(file) {
  if (!file || document.body.dataset.state !== 'ready') return;
  clearTranscript();
  setState('busy');
  $('progress-text').textContent = `Transcribing ${file.name}…`;
  const started = performance.now();
  try {
    await client.transcribeFile(file, ({done, total}) => {
      $('progress-text').textContent = `Transcribing ${file.name}: ${Math.round((100 * done) / total)}%`;
    });
  } catch (error) {
    return showError(error);
  }
  const seconds = (performance.now() - started) / 1000;
  $('progress-text').textContent = `Transcribed ${file.name} in ${seconds.toFixed(1)} s.`;
  setState('ready');
}

// The prompt of every later stream (stt-client.js setPrompt); an unusable one is reported next to the field.
async function applyPrompt(clear) {
  const text = clear ? '' : $('prompt-text').value;
  const audio = clear ? null : $('prompt-audio').files[0] ?? null;
  setState('busy');
  try {
    const {ids, leadInSeconds} = await client.setPrompt(text || audio ? {text, audio} : null);
    $('prompt-status').textContent = ids || audio
      ? `Prompt in use: ${ids} text tokens${audio ? `, ${leadInSeconds.toFixed(1)} s fed before each stream` : ''}.`
      : 'No prompt.';
    $('prompt-status').dataset.code = '';
  } catch (error) {
    $('prompt-status').textContent = `${error.message} ${error.fix ?? ''}`;
    $('prompt-status').dataset.code = error.code ?? 'internal';
  }
  if (document.body.dataset.state === 'busy') setState('ready');
}

$('prompt-apply').addEventListener('click', () => applyPrompt(false));
$('prompt-clear').addEventListener('click', () => applyPrompt(true));
$('mic').addEventListener('click', toggleMic);
$('file').addEventListener('change', (e) => transcribeFile(e.target.files[0]));
$('retry').addEventListener('click', load);
$('clear-cache').addEventListener('click', async () => {
  await client.clearCache();
  $('progress-text').textContent = 'Cached model deleted: it will be downloaded again on the next visit.';
});
for (const b of document.querySelectorAll('#downloads [data-format]')) {
  b.addEventListener('click', () => download(b.dataset.format));
}
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  transcribeFile(e.dataTransfer.files[0]);
});

// ---- diagnostics, offline ---------------------------------------------------------------------------------------
async function diagnosticsText() {
  const report = await client.diagnostics();
  const appCaches = globalThis.caches ? (await caches.keys()).filter((n) => n.startsWith('kyutai-stt-app-')) : [];
  report.page = {url: location.href, offline: {serviceWorker: Boolean(navigator.serviceWorker?.controller),
    appCaches}, lastStats, lastError};
  return JSON.stringify(report, null, 2);
}

async function showDiagnostics() {
  $('diagnostics-text').textContent = await diagnosticsText();
}

$('diagnostics').addEventListener('toggle', () => { if ($('diagnostics').open) showDiagnostics(); });
$('copy-diagnostics').addEventListener('click', async () => {
  await showDiagnostics();
  try {
    await navigator.clipboard.writeText($('diagnostics-text').textContent);
    $('copy-status').textContent = 'Copied.';
  } catch {
    getSelection().selectAllChildren($('diagnostics-text'));      // no clipboard access: select it for Ctrl-C
    $('copy-status').textContent = 'Selected: press Ctrl-C (Cmd-C) to copy.';
  }
});

// The app's files are kept for offline use by sw.js (the model by the engine's own cache). Only where the
// browser allows service workers (https or localhost); a failure costs offline use only.
navigator.serviceWorker?.register('sw.js').catch((error) => console.warn(`offline use unavailable: ${error}`));

// For embedding pages and tests: the client, what the transcript holds, the diagnostics report.
window.sttApp = {client, transcript, diagnosticsText};
load();
