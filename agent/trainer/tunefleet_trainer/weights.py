"""Where a run's trained weights go, for every method: the one place the PEFT/full difference lives.

PEFT methods (lora, dora, qlora, ia3, prompt tuning) save and load only the adapter
(adapter_model.safetensors + adapter_config.json, as PEFT writes it); a full fine-tune
saves the whole model as model.safetensors. The job's exported result is what a user
loads: the adapter, or for a full fine-tune a Hugging Face model directory with its
tokenizer.
"""

import os

from .errors import TrainerError

FULL_WEIGHTS = "model.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_full(method):
    return method == "full"


def checkpoint_weights_dir(checkpoint_dir, method):
    """Where a checkpoint keeps its weights: the checkpoint itself (full) or its adapter/ folder (PEFT)."""
    return checkpoint_dir if is_full(method) else os.path.join(checkpoint_dir, "adapter")


def save_weights(model, method, directory):
    if is_full(method):
        from safetensors.torch import save_model

        os.makedirs(directory, exist_ok=True)
        save_model(model, os.path.join(directory, FULL_WEIGHTS))
    else:
        model.save_pretrained(directory, safe_serialization=True)


def load_weights(model, method, directory):
    """Put saved weights back into `model`; adapter keys that do not match it are refused."""
    if is_full(method):
        from safetensors.torch import load_model

        load_model(model, os.path.join(directory, FULL_WEIGHTS), strict=True)
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(os.path.join(directory, ADAPTER_WEIGHTS)))
    if getattr(result, "unexpected_keys", None):
        raise TrainerError(
            "CHECKPOINT_MISMATCH", f"{directory}: adapter keys do not match the model: {result.unexpected_keys[:3]}"
        )


def export(model, tokenizer, method, directory):
    """The job's result in the layout users load: PEFT's adapter, or a full model with its tokenizer."""
    model.save_pretrained(directory, safe_serialization=True)
    if is_full(method):
        tokenizer.save_pretrained(directory)
