// Loading a model package (docs/weights.md) in the browser: manifest.json, then each GGUF shard, which is
//   - taken from the Cache API when an earlier visit stored it (keyed by URL + SHA-256: a changed file is a new key),
//   - else downloaded with byte-level progress (sizes from the manifest), retried with backoff, SHA-256 checked
//     before it is cached (a corrupt file never enters the cache),
// then handed to onShard(name, ArrayBuffer) one at a time, in manifest order: the caller writes the shard's streams
// to GPU buffers and drops it before the next shard arrives, so at most one shard is held at once.

import {ErrorCode, SttError} from './errors.js';

// Bump the version when the cache layout changes: old caches are then ignored (and removed by clearCache()).
export const CACHE_NAME = 'kyutai-stt-v1';
export const CACHE_PREFIX = 'kyutai-stt-';
// The app's own files (sw.js): not the model, so clearCache() leaves them.
const APP_CACHE_PREFIX = 'kyutai-stt-app-';
export const MANIFEST = 'manifest.json';
export const PACKAGE_FORMAT = 'kyutai-stt-package';
export const PACKAGE_VERSION = 1;
// Download attempts per file after the first, and the first backoff (doubled each time).
export const RETRIES = 3;
export const BACKOFF_MS = 1000;
// A manifest's file names are data, never paths or URLs: one plain name of this form (no '/', '\\', ':', '?', '#',
// '%', no leading dot, no '..'), so that new URL(name, base) always stays inside the package's folder and no
// request goes anywhere else. kyutai_stt/weights/package.py has the same rule; tests/vectors/file_names.json pins both.
export const SAFE_FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const RESERVED_SUFFIX = '.partial';
const SHA256_HEX = /^[0-9a-f]{64}$/;
const MAX_FILE_BYTES = 2 ** 40;
// Free space to keep beyond the download itself (the quota is shared with everything else of this origin).
const QUOTA_MARGIN_BYTES = 16 * 2 ** 20;

export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

// {manifest, sha256 (of the manifest's bytes: the identity plans.json was exported for), url}.
export async function fetchManifest(baseUrl) {
  const url = new URL(MANIFEST, withSlash(baseUrl));
  let response;
  let offline = false;
  try {
    response = await fetch(url, {cache: 'no-cache'});
  } catch (error) {
    // Offline: the copy kept with the shards by the last load (the shards are checked against it as always).
    response = await cachedManifest(url);
    offline = Boolean(response);
    if (!response) throw new SttError(ErrorCode.DOWNLOAD, `could not fetch ${url}: ${error.message}`);
  }
  if (!response.ok) throw new SttError(ErrorCode.DOWNLOAD, `could not fetch ${url}: HTTP ${response.status}`);
  const bytes = await response.arrayBuffer();
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new SttError(ErrorCode.INTEGRITY, `${url} is not valid JSON (${error.message})`);
  }
  if (manifest?.format !== PACKAGE_FORMAT || manifest.format_version !== PACKAGE_VERSION) {
    throw new SttError(ErrorCode.PACKAGE_MISMATCH, `${url} is not a ${PACKAGE_FORMAT} v${PACKAGE_VERSION} manifest`,
      'Convert the model again with this version of kyutai-stt and re-export the site.');
  }
  checkManifestFiles(manifest, url.href);
  if (!offline) await keepManifest(url, bytes);
  return {manifest, sha256: await sha256Hex(bytes), url: url.href};
}

// The manifest lives in the model's cache, next to its shards, under its own URL.
async function cachedManifest(url) {
  return globalThis.caches ? (await caches.open(CACHE_NAME)).match(url.href) : undefined;
}

async function keepManifest(url, bytes) {
  try {
    await (await globalThis.caches?.open(CACHE_NAME))?.put(url.href, new Response(bytes.slice(0),
      {headers: {'Content-Type': 'application/json'}}));
  } catch {
    // No room or no Cache API: only offline use is lost; loadShards reports the quota when it matters.
  }
}

// True for a plain file name a manifest may list (SAFE_FILE_NAME, no '..', not the manifest, not a temporary name).
export function isSafeFileName(name) {
  return typeof name === 'string' && SAFE_FILE_NAME.test(name) && !name.includes('..') &&
    name.toLowerCase() !== MANIFEST && !name.endsWith(RESERVED_SUFFIX);
}

