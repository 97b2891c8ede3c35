// The phone scanner's service worker, served as /phone/sw.js (scope /phone/) by
// server/phone/routes.py, which puts VERSION and CACHED (the page's files and the decoder,
// server/phone/assets.py) before this text. It keeps the page usable without a network:
// the scanner pages network first, falling back to the copy kept at their last visit; the
// scripts, styles and the decoder's WebAssembly from the cache. When the network returns
// ("sync", registered by the page after a scan made offline) it delivers every device's
// pending records, with no page open.

import { openStore } from "/static/phone/store.js";
import { deliverAll } from "/static/phone/delivery.js";

const CACHE = `qrgate-phone-${VERSION}`;
const PAGES = /^\/phone\/venues\/[0-9]+(\/manifest\.webmanifest)?$/;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(CACHED.map((url) => new Request(url, { cache: "reload" })))).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    const old = (await caches.keys()).filter((name) => name.startsWith("qrgate-phone-") && name !== CACHE);
    // The pages kept offline move to the new cache: a phone updated while offline still opens.
    const cache = await caches.open(CACHE);
    for (const name of old) {
      const previous = await caches.open(name);
      for (const request of await previous.keys()) {
        if (PAGES.test(new URL(request.url).pathname)) await cache.put(request, await previous.match(request));
      }
      await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok && !response.redirected) await cache.put(request, response.clone());
    return response;
  } catch (error) {
    const kept = await cache.match(request, { ignoreSearch: true });
    if (kept) return kept;
    throw error;
  }
}

async function cacheFirst(request) {
  const kept = await caches.match(request, { ignoreSearch: true });
  return kept || fetch(request);
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (PAGES.test(url.pathname)) event.respondWith(networkFirst(event.request));
  else if (url.pathname.startsWith("/static/phone/")) event.respondWith(cacheFirst(event.request));
});

async function deliverEverything() {
  const db = await openStore();
  try {
    await deliverAll(db);
  } finally {
    db.close();
  }
}

self.addEventListener("sync", (event) => {
  if (event.tag === "qrgate-outbox") event.waitUntil(deliverEverything());
});

// The page asks to be kept as soon as this worker runs: a page first opened before the
// worker existed was not fetched through it, and must open offline all the same.
async function keep(url) {
  if (!PAGES.test(new URL(url).pathname)) return;
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (response.ok && !response.redirected) await (await caches.open(CACHE)).put(url, response);
}

self.addEventListener("message", (event) => {
  if (event.data && event.data.keep) event.waitUntil(keep(event.data.keep).catch(() => {}));
});
