// The page: loads the engine (stt-client.js), shows progress, the live transcript, file transcription, downloads,
// statistics and every failure as a message with what to do. URL parameters:
//   model=URL    the package directory (default: model/ next to this page, as `serve` and `export-web` lay it out)
//   plans=URL    plans.json (default: next to this page)
//   silence=S    seconds of silence fed before each stream (default: the engine's, 1 s)
//   eot=P        end-of-turn threshold on the semantic VAD's no-voice probability (default 0.5)

import {SttClient, webGpuProblem} from './stt-client.js';
import {FORMATS} from './formats.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const client = new SttClient({modelUrl: params.get('model') ?? 'model/', plansUrl: params.get('plans') ?? 'plans.json'});
// What the downloads contain: the words and ends of turn shown in the transcript.
const transcript = {words: [], endOfTurns: []};
let info = null;
let turnTimer = null;
const TURN_FLASH_MS = 1500;    // how long the end-of-turn indicator stays lit
const STAGE_NAMES = {lm: 'LM', mimi: 'Mimi'};

function setState(state) {
  document.body.dataset.state = state;
  const ready = state === 'ready' || state === 'listening';
  $('mic').disabled = !ready;
  $('file').disabled = state !== 'ready';
  $('file-label').setAttribute('aria-disabled', String(state !== 'ready'));
}

function showError(error) {
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
  }
}

function loadOptions() {
  const options = {};
  if (params.has('silence')) options.silencePrefix = Number(params.get('silence'));
  if (params.has('eot')) options.decoder = {eot_threshold: Number(params.get('eot'))};
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
    (t.cached ? ' (cached)' : '') + ` on ${[info.adapter.vendor, info.adapter.architecture, info.adapter.description].filter(Boolean).join(' ') || 'this GPU'} (${info.variant} kernels).`;
  $('synthetic').hidden = !info.package.synthetic;
  setState('ready');
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
  const stages = s.stageMs ? ` (GPU: ${Object.entries(s.stageMs).map(([name, ms]) =>
    `${STAGE_NAMES[name] ?? name} ${ms.toFixed(1)} ms`).join(', ')})` : '';
  $('stats').textContent = `${s.msPerFrame.toFixed(1)} ms per 80 ms frame${stages} · real-time factor ` +
    `${s.realTimeFactor.toFixed(2)} · ${s.framesBehind} frames behind · ${info?.variant ?? ''} kernels · ` +
    `${s.audioSeconds.toFixed(1)} s of audio`;
});
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

// For embedding pages and tests: the client and what the transcript holds.
window.sttApp = {client, transcript};
load();
