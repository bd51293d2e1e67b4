"""Checkpoints that are complete or absent, never half.

A checkpoint directory is written under a temporary name, every file fsynced, the
directory renamed into place, and manifest.json (sha256 and size of every file) written
last. Resume verifies the manifest before touching any file. Nothing is unpickled:
weights and RNG states are safetensors; the optimizer state is loaded with
weights_only=True.
"""

import hashlib
import json
import os
import shutil
import time

from .errors import TrainerError, read_json

MANIFEST = "manifest.json"


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_files(root):
    """Every file under root except the manifest, as sorted relative paths."""
    out = []
    for d, _, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(d, name), root)
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def file_entries(root):
    return [
        {"name": rel, "sha256": sha256_file(os.path.join(root, rel)), "bytes": os.path.getsize(os.path.join(root, rel))}
        for rel in list_files(root)
    ]


def commit(tmp_dir, final_dir, step):
    """fsync everything in tmp_dir, rename it to final_dir, write the manifest last."""
    for rel in list_files(tmp_dir):
        fd = os.open(os.path.join(tmp_dir, rel), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    entries = file_entries(tmp_dir)
    if os.path.exists(final_dir):
        shutil.rmtree(final_dir)
    os.rename(tmp_dir, final_dir)
    _fsync_dir(os.path.dirname(final_dir))
    manifest = {"step": step, "created": time.time(), "files": entries}
    tmp_manifest = os.path.join(final_dir, MANIFEST + ".tmp")
    with open(tmp_manifest, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp_manifest, os.path.join(final_dir, MANIFEST))
    _fsync_dir(final_dir)
    return entries


def verify(ckpt_dir):
    """Raise unless every file the manifest names exists with its sha256. -> manifest."""
    path = os.path.join(ckpt_dir, MANIFEST)
    incomplete = ("CHECKPOINT_INCOMPLETE", f"{ckpt_dir}: no manifest.json (an interrupted checkpoint)")
    manifest = read_json(path, "CHECKPOINT_CORRUPT", missing=incomplete)
    for entry in manifest.get("files", []):
        name = entry["name"]
        full = os.path.realpath(os.path.join(ckpt_dir, name))
        if not full.startswith(os.path.realpath(ckpt_dir) + os.sep):
            raise TrainerError("CHECKPOINT_CORRUPT", f"{path}: file name {name!r} leaves the checkpoint directory")
        if not os.path.isfile(full):
            raise TrainerError("CHECKPOINT_CORRUPT", f"{ckpt_dir}: {name} is missing")
        digest = sha256_file(full)
        if digest != entry["sha256"]:
            raise TrainerError(
                "CHECKPOINT_CORRUPT",
                f"{ckpt_dir}: {name} has sha256 {digest[:12]}…, manifest says {entry['sha256'][:12]}…",
            )
    return manifest


def newest_complete(root):
    """The newest checkpoint under root whose manifest verifies, or None."""
    if not os.path.isdir(root):
        return None
    names = sorted((n for n in os.listdir(root) if n.startswith("step-") and not n.endswith(".tmp")), reverse=True)
    for name in names:
        try:
            verify(os.path.join(root, name))
            return os.path.join(root, name)
        except TrainerError:
            continue
    return None
