"""The base of every error a user can fix (bad file, missing package, no GPU): the CLI prints its message alone,
without a traceback. Messages name the problem (the file, the key, the tensor) and the fix."""


class UserError(Exception):
    pass


class AudioError(UserError, ValueError):
    """An audio input the user must fix: a missing, unreadable, corrupt or empty file, a bad sample rate, NaN
    samples. Defined here (and re-exported by kyutai_stt.streaming.audio) so that audio.py and resample.py share it."""
