"""TensorBoard event files, written without TensorFlow or the tensorboard package.

An event file is a sequence of TFRecords (length, masked CRC-32C of the length, the
bytes, masked CRC-32C of the bytes), each holding one `Event` protocol buffer: the
first names the file version, every other one a `Summary` of scalars at a step. Only
the few fields a scalar needs are encoded here (tensorflow/core/util/event.proto,
summary.proto); TensorBoard's own reader loads them (test/integration/tensorboard.test.ts).

The files live in <output_dir>/tensorboard. Every checkpoint carries a copy, and a resumed
run starts from that copy, so after a resume the logs hold each step once, up to the step
the run resumed from and on from there; the finished job's files are uploaded with its
adapter (`tunefleet download JOB --logs`).
"""

import os
import shutil
import socket
import struct
import time

LOG_DIR = "tensorboard"
FILE_VERSION = "brain.Event:2"


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data):
    """One TFRecord around `data`."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def _varint(n):
    out = bytearray()
    n &= 0xFFFFFFFFFFFFFFFF  # negative int64 as two's complement, as protobuf does
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _bytes_field(number, data):
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def event(wall_time, step=0, file_version=None, scalars=None):
    """An `Event` message: wall_time (1, double), step (2, int64), file_version (3) or summary (5)."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        # Summary.value (1) of Summary.Value: tag (1, string), simple_value (2, float)
        values = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", float(v)))
            for tag, v in scalars.items()
        )
        out += _bytes_field(5, values)
    return out


def _stamp(name):
    """The time stamp in an event file's name (events.out.tfevents.<seconds>.<host>...), or 0."""
    parts = name.split(".")
    return int(parts[3]) if len(parts) > 3 and name.startswith("events.out.tfevents.") and parts[3].isdigit() else 0


class EventWriter:
    """Scalars by step into a new event file under log_dir (opened at the first write)."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.f = None

    def _open(self):
        os.makedirs(self.log_dir, exist_ok=True)
        now = time.time()
        # TensorBoard reads a directory's files in name order and drops what goes back in steps: a resumed run's
        # file must sort after the earlier attempts' (which may be this same second, or another host's clock ahead)
        stamp = max([int(now)] + [_stamp(n) + 1 for n in os.listdir(self.log_dir)])
        name = f"events.out.tfevents.{stamp:010d}.{socket.gethostname()}.{os.getpid()}"
        self.f = open(os.path.join(self.log_dir, name), "ab")
        self.f.write(record(event(now, file_version=FILE_VERSION)))

    def scalars(self, step, values):
        """Write the finite values of `values` (tag -> number) at `step`; flushed, so a checkpoint copies them."""
        kept = {k: v for k, v in values.items() if v is not None and v == v and abs(v) != float("inf")}
        if not kept:
            return
        if self.f is None:
            self._open()
        self.f.write(record(event(time.time(), step, scalars=kept)))
        self.f.flush()

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None


def copy_logs(src, dst):
    """Copy the event files of src (if any) to dst, replacing what dst held."""
    shutil.rmtree(dst, ignore_errors=True)
    if os.path.isdir(src):
        shutil.copytree(src, dst)