// The manifest's files[] (and the file each tensor stream names), checked before anything is fetched: a name
// that is not a plain file name, a size or hash of the wrong type, a name listed twice: refused, naming the entry.
export function checkManifestFiles(manifest, source = MANIFEST) {
  const refuse = (what) => new SttError(ErrorCode.INTEGRITY, `${source}: ${what}: this model package is not safe ` +
    'to use.', 'Use a package made by kyutai-stt convert, from a host you trust.');
  const files = manifest?.files;
  if (!Array.isArray(files) || files.length === 0) throw refuse("'files' is not a list of files");
  const seen = new Set();
  files.forEach((file, i) => {
    const name = file?.name;
    if (!isSafeFileName(name)) {
      throw refuse(`files[${i}]: ${JSON.stringify(String(name)).slice(0, 140)} is not a plain file name`);
    }
    if (seen.has(name.toLowerCase())) throw refuse(`files[${i}]: ${name} is listed twice`);
    seen.add(name.toLowerCase());
    if (!Number.isSafeInteger(file.bytes) || file.bytes < 1 || file.bytes > MAX_FILE_BYTES) {
      throw refuse(`files[${i}] (${name}): bytes is not a positive whole number`);
    }
    if (typeof file.sha256 !== 'string' || !SHA256_HEX.test(file.sha256)) {
      throw refuse(`files[${i}] (${name}): sha256 is not 64 lowercase hex digits`);
    }
  });
  for (const [tensor, entry] of Object.entries(manifest.tensors ?? {})) {
    for (const [key, stream] of Object.entries(entry?.streams ?? {})) {
      if (!seen.has(String(stream?.file).toLowerCase()) || !isSafeFileName(stream.file)) {
        throw refuse(`tensor ${tensor.slice(0, 100)}: stream ${key.slice(0, 20)} names a file not in 'files'`);
      }
    }
  }
}

// Ask the browser not to evict the model under storage pressure (window only: workers have no persist()).
export async function requestPersistence() {
  try {
    return Boolean(await globalThis.navigator?.storage?.persist?.());
  } catch {
    return false;
  }
}

export async function clearCache() {
  if (!globalThis.caches) return;
  for (const name of await caches.keys()) {
    if (name.startsWith(CACHE_PREFIX) && !name.startsWith(APP_CACHE_PREFIX)) await caches.delete(name);
  }
}

// Load every shard of the package at baseUrl; resolves with {cachedFiles, downloadedFiles, bytes}.
// onShard(name, arrayBuffer): awaited before the next shard is read. onProgress({loaded, total, file, cached}).
export async function loadShards({baseUrl, manifest, onShard, onProgress = () => {}, cacheName = CACHE_NAME,
                                  retries = RETRIES, backoffMs = BACKOFF_MS}) {
  checkManifestFiles(manifest);             // also here: a caller may hand over a manifest it did not fetch
  const base = withSlash(baseUrl);
  const cache = globalThis.caches ? await caches.open(cacheName) : null;   // none outside secure contexts
  const keyOf = (file) => `${new URL(file.name, base).href}?sha256=${file.sha256}`;
  const cached = new Map();
  for (const file of manifest.files) {
    const hit = cache && await cache.match(keyOf(file));
    if (hit) cached.set(file.name, hit);
  }
  const missing = manifest.files.filter((f) => !cached.has(f.name)).reduce((n, f) => n + f.bytes, 0);
  if (missing) await checkQuota(missing);
  if (cache) await dropStaleEntries(cache, manifest, base);

  const total = manifest.files.reduce((n, f) => n + f.bytes, 0);
  let loaded = 0;
  let downloadedFiles = 0;
  let cachedFiles = 0;
  for (const file of manifest.files) {
    let bytes = null;
    const hit = cached.get(file.name);
    if (hit) {
      bytes = await hit.arrayBuffer();
      if (bytes.byteLength !== file.bytes) bytes = null;     // a damaged entry: download it again
    }
    if (bytes) {
      cachedFiles += 1;
      loaded += file.bytes;
      onProgress({loaded, total, file: file.name, cached: true});
    } else {
      const before = loaded;
      bytes = await withRetries(retries, backoffMs, () => {
        loaded = before;
        return downloadVerified(new URL(file.name, base), file, (n) => {
          loaded += n;
          onProgress({loaded, total, file: file.name, cached: false});
        });
      });
      downloadedFiles += 1;
      if (cache) {
        try {
          await cache.put(keyOf(file), new Response(bytes, {headers: {'Content-Type': 'application/octet-stream'}}));
        } catch (error) {
          if (error?.name === 'QuotaExceededError') throw quotaError(`storing ${file.name}`);
          throw error;
        }
      }
    }
    await onShard(file.name, bytes);
    bytes = null;       // the shard's only reference: released before the next one is read
  }
  return {cachedFiles, downloadedFiles, bytes: total};
}

