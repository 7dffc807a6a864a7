// What a bug report needs to know about this browser and GPU, as one plain object (the page shows it as JSON with a
// copy button; SttClient.diagnostics() returns it). It asks for its own adapter, so it works even when the engine
// failed to load (a too-small GPU, no WebGPU at all).

import {adapterSummary, chooseVariant} from './runtime.js';

// engine: SttClient.info after a load (null before, or when it failed); plansUrl: the site's plans.json, whose
// variant rules say which variant this adapter gets.
export async function collectDiagnostics(engine = null, plansUrl = null) {
  const report = {
    time: new Date().toISOString(),
    userAgent: globalThis.navigator?.userAgent ?? '',
    secureContext: Boolean(globalThis.isSecureContext),
    crossOriginIsolated: Boolean(globalThis.crossOriginIsolated),
    webgpu: globalThis.navigator?.gpu ? 'present' : 'navigator.gpu is missing',
    adapter: null,
    engine: engine && {variant: engine.variant, fallback: engine.fallback, package: engine.package, plan: engine.plan, timings: engine.timings},
  };
  if (globalThis.navigator?.gpu) {
    try {
      const adapter = await navigator.gpu.requestAdapter({powerPreference: 'high-performance'});
      report.adapter = adapter ? {...describeAdapter(adapter), variant: await variantOf(adapter, plansUrl)}
        : 'requestAdapter() returned null (WebGPU disabled or the GPU blocklisted)';
    } catch (error) {
      report.adapter = `requestAdapter() failed: ${error?.message ?? error}`;
    }
  }
  return report;
}

async function variantOf(adapter, plansUrl) {
  if (!plansUrl) return null;
  try {
    const response = await fetch(plansUrl);
    if (!response.ok) return `unknown (plans.json: HTTP ${response.status})`;
    return chooseVariant(adapter, await response.json());
  } catch (error) {
    return `unknown (plans.json: ${error?.message ?? error})`;
  }
}

function describeAdapter(adapter) {
  const info = {};
  for (const key in adapter.info ?? {}) {           // WebIDL attributes are enumerable: every field this browser has
    const value = adapter.info[key];
    if (typeof value !== 'function') info[key] = value;
  }
  const limits = {};
  for (const key in adapter.limits) limits[key] = adapter.limits[key];
  return {info, summary: adapterSummary(adapter), features: [...adapter.features].sort(), limits};
}
