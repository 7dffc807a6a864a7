// User-facing errors of the browser engine: {code, message, fix}. Every module throws SttError for what a user can
// act on; the worker sends errorPayload(error) across postMessage (Error objects lose their fields there) and the
// client turns it back into an SttError.

export const ErrorCode = Object.freeze({
  NO_WEBGPU: 'no-webgpu',
  ADAPTER_LIMITS: 'adapter-limits',
  MIC_DENIED: 'mic-denied',
  MIC_ABSENT: 'mic-absent',
  DOWNLOAD: 'download',
  INTEGRITY: 'integrity',
  QUOTA: 'quota',
  DEVICE_LOST: 'device-lost',
  PACKAGE_MISMATCH: 'package-mismatch',
  AUDIO_DECODE: 'audio-decode',
  GPU: 'gpu',
  INTERNAL: 'internal',
});

// The default "what to do about it" of each code.
const FIXES = {
  [ErrorCode.NO_WEBGPU]: 'Use a browser with WebGPU: Chrome or Edge 113+, Safari 26, Firefox 141+ on Windows; ' +
    'make sure hardware acceleration is on, and open the page over https or from localhost.',
  [ErrorCode.ADAPTER_LIMITS]: 'This device is too small for the model: use a smaller model (the 1B rather than ' +
    'the 2.6B), another browser or another device.',
  [ErrorCode.MIC_DENIED]: 'Allow microphone access for this site (the icon in the address bar), then start again.',
  [ErrorCode.MIC_ABSENT]: 'Connect a microphone (or choose one in the system settings), then start again.',
  [ErrorCode.DOWNLOAD]: 'Check the network connection and try again: files already downloaded are kept.',
  [ErrorCode.INTEGRITY]: 'Retry the download; if it fails again, clear the model cache or report the broken file.',
  [ErrorCode.QUOTA]: 'Free some disk space or site storage (browser settings > privacy > site data), then retry.',
  [ErrorCode.DEVICE_LOST]: 'The GPU was reset or the tab lost it: load the engine again (reload the page).',
  [ErrorCode.PACKAGE_MISMATCH]: 'Re-export the site for this model package: kyutai-stt export-web --model ...',
  [ErrorCode.AUDIO_DECODE]: 'Use a common audio format (wav, mp3, ogg, m4a, flac).',
  [ErrorCode.GPU]: 'Reload the page; if it happens again, report it with the adapter shown in the page.',
  [ErrorCode.INTERNAL]: 'Reload the page; if it happens again, report it.',
};

export class SttError extends Error {
  constructor(code, message, fix = FIXES[code] ?? FIXES[ErrorCode.INTERNAL]) {
    super(message);
    this.name = 'SttError';
    this.code = code;
    this.fix = fix;
  }
}

// A plain object for postMessage; anything that is not an SttError becomes an 'internal' error.
export function errorPayload(error) {
  if (error instanceof SttError) return {code: error.code, message: error.message, fix: error.fix};
  const message = error?.message ?? String(error);
  return {code: ErrorCode.INTERNAL, message, fix: FIXES[ErrorCode.INTERNAL]};
}

export function fromPayload(payload) {
  return new SttError(payload.code, payload.message, payload.fix);
}

// getUserMedia's DOMExceptions -> SttError.
export function microphoneError(error) {
  if (error?.name === 'NotAllowedError' || error?.name === 'SecurityError') {
    return new SttError(ErrorCode.MIC_DENIED, 'Microphone access was denied.');
  }
  if (error?.name === 'NotFoundError' || error?.name === 'OverconstrainedError') {
    return new SttError(ErrorCode.MIC_ABSENT, 'No microphone was found.');
  }
  if (error?.name === 'NotReadableError') {
    return new SttError(ErrorCode.MIC_ABSENT, 'The microphone is in use by another application or failed.',
      'Close other applications using the microphone, then start again.');
  }
  return new SttError(ErrorCode.INTERNAL, `Could not open the microphone: ${error?.message ?? error}`);
}
