"""From audio to words: audio files and resampling, the Transcriber (frames -> engine -> tokens), the stream
decoder (tokens -> words, timestamps, ends of turn) and the output formats."""
