"""Messages straight out of uncompressed mcap chunks: the one read that is not left to rosbags.

``ros2 bag record -s mcap`` writes uncompressed chunks by default. rosbags reads each message
out of such a chunk with three copies (the chunk from the file, the record from the chunk, the
message from the record): for a 640x480 camera that is ~2.8 MB of memory traffic a frame on
top of the resize, and with every core converting, the converter was memory-bound at ~60% of
rosbags' own read speed (docs/convert.md, "Speed"). Here a chunk is read with one ``pread``
into a reused buffer and its image messages are handed out as views into it.

rosbags still does everything else: it opens the bag, parses its metadata, summary and chunk
index, and reads every bag this module declines (sqlite3, ROS 1, compressed or unindexed mcap,
per-message compression, chunks that overlap in time). Messages come in exactly rosbags' order
(by log time, ties by chunk position, then by position in the chunk), and
tests/data/test_mcap_chunks.py compares the two message for message on the bags the tests write.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from collections.abc import Collection, Iterator
from typing import Any

# Views into the chunk buffer only for these: they are parsed and resized before the next
# message is read. Anything else is copied out (a few bytes), so a decoded message can never
# alias a buffer that the next chunk overwrites (rosbags' arrays are views of the raw bytes).
VIEW_TYPES = frozenset({"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"})

_CHUNK_TAIL = struct.Struct("<IIQ")  # uncompressed crc, compression name length, records size
_RECORD = struct.Struct("<BQ")  # opcode, length
_MESSAGE = struct.Struct("<HIQQ")  # channel id, sequence, log time, publish time
_MESSAGE_OP = 0x05


class ChunkError(ValueError):
    """A chunk whose records do not fit what its index says: the bag is truncated or corrupt."""


def messages(
    reader: Any, topics: Collection[str], start: int | None = None, stop: int | None = None
) -> Iterator[tuple[str, str, int, bytes | memoryview]] | None:
    """(topic, msgtype, log time ns, raw) of ``topics`` logged in [start, stop), as rosbags'
    ``messages`` would give them, or None where rosbags must read the bag.

    ``reader`` is an open rosbags AnyReader. An image's raw bytes are a memoryview that stays
    valid only until the next message is requested.
    """
    plan = _plan(reader, set(topics), start, stop)
    return None if plan is None else _read(plan, start, stop)


# Per storage file: descriptor, size, the chunks to read in order, channel -> (topic, type).
_Plan = list[tuple[int, int, list[Any], dict[int, tuple[str, str]]]]


def _plan(reader: Any, topics: set[str], start: int | None, stop: int | None) -> _Plan | None:
    from rosbags.rosbag2 import Reader as Reader2
    from rosbags.rosbag2.reader import DirectoryReader
    from rosbags.rosbag2.storage_mcap import McapReader

    if not hasattr(os, "preadv"):  # not Linux or BSD: rosbags reads
        return None
    if len(reader.readers) != 1 or not isinstance(reader.readers[0], Reader2):
        return None
    bag = reader.readers[0]
    if bag.compression_mode == "message":
        return None
    # A bag folder holds one or more storage files (read one after the other, as rosbags does);
    # a bare .mcap file is one.
    inner = bag.storage
    storages = inner.storages if isinstance(inner, DirectoryReader) else [inner]
    plan: _Plan = []
    for storage in storages:
        if not isinstance(storage, McapReader) or not storage.chunks or storage.bio is None:
            return None
        channels = {c.id: (c.topic, c.msgtype) for c in storage.connections if c.topic in topics}
        if not channels:
            continue
        chunks = [
            c
            for c in storage.chunks
            if (start is None or start < c.message_end_time + 1)
            and (stop is None or c.message_start_time < stop)
            and any(c.channel_count.get(cid, 0) for cid in channels)
        ]
        if any(c.compression for c in chunks):
            return None
        # rosbags merges chunks by (log time, chunk offset): reading them one after the other
        # gives the same order only where each chunk ends before the next one starts.
        if not all(
            (a.message_end_time, a.chunk_start_offset)
            < (b.message_start_time, b.chunk_start_offset)
            for a, b in itertools.pairwise(chunks)
        ):
            return None
        fd = storage.bio.fileno()
        plan.append((fd, os.fstat(fd).st_size, chunks, channels))
    return plan


def _read(
    plan: _Plan, start: int | None, stop: int | None
) -> Iterator[tuple[str, str, int, bytes | memoryview]]:
    buf = bytearray()
    for fd, file_size, chunks, channels in plan:
        for chunk in chunks:
            lo = chunk.message_start_time if start is None else start
            hi = chunk.message_end_time + 1 if stop is None else stop
            size = chunk.uncompressed_size
            need = _CHUNK_TAIL.size + size
            where = f"chunk at byte {chunk.chunk_start_offset}"
            # The chunk record: op, length, start, end, uncompressed size, then what is read.
            offset = chunk.chunk_start_offset + 9 + 24
            if offset + need > file_size:  # a damaged index: refuse before allocating for it
                raise ChunkError(f"{where} runs past the end of the file")
            if len(buf) < need:
                # A new buffer, not a resize: a view the consumer still holds keeps the old one.
                buf = bytearray(need)
            view = memoryview(buf)[:need]
            got = os.preadv(fd, [view], offset)
            if got != need:
                raise ChunkError(f"{where} is cut short ({got} of {need} bytes)")
            crc, name_len, records_size = _CHUNK_TAIL.unpack_from(view)
            if name_len != 0 or records_size != size:
                raise ChunkError(f"{where} does not match the index")
            records = view[_CHUNK_TAIL.size :]
            if crc and zlib.crc32(records) != crc:
                raise ChunkError(f"{where}: checksum mismatch")
            found = []
            pos = 0
            while pos < size:
                if pos + _RECORD.size > size:
                    raise ChunkError(f"{where}: record cut")
                op, length = _RECORD.unpack_from(records, pos)
                body = pos + _RECORD.size
                pos = body + length
                if pos > size:
                    raise ChunkError(f"{where}: record cut")
                if op != _MESSAGE_OP:
                    continue
                if length < _MESSAGE.size:
                    raise ChunkError(f"{where}: message cut")
                channel, _, t, _ = _MESSAGE.unpack_from(records, body)
                if lo <= t < hi and channel in channels:
                    found.append((t, body + _MESSAGE.size, pos, channel))
            found.sort(key=_log_time)  # stable, as rosbags sorts a chunk
            for t, a, b, channel in found:
                topic, msgtype = channels[channel]
                raw = records[a:b]
                yield topic, msgtype, t, raw if msgtype in VIEW_TYPES else bytes(raw)


def _log_time(item: tuple[int, int, int, int]) -> int:
    return item[0]
