"""tunefleet trainer: one PEFT fine-tuning recipe, resumable to the exact step.

Standalone: `python -m tunefleet_trainer train --config run.json`. Events are JSON lines
on stdout (schema: events.schema.json, generated from shared/events.ts).
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
