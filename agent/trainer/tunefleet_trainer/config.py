"""Run configuration: plain data, unknown keys refused, defaults documented here.

The agent writes this file from the job spec (shared/spec.ts); a person can write it
by hand to run the trainer alone.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional, Union

from .errors import TrainerError, read_json

METHODS = ("lora", "dora", "qlora", "ia3", "prefix", "prompt", "adapter", "full")
# methods whose records can share a packed block exactly (the others add virtual tokens or adapter prompts)
PACKABLE = ("lora", "dora", "qlora", "ia3", "full")
ATTENTION = ("auto", "sdpa", "flex_attention", "flash_attention_2", "eager")


@dataclass
class LoraConfig:
    r: int = 8  # rank of the update
    alpha: float = 16  # the update is scaled by alpha / r
    dropout: float = 0.05
    target_modules: Optional[List[str]] = None  # None: per-architecture default


@dataclass
class PromptConfig:
    num_virtual_tokens: int = 20  # prefix and prompt tuning: learned virtual tokens


@dataclass
class AdapterConfig:
    # LLaMA-Adapter (PEFT AdaptionPrompt): learned prompts of adapter_len tokens in the top adapter_layers layers
    adapter_len: int = 10
    adapter_layers: int = 8  # capped at the model's number of layers


@dataclass
class TrainingConfig:
    epochs: float = 1
    max_steps: Optional[int] = None  # overrides epochs when set
    learning_rate: float = 2e-4
    batch_size: int = 32  # effective: micro_batch_size x gradient accumulation
    micro_batch_size: Optional[int] = None  # default: min(batch_size, 8)
    max_seq_len: int = 512
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine"  # cosine | linear | constant
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # recompute each layer's activations in backward: less memory, about a third more compute.
    # auto: on for qlora (whose point is memory), off otherwise
    gradient_checkpointing: Union[bool, str] = "auto"
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    seed: int = 42
    checkpoint_every: int = 50  # optimizer steps; also at the end and on SIGTERM
    optimizer: str = "adamw"  # adamw | adamw_8bit (bitsandbytes, CUDA only)
    # whole train records into max_seq_len blocks, each record attending only to itself (position ids restart per
    # record). auto: on where that is exact (lora, dora, qlora, ia3, full, and the model keeps packed records apart;
    # checked at start), off otherwise
    packing: Union[bool, str] = "auto"
    # attention kernels (transformers' attn_implementation): auto | sdpa | flex_attention | flash_attention_2 | eager.
    # auto: flex_attention on CUDA when packing (a document block mask: each record attends to itself, sparsely),
    # else sdpa (on CPU packed records get a block-diagonal mask)
    attention: str = "auto"
    # torch.compile of each decoder layer (regional: one layer's graph serves all). auto: on CUDA, off on CPU
    compile: Union[bool, str] = "auto"
    # the loss in chunks from the last hidden state, logits never held whole (where the model's head allows; else
    # the plain loss). false: always the plain loss
    chunked_loss: bool = True
    eval_every: int = 0  # evaluate on the eval split every N steps (0: only at the end)
    patience: Optional[int] = None  # early stopping: stop after this many evaluations without improvement


@dataclass
class EvaluationConfig:
    exact_match: bool = True
    max_new_tokens: int = 32
    max_samples: Optional[int] = None


@dataclass
class GenerationConfig:
    """generate: the prompts, and how to answer them (temperature 0: greedy, as the evaluation step)."""

    prompts: List[str] = field(default_factory=list)
    base: bool = False  # the base model's answer beside the fine-tuned one
    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0


@dataclass
class RunConfig:
    model_path: str  # Hugging Face model directory (safetensors + tokenizer)
    train_path: str  # JSONL
    output_dir: str  # checkpoints/ and adapter/ are written here
    method: str = "lora"
    eval_path: Optional[str] = None
    resume_from: Optional[str] = None  # a checkpoint directory with a manifest
    adapter_path: Optional[str] = None  # evaluate: the adapter to compare with the base
    init_adapter: Optional[str] = None  # train: a PEFT adapter directory to start from (not from fresh weights)
    # train: stop after this step (a sweep's rung): checkpoint, evaluate, exit; a later resume from that checkpoint
    # trains on as if never paused (the schedule still runs over all the steps). At or past the last step: no pause
    pause_at: Optional[int] = None
    device: str = "auto"  # auto | cpu | cuda
    job_id: str = "local"
    memory_budget: Optional[int] = (
        None  # bytes placement reserved for this session: the automatic micro-batch stays inside it
    )
    lora: LoraConfig = field(default_factory=LoraConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


SECTIONS = {
    "lora": LoraConfig,
    "prompt": PromptConfig,
    "adapter": AdapterConfig,
    "training": TrainingConfig,
    "evaluation": EvaluationConfig,
    "generation": GenerationConfig,
}


def _build(cls, data, where):
    if not isinstance(data, dict):
        raise TrainerError("CONFIG_INVALID", f"{where}: expected an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TrainerError(
            "CONFIG_INVALID", f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(fields)})"
        )
    kwargs = {}
    for name, value in data.items():
        sub = SECTIONS.get(name) if cls is RunConfig else None
        kwargs[name] = _build(sub, value, f"{where}.{name}") if sub else value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TrainerError("CONFIG_INVALID", f"{where}: {e}") from e


def validate(cfg: RunConfig):
    t = cfg.training
    problems = []
    if cfg.method not in METHODS:
        problems.append(f"method: '{cfg.method}' is not one of {', '.join(METHODS)}")
    if t.lr_scheduler not in ("cosine", "linear", "constant"):
        problems.append(f"training.lr_scheduler: '{t.lr_scheduler}' is not cosine, linear or constant")
    if t.precision not in ("auto", "bf16", "fp16", "fp32"):
        problems.append(f"training.precision: '{t.precision}' is not auto, bf16, fp16 or fp32")
    if not (isinstance(t.learning_rate, (int, float)) and t.learning_rate > 0):
        problems.append("training.learning_rate: must be a positive number")
    for name in ("batch_size", "max_seq_len", "checkpoint_every"):
        v = getattr(t, name)
        if not (isinstance(v, int) and v > 0):
            problems.append(f"training.{name}: must be a positive integer")
    if t.micro_batch_size is not None and not (isinstance(t.micro_batch_size, int) and t.micro_batch_size > 0):
        problems.append("training.micro_batch_size: must be a positive integer")
    if t.max_steps is not None and not (isinstance(t.max_steps, int) and t.max_steps > 0):
        problems.append("training.max_steps: must be a positive integer")
    for name in ("gradient_checkpointing", "packing", "compile"):
        if not (isinstance(getattr(t, name), bool) or getattr(t, name) == "auto"):
            problems.append(f"training.{name}: must be true, false or auto")
    if t.attention not in ATTENTION:
        problems.append(f"training.attention: '{t.attention}' is not one of {', '.join(ATTENTION)}")
    if not isinstance(t.chunked_loss, bool):
        problems.append("training.chunked_loss: must be true or false")
    if t.packing is True and cfg.method not in PACKABLE:
        problems.append(
            f"training.packing: method {cfg.method} cannot pack records (its virtual tokens or adapter prompts do not "
            "follow per-record positions); use packing: false or auto"
        )
    if t.optimizer not in ("adamw", "adamw_8bit"):
        problems.append(f"training.optimizer: '{t.optimizer}' is not adamw or adamw_8bit")
    if not (isinstance(t.eval_every, int) and t.eval_every >= 0):
        problems.append("training.eval_every: must be a whole number >= 0")
    if t.patience is not None and not (isinstance(t.patience, int) and t.patience > 0):
        problems.append("training.patience: must be a positive integer")
    g = cfg.generation
    if not (isinstance(g.prompts, list) and all(isinstance(p, str) for p in g.prompts)):
        problems.append("generation.prompts: must be a list of strings")
    if not (isinstance(g.max_new_tokens, int) and 0 < g.max_new_tokens <= 4096):
        problems.append("generation.max_new_tokens: must be an integer from 1 to 4096")
    if not (isinstance(g.temperature, (int, float)) and 0 <= g.temperature <= 5):
        problems.append("generation.temperature: must be a number from 0 (greedy) to 5")
    if t.patience is not None and not t.eval_every:
        problems.append("training.patience: early stopping needs training.eval_every > 0")
    if not (isinstance(cfg.prompt.num_virtual_tokens, int) and 0 < cfg.prompt.num_virtual_tokens <= 1024):
        problems.append("prompt.num_virtual_tokens: must be an integer from 1 to 1024")
    for name in ("adapter_len", "adapter_layers"):
        if not (isinstance(getattr(cfg.adapter, name), int) and getattr(cfg.adapter, name) > 0):
            problems.append(f"adapter.{name}: must be a positive integer")
    if cfg.pause_at is not None and not (isinstance(cfg.pause_at, int) and cfg.pause_at > 0):
        problems.append("pause_at: must be a positive integer")
    if cfg.device not in ("auto", "cpu", "cuda"):
        problems.append(f"device: '{cfg.device}' is not auto, cpu or cuda")
    if problems:
        raise TrainerError("CONFIG_INVALID", "; ".join(problems))
    return cfg


def load(path) -> RunConfig:
    return validate(_build(RunConfig, read_json(path, "CONFIG_INVALID"), str(path)))


def from_dict(data) -> RunConfig:
    return validate(_build(RunConfig, data, "config"))
