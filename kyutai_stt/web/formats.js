// Transcript downloads in the page: text, srt and vtt, by the rules of kyutai_stt/streaming/formats.py (read its docstring;
// a browser test checks both give the same files for the same words). words: [{text, start, end}] in seconds;
// endOfTurns: [time] in seconds.

const PAUSE_S = 0.8;          // a silence longer than this between two words starts a new cue
const MAX_LINE_CHARS = 42;    // characters per subtitle line (the common broadcast limit)
const MAX_LINES = 2;          // lines per cue
const MAX_CUE_S = 5.0;        // the longest a cue may last
const EPS = 1e-6;             // seconds of slack when comparing times with the limits

const clean = (text) => String(text).split(/\s+/).filter(Boolean).join(' ');

function turns(words, endOfTurns) {
  const eots = [...endOfTurns].sort((a, b) => a - b);
  const out = [];
  let current = [];
  let k = 0;
  for (const word of words) {
    let crossed = false;
    while (k < eots.length && eots[k] <= word.start + EPS) { crossed = true; k += 1; }
    if (crossed && current.length) { out.push(current); current = []; }
    current.push(word);
  }
  if (current.length) out.push(current);
  return out;
}

export function toText(words, endOfTurns = []) {
  return turns(words, endOfTurns)
    .map((turn) => turn.map((w) => clean(w.text)).filter(Boolean).join(' ') + '\n').join('');
}

function wrap(texts) {
  const lines = [];
  for (const t of texts) {
    if (lines.length && lines[lines.length - 1].length + 1 + t.length <= MAX_LINE_CHARS) lines[lines.length - 1] += ' ' + t;
    else lines.push(t);
  }
  return lines.length <= MAX_LINES ? lines : null;
}

export function cues(words, endOfTurns = []) {
  const out = [];
  const cue = (group) => {
    const texts = group.map((w) => clean(w.text));
    return {start: group[0].start, end: Math.max(group[0].start, group[group.length - 1].end),
      lines: wrap(texts) ?? [texts.join(' ')]};
  };
  for (const turn of turns(words, endOfTurns)) {
    let group = [];
    for (const word of turn) {
      const text = clean(word.text);
      if (!text) continue;
      if (group.length) {
        const tooLate = word.start - group[group.length - 1].end > PAUSE_S + EPS;
        const tooLong = word.end - group[0].start > MAX_CUE_S + EPS;
        const tooWide = wrap([...group.map((w) => clean(w.text)), text]) === null;
        if (tooLate || tooLong || tooWide) { out.push(cue(group)); group = []; }
      }
      group.push(word);
    }
    if (group.length) out.push(cue(group));
  }
  return out;
}

export function timestamp(seconds, separator) {
  let ms = Math.max(0, Math.round(seconds * 1000));
  const pad = (n, width) => String(n).padStart(width, '0');
  const h = Math.floor(ms / 3600000); ms -= h * 3600000;
  const m = Math.floor(ms / 60000); ms -= m * 60000;
  const s = Math.floor(ms / 1000); ms -= s * 1000;
  return `${pad(h, 2)}:${pad(m, 2)}:${pad(s, 2)}${separator}${pad(ms, 3)}`;
}

export function toSrt(words, endOfTurns = []) {
  return cues(words, endOfTurns).map((c, i) =>
    `${i + 1}\n${timestamp(c.start, ',')} --> ${timestamp(c.end, ',')}\n${c.lines.join('\n')}\n`).join('\n');
}

const escapeVtt = (text) => text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');

export function toVtt(words, endOfTurns = []) {
  const blocks = cues(words, endOfTurns).map((c) =>
    `${timestamp(c.start, '.')} --> ${timestamp(c.end, '.')}\n${c.lines.map(escapeVtt).join('\n')}\n`);
  return ['WEBVTT\n', ...blocks].join('\n');
}

export const FORMATS = {
  txt: {render: toText, mime: 'text/plain'},
  srt: {render: toSrt, mime: 'application/x-subrip'},
  vtt: {render: toVtt, mime: 'text/vtt'},
};