async function downloadVerified(url, file, onBytes) {
  let response;
  try {
    response = await fetch(url, {cache: 'no-store'});      // the Cache API keeps it: no second copy in HTTP cache
  } catch (error) {
    throw retryable(new SttError(ErrorCode.DOWNLOAD, `download of ${file.name} failed: ${error.message}`));
  }
  if (!response.ok) {
    const error = new SttError(ErrorCode.DOWNLOAD, `download of ${file.name} failed: HTTP ${response.status}`);
    throw response.status >= 500 || response.status === 408 || response.status === 429 ? retryable(error) : error;
  }
  const out = new Uint8Array(file.bytes);
  let at = 0;
  const reader = response.body.getReader();
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (error) {
      throw retryable(new SttError(ErrorCode.DOWNLOAD, `download of ${file.name} broke off: ${error.message}`));
    }
    if (chunk.done) break;
    if (at + chunk.value.byteLength > file.bytes) {
      reader.cancel();
      throw corrupt(file, `more than the ${file.bytes} bytes the manifest lists`);
    }
    out.set(chunk.value, at);
    at += chunk.value.byteLength;
    onBytes(chunk.value.byteLength);
  }
  if (at !== file.bytes) throw retryable(corrupt(file, `${at} bytes instead of ${file.bytes} (cut short)`));
  const digest = await sha256Hex(out);
  if (digest !== file.sha256) throw retryable(corrupt(file, `SHA-256 ${digest}, the manifest says ${file.sha256}`));
  return out.buffer;
}

function corrupt(file, what) {
  return new SttError(ErrorCode.INTEGRITY, `corrupt download of ${file.name}: ${what}. Retry, or clear the ` +
    'model cache; if it persists the file on the server is damaged.');
}

function retryable(error) {
  error.retryable = true;
  return error;
}

async function withRetries(retries, backoffMs, attempt) {
  for (let i = 0; ; i++) {
    try {
      return await attempt();
    } catch (error) {
      if (!error.retryable || i >= retries) throw error;
      await new Promise((resolve) => setTimeout(resolve, backoffMs * 2 ** i));
    }
  }
}

async function checkQuota(bytes) {
  const estimate = await globalThis.navigator?.storage?.estimate?.().catch(() => null);
  if (!estimate?.quota) return;                   // unknown: let cache.put fail if it must
  const free = estimate.quota - (estimate.usage ?? 0);
  if (free < bytes + QUOTA_MARGIN_BYTES) throw quotaError(`${mb(bytes)} to download, ${mb(free)} free`);
}

function quotaError(detail) {
  return new SttError(ErrorCode.QUOTA, `Not enough storage for the model (${detail}).`);
}

// Entries of this package's files under another SHA-256 (an older version of the file): delete them.
async function dropStaleEntries(cache, manifest, base) {
  const current = new Map(manifest.files.map((f) => [new URL(f.name, base).href, f.sha256]));
  for (const request of await cache.keys()) {
    const url = new URL(request.url);
    const sha = url.searchParams.get('sha256');
    url.search = '';
    if (current.has(url.href) && current.get(url.href) !== sha) await cache.delete(request);
  }
}

function withSlash(url) {
  const s = String(new URL(url, globalThis.location?.href));
  return s.endsWith('/') ? s : `${s}/`;
}

function mb(bytes) {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}
