// Live audio on a device that may be too slow: the worker's queue of microphone frames, bounded, and the verdict on
// whether the device keeps up, measured over the first seconds of each live stream.
//
// The bound: when more than maxBacklogSeconds of audio waits, the OLDEST frames are dropped (not coalesced: the model
// must hear audio at its own rate, and a frame cannot be processed faster by merging it with another). So the text
// is never more than maxBacklogSeconds (+ one frame's processing) behind the speaker, at the price of the words
// spoken in the dropped audio; word times then count the audio the engine heard. Infinity keeps every frame (the
// text falls behind as far as it must). Files are never dropped: they go at the device's own pace.

// The verdict comes once this much live audio has arrived.
export const MEASURE_SECONDS = 2;
// Text at most this far behind the speaker on a device that cannot keep up (plus one frame's processing).
export const DEFAULT_MAX_BACKLOG_SECONDS = 3;

export class LivePacer {
  // frameMs: the audio in one frame (80 ms); maxBacklogSeconds: the bound above (Infinity: none).
  constructor(frameMs, maxBacklogSeconds = DEFAULT_MAX_BACKLOG_SECONDS) {
    this.frameMs = frameMs;
    this.maxBacklogSeconds = maxBacklogSeconds;
    this.maxFrames = Math.max(1, Math.floor((maxBacklogSeconds * 1000) / frameMs));
    this.measureFrames = Math.round((MEASURE_SECONDS * 1000) / frameMs);
    this.queue = [];              // frames received and not yet taken, oldest first
    this.arrived = 0;
    this.dropped = 0;             // frames dropped so far
    this.completed = 0;           // frames whose results came back, and their service time
    this.serviceMs = 0;
    this.firstArrivedAt = null;
    this.firstTakenAt = null;
    this.verdict = null;
  }

  // A frame arrived at `now` (ms): queued; returns {dropped: [frames dropped to keep the bound], pace: the verdict
  // when it is due now, else null}.
  add(frame, now) {
    this.queue.push(frame);
    this.arrived += 1;
    this.firstArrivedAt ??= now;
    const dropped = this.queue.length > this.maxFrames ? this.queue.splice(0, this.queue.length - this.maxFrames) : [];
    this.dropped += dropped.length;
    const pace = !this.verdict && this.arrived >= this.measureFrames ? this.measure(now) : null;
    return {dropped, pace};
  }

  // The oldest waiting frame (undefined when the bound dropped it meanwhile).
  take(now) {
    if (this.queue.length && this.firstTakenAt === null) this.firstTakenAt = now;
    return this.queue.shift();
  }

  // A frame's results came back after serviceMs of processing.
  done(serviceMs) {
    this.completed += 1;
    this.serviceMs += serviceMs;
  }

  get waiting() {
    return this.queue.length;
  }

  // {realTimeFactor, msPerFrame, keepsUp, frames (results measured), lowerBound, maxBacklogSeconds}. With no
  // result back yet, the time since the first frame started (or arrived) is a lower bound of one frame's processing.
  measure(now) {
    const lowerBound = this.completed === 0;
    const msPerFrame = lowerBound ? now - (this.firstTakenAt ?? this.firstArrivedAt) : this.serviceMs / this.completed;
    const realTimeFactor = msPerFrame / this.frameMs;
    this.verdict = {realTimeFactor, msPerFrame, keepsUp: realTimeFactor <= 1, frames: this.completed, lowerBound,
      maxBacklogSeconds: this.maxBacklogSeconds};
    return this.verdict;
  }
}
