"""python -m tunefleet_trainer train|evaluate|generate|chat --config run.json   (chat: turns on stdin, see chat.py)
   python -m tunefleet_trainer train --config run.json --processes N   (data-parallel, see distributed.py)
   python -m tunefleet_trainer train --config run.json --processes N --nnodes M --node-rank R \
       --master-addr HOST --master-port PORT   (node R of a gang of M hosts, see distributed.py)
   python -m tunefleet_trainer convert-gguf --gguf FILE --out DIR
   python -m tunefleet_trainer export-merged --model DIR --adapter DIR --out DIR [--dtype auto|float32|...]
       [--format gguf --gguf-tools DIR]   (GGUF: llama.cpp's converter, checked with llama.cpp; see ggufexport.py)
   python -m tunefleet_trainer make-tiny-model --out DIR
   python -m tunefleet_trainer export-judge --src DIR|model.zip --out DIR
   python -m tunefleet_trainer judge-embed --src DIR --sentences IN.json --out OUT.json   (PyTorch reference)

Exit codes: 0 done (also after a SIGTERM checkpoint), 2 bad config or input, 3 out of memory, 1 other failure.
"""

import argparse
import os
import sys

# offline and quiet: models come from local directories only; progress bars are noise
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)
import traceback  # noqa: E402  (the environment above is set before anything imports torch)

from .errors import TrainerError  # noqa: E402
from .events import claim_stdout, emit  # noqa: E402


def die_with_agent(env=os.environ):
    """A session started by an agent ends when its agent does.

    The agent names itself in TUNEFLEET_AGENT_PID. On Linux the kernel then sends SIGKILL
    to this process the moment its parent exits (PR_SET_PDEATHSIG), so a crashed or killed
    agent never leaves a trainer holding a GPU and CPU for a session nobody reads any more
    (the job resumes elsewhere from its last commit). A parent that died before the call
    is caught by comparing the parent pid. Elsewhere, or without the variable, nothing.
    """
    # a data-parallel worker's parent is its launcher (which itself dies with the agent)
    worker = "LOCAL_RANK" in env and env.get("TUNEFLEET_LAUNCHER_PID", "").isdigit()
    want = env.get("TUNEFLEET_LAUNCHER_PID" if worker else "TUNEFLEET_AGENT_PID", "")
    if not want.isdigit():
        return False
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != int(want):
        who = "launcher" if worker else "agent"
        print(f"tunefleet_trainer: the {who} (pid {want}) is gone; exiting", file=sys.stderr)
        os._exit(1)
    return True


def main(argv=None):
    die_with_agent()
    ap = argparse.ArgumentParser(prog="python -m tunefleet_trainer")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "evaluate", "generate", "chat"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True, help="run.json")
    train = sub.choices["train"]
    train.add_argument(
        "--processes", type=int, default=1, help="data-parallel processes, one per device (torchrun --standalone)"
    )
    train.add_argument("--nnodes", type=int, default=1, help="hosts of a gang (torchrun --nnodes); 1: this host alone")
    train.add_argument("--node-rank", type=int, default=0, help="this host's rank in the gang (0 speaks for the job)")
    train.add_argument("--master-addr", default=None, help="rank 0's address: the gang's rendezvous")
    train.add_argument("--master-port", type=int, default=None, help="the port rank 0 listens on")
    p = sub.add_parser("convert-gguf")
    p.add_argument("--gguf", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("export-judge")
    p.add_argument("--src", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("judge-embed")
    p.add_argument("--src", required=True)
    p.add_argument("--sentences", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("export-merged")
    p.add_argument("--model", required=True, help="the base model directory")
    p.add_argument("--adapter", required=True, help="the PEFT adapter directory")
    p.add_argument("--out", required=True, help="the merged model's directory (must not exist)")
    p.add_argument(
        "--dtype", default="auto", help="auto (the base's stored dtype), float32, bfloat16 or float16; gguf: also q8_0"
    )
    p.add_argument("--format", default="safetensors", choices=("safetensors", "gguf"), help="a model directory or GGUF")
    p.add_argument("--gguf-tools", default=None, help="where llama.cpp's converter and runtime are installed")
    p = sub.add_parser("make-tiny-model")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "train" and (args.processes != 1 or args.nnodes != 1):
        # the launcher leaves stdout to its workers: rank 0 writes the events there
        return guarded(lambda: _launch(args))
    claim_stdout()
    return guarded(lambda: _dispatch(args))


def _launch(args):
    from . import distributed

    if not 1 <= args.processes <= 64 or (args.processes == 1 and args.nnodes == 1):
        raise TrainerError("CONFIG_INVALID", f"--processes {args.processes}: give 2 to 64 (1 with --nnodes)")
    gang = None
    if args.nnodes != 1:
        if not 2 <= args.nnodes <= 64 or not 0 <= args.node_rank < args.nnodes:
            raise TrainerError("CONFIG_INVALID", f"--nnodes {args.nnodes} --node-rank {args.node_rank}: a rank of 2-64")
        if not args.master_addr or not args.master_port or not 1024 <= args.master_port <= 65535:
            raise TrainerError("CONFIG_INVALID", "a gang needs --master-addr and --master-port (1024-65535)")
        gang = distributed.Gang(args.nnodes, args.node_rank, args.master_addr, args.master_port)
    return distributed.launch(args.cmd, args.config, args.processes, gang)


def guarded(fn):
    """Run fn() and return its exit code. A TrainerError becomes an `error` event with its
    code and exit 2; any other exception (a bug, an environment fault) an `error` event
    TRAINER_CRASHED with the traceback on stderr and exit 1."""
    try:
        return fn()
    except TrainerError as e:
        emit("error", code=e.code, message=e.message)
        return 2
    except Exception as e:
        traceback.print_exc()
        emit("error", code="TRAINER_CRASHED", message=f"{type(e).__name__}: {e}")
        return 1


def run_session(command, config_path):
    """`train` or `evaluate` one session from its run.json, as `python -m tunefleet_trainer`
    does (the tests run sessions in-process through this)."""
    return guarded(lambda: _session(command, config_path))


def _session(command, config_path):
    from . import config

    cfg = config.load(config_path)
    if command == "train":
        from . import recipe

        return recipe.main(cfg)
    if command == "generate":
        from . import generate

        return generate.main(cfg)
    if command == "chat":
        from . import chat

        return chat.main(cfg)
    from . import evaluate

    return evaluate.main(cfg)


def _dispatch(args):
    if args.cmd in ("train", "evaluate", "generate", "chat"):
        return _session(args.cmd, args.config)
    if args.cmd == "export-judge":
        from . import judge

        return judge.export(args.src, args.out)
    if args.cmd == "judge-embed":
        import json

        from . import judge

        with open(args.sentences, encoding="utf-8") as f:
            vectors = judge.embed(args.src, json.load(f))
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(vectors, f)
        return 0
    if args.cmd == "export-merged":
        if args.format == "gguf":
            from . import ggufexport

            return ggufexport.export_gguf(args.model, args.adapter, args.out, args.dtype, args.gguf_tools)
        from . import merge

        return merge.export_merged(args.model, args.adapter, args.out, args.dtype)
    if args.cmd == "convert-gguf":
        from . import convert

        return convert.main(args.gguf, args.out)
    from . import tiny

    return tiny.main(args.out, args.seed)


if __name__ == "__main__":
    sys.exit(main())
