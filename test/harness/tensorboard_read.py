"""Load a log directory with TensorBoard's own reader (the event accumulator of the
`tensorboard` package) and print every scalar as JSON: {tag: [[step, value], ...]}.
Run by the tools virtualenv's python (infra/tools-requirements.txt installs tensorboard)."""

import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(log_dir):
    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0})  # 0: keep every event, not a sample
    acc.Reload()
    tags = acc.Tags()["scalars"]
    print(json.dumps({tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in tags}))


if __name__ == "__main__":
    main(sys.argv[1])
