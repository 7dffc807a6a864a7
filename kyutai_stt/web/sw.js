// The service worker: the app keeps working with the network off after one visit. export_site writes the line
// above this one, `self.SITE = {version, files}`: the site's version (a hash of its app files) and those files.
//
// - install: every app file of this version is fetched (bypassing the HTTP cache) into `kyutai-stt-app-<version>`;
//   a file that fails fails the install, so a cache is always one whole version.
// - activate: the caches of other versions are deleted; this worker takes over at once (safe: see fetch).
// - fetch: the app's files go to the network first, as without a worker (so a page never mixes versions while
//   online); only when the network fails do they come from the cache. Everything else (the model, other sites)
//   is not touched: package.js keeps the model in its own cache, so it is stored once, not twice.

const APP_CACHE_PREFIX = 'kyutai-stt-app-';
const site = self.SITE ?? null;          // null: sw.js served without export_site (nothing to keep)
const cacheName = site && `${APP_CACHE_PREFIX}${site.version}`;
const scope = new URL(self.registration.scope);
const appUrls = new Set((site?.files ?? []).map((f) => new URL(f, scope).href));

self.addEventListener('install', (event) => {
  if (!site) return;
  event.waitUntil((async () => {
    const cache = await caches.open(cacheName);
    await cache.addAll([...appUrls].map((url) => new Request(url, {cache: 'reload'})));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith(APP_CACHE_PREFIX) && name !== cacheName) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const key = appKey(event.request);
  if (key) event.respondWith(networkThenCache(event.request, key));
});

// The cache key of an app file (its URL without query or fragment; the site's root is its page), else null.
function appKey(request) {
  if (!site || request.method !== 'GET') return null;
  const url = new URL(request.url);
  url.search = '';
  url.hash = '';
  const key = url.href === scope.href ? new URL('index.html', scope).href : url.href;
  return appUrls.has(key) ? key : null;
}

async function networkThenCache(request, key) {
  try {
    return await fetch(request);
  } catch (error) {
    const hit = await (await caches.open(cacheName)).match(key);
    if (hit) return hit;
    throw error;
  }
}
