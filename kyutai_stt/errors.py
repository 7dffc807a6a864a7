"""The base of every error a user can fix (bad file, missing package, no GPU): the CLI prints its message alone,
without a traceback. Messages name the problem (the file, the key, the tensor) and the fix."""


class UserError(Exception):
    pass
