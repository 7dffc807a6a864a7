"""`kyutai-stt convert` (being written)."""


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    raise NotImplementedError("convert is not implemented yet")
