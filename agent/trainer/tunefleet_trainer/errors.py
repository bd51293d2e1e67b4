class TrainerError(Exception):
    """An error with a code and a message a person understands; printed as an `error` event."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message
