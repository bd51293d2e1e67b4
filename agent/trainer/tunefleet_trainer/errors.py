# The trainer's error codes: the same names as TRAINER_ERROR_CODES in shared/errors.ts,
# where each has its failure class (what the workflow does when an attempt ends with it).
# test/unit/errors.test.ts fails when a code is on one side only, or when the trainer
# raises a code that is not listed here.
import json

CODES = frozenset(
    {
        "CONFIG_INVALID",
        "DATASET_INVALID",
        "DATASET_EMPTY",
        "MODEL_UNSAFE",
        "METHOD_UNSUPPORTED",
        "QLORA_UNAVAILABLE",
        "PRECISION_UNSUPPORTED",
        "LOSS_NOT_FINITE",
        "MODEL_MISSING",
        "DEVICE_UNAVAILABLE",
        "OPTIMIZER_UNAVAILABLE",
        "CHECKPOINT_CORRUPT",
        "CHECKPOINT_INCOMPLETE",
        "CHECKPOINT_MISMATCH",
        "CHECKPOINT_WRITE_FAILED",
        "TRAINER_CRASHED",
        "DISK_FULL",
    }
)


class TrainerError(Exception):
    """An error with a code and a message a person understands; printed as an `error` event."""

    def __init__(self, code, message):
        if code not in CODES:
            raise ValueError(f"unknown trainer error code {code!r} (add it to CODES and to shared/errors.ts)")
        super().__init__(message)
        self.code = code
        self.message = message


def read_json(path, code, missing=None):
    """A JSON file's content; an unreadable or malformed file is a TrainerError(code) naming the path and line.

    missing: (code, message) for a file that does not exist, where that means something of its own."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        if missing and isinstance(e, FileNotFoundError):
            raise TrainerError(*missing) from e
        raise TrainerError(code, f"{path}: cannot read ({e.strerror})") from e
    except json.JSONDecodeError as e:
        raise TrainerError(code, f"{path}:{e.lineno}: not JSON ({e.msg})") from e
