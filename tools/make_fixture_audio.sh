#!/usr/bin/env bash
# Regenerates tests/fixtures/speech_en_fr_24k.wav, the input audio of the reference fixtures (docs/reference.md).
# Needs espeak-ng and sox (apt-get install espeak-ng sox). The generated file is committed, so tests need neither.
#
# Layout (24 kHz mono, 16-bit PCM, exactly 12.0 s = 288000 samples = 150 Mimi frames of 1920 samples):
#   0.2 s silence | English sentence (5.8 s) | 0.2 s silence | 440 Hz tone, 0.6 s | 0.2 s silence |
#   French sentence (4.8 s) | silence up to 12.0 s
# The French sentence runs from 7.0 s to 11.8 s, across 10 s, so a Mimi test crosses the encoder transformer's
# 250-step (10 s at 25 Hz) context with speech, not only silence.
set -euo pipefail
out="${1:-$(dirname "$0")/../tests/fixtures/speech_en_fr_24k.wav}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fmt=(-r 24000 -c 1 -b 16 -e signed-integer)   # every piece in the final format, so sox can concatenate them
speak() {  # speak VOICE TEXT OUT: espeak-ng at its native 22050 Hz, resampled to 24 kHz, peak-normalised to -3 dBFS
  espeak-ng -v "$1" -s 160 -w "$work/raw.wav" "$2"
  sox -D "$work/raw.wav" "${fmt[@]}" "$3" rate -v 24000 gain -n -3
}
silence() { sox -D -n "${fmt[@]}" "$2" trim 0 "$1"; }

speak en-us "The quick brown fox jumps over the lazy dog, then takes a short nap in the warm sun." "$work/en.wav"
speak fr-fr "Bonjour à tous, il fait très beau aujourd'hui à Paris, allons nous promener au bord de la Seine." \
  "$work/fr.wav"
silence 0.2 "$work/gap.wav"
silence 1.0 "$work/tail.wav"
sox -D -n "${fmt[@]}" "$work/tone.wav" synth 0.6 sine 440 vol 0.3 fade t 0.01 0.6 0.01
# Concatenate, then cut to exactly 288000 samples (the tail of silence is longer than needed).
sox -D "$work/gap.wav" "$work/en.wav" "$work/gap.wav" "$work/tone.wav" "$work/gap.wav" "$work/fr.wav" \
  "$work/tail.wav" "${fmt[@]}" "$out" trim 0 288000s
soxi "$out" | grep -E "Duration|Sample Rate|Channels|Precision"
sha256sum "$out"
