"""Reading robot bags with rosbags (no ROS): discovery, fingerprints, topics and stamped events.

rosbags opens and indexes every bag (ROS 1 through its AnyReader, rosbag2 through its rosbag2
Reader, with AnyReader's message store only where a message needs it); only the messages of
uncompressed mcap chunks are read past it, the images without its copies (``mcap_chunks``).

Every failure of the reader (truncated file, corrupt database, unknown type, ...) becomes a
BagError naming the bag and, where known, the topic, so the user knows which file to look at.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import importlib
import sqlite3
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from lompo_core.data import mcap_chunks
from lompo_core.errors import BagError, LompoError

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
TWIST_TYPES = ("geometry_msgs/msg/TwistStamped", "geometry_msgs/msg/Twist")
ARRAY_TYPES = ("std_msgs/msg/Float64MultiArray", "std_msgs/msg/Float32MultiArray")
ACTION_TYPES = TWIST_TYPES + ARRAY_TYPES
REWARD_TYPES = ("std_msgs/msg/Float32", "std_msgs/msg/Float64")
SUCCESS_TYPES = ("std_msgs/msg/Bool",)
TWIST_DEFAULT = ("linear.x", "linear.y", "linear.z")
ROSBAG2_STORAGE = (".mcap", ".db3")

# Errors rosbags and its storage backends raise on a damaged bag (they do not share a base class).
READ_ERRORS: tuple[type[BaseException], ...] = (
    struct.error,  # our own CDR parsers on a message cut short
    sqlite3.Error,
    EOFError,
    OSError,
    IndexError,
    ValueError,
    TypeError,
    AttributeError,
)


def _rosbags_errors() -> tuple[type[BaseException], ...]:
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as Reader1Error
    from rosbags.rosbag2 import ReaderError as Reader2Error
    from rosbags.serde import SerdeError
    from rosbags.typesys import TypesysError

    return (
        AnyReaderError,
        Reader1Error,
        Reader2Error,
        SerdeError,
        TypesysError,
        *_storage_errors(),
        *READ_ERRORS,
    )


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What rosbags' storage backends raise on damaged data: apsw (sqlite3) and zstd."""
    found: list[type[BaseException]] = []
    with contextlib.suppress(ImportError):
        import apsw

        found.append(apsw.Error)
    for module in ("compression.zstd", "backports.zstd", "zstandard"):
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(module).ZstdError)
    return tuple(found)


def _is_lz4_error(exc: BaseException) -> bool:
    # lz4.frame raises a bare RuntimeError ("LZ4F_decompress failed ...") on a damaged chunk.
    return isinstance(exc, RuntimeError) and str(exc).startswith("LZ4")


def bag_format(path: Path) -> str:
    if path.is_file():
        return "rosbag1"
    storage = sorted({p.suffix for p in path.iterdir() if p.suffix in ROSBAG2_STORAGE})
    return "rosbag2-" + ("+".join(s[1:] for s in storage) or "unknown")


def find_bags(paths: list[Path]) -> list[Path]:
    """Bags named or found under the given paths: rosbag2 folders and ROS 1 ``.bag`` files."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise BagError(f"{path}: no such file or folder")
        if path.is_file():
            if path.suffix != ".bag":
                raise BagError(
                    f"{path}: not a bag (a ROS 1 .bag file or a rosbag2 folder with metadata.yaml)"
                )
            found.append(path)
            continue
        found.extend(_walk(path))
    if not found:
        raise BagError(
            f"{', '.join(map(str, paths))}: no bags found (rosbag2 folders or .bag files)"
        )
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return [Path(p) for p in unique]


def _walk(folder: Path) -> Iterator[Path]:
    if (folder / "metadata.yaml").is_file():
        yield folder
        return
    entries = sorted(folder.iterdir())
    if any(p.suffix in ROSBAG2_STORAGE and p.is_file() for p in entries):
        raise BagError(
            f"{folder}: rosbag2 storage without metadata.yaml (an interrupted recording?); "
            "run `ros2 bag reindex` on it first"
        )
    for entry in entries:
        if entry.name.startswith("."):
            continue  # unfinished recordings and our own temporary folders
        if entry.is_dir():
            yield from _walk(entry)
        elif entry.suffix == ".bag":
            yield entry


def bag_files(bag: Path) -> list[Path]:
    return [bag] if bag.is_file() else sorted(p for p in bag.rglob("*") if p.is_file())


def bag_size(bag: Path) -> int:
    return sum(p.stat().st_size for p in bag_files(bag))


FINGERPRINT = "xxh3_128-sampled"
SAMPLE_BLOCK = 1 << 16  # bytes per sampled block
SAMPLE_BLOCKS = 64  # blocks per file, evenly spaced, the first and the last included


def bag_fingerprint(bag: Path) -> str:
    """``"xxh3_128-sampled:<hex>"``: the recording's identity for ``--append``, in milliseconds.

    Hashes every file's name and size, small files (metadata.yaml) whole, and of a large file
    64 evenly spaced 64 KiB blocks, its first and last included (4 MiB at most per file). A
    recording's first block holds its start stamps and its last the index, so two recordings
    never share all of them; a copy of a bag keeps them. Hashing every byte instead cost more
    than reading and deserialising the bag (sha256 of a 553 MB bag: 0.35 s; rosbags: 0.10 s).
    """
    h = xxhash.xxh3_128()
    for p in bag_files(bag):
        size = p.stat().st_size
        h.update(f"{p.name}\0{size}\0".encode())
        with open(p, "rb") as f:
            if size <= SAMPLE_BLOCK * SAMPLE_BLOCKS:
                h.update(f.read())
                continue
            last = size - SAMPLE_BLOCK
            for i in range(SAMPLE_BLOCKS):
                f.seek(last * i // (SAMPLE_BLOCKS - 1))
                h.update(f.read(SAMPLE_BLOCK))
    return f"{FINGERPRINT}:{h.hexdigest()}"


def bag_sha256(bag: Path) -> str:
    """sha256 over every file's name and bytes: how lompo 0.1.0 identified a source."""
    h = hashlib.sha256()
    for p in bag_files(bag):
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def source_identity(source: dict[str, Any]) -> tuple[str, str]:
    """("fingerprint", value) of a meta.json source, or ("sha256", hex) for one of lompo 0.1.0."""
    if "fingerprint" in source:
        return "fingerprint", source["fingerprint"]
    return "sha256", source["sha256"]


@dataclass(frozen=True)
class TopicSummary:
    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagSummary:
    """What the converter checks before it reads a bag: topics, counts and time span."""

    path: Path
    distro: str
    topics: dict[str, TopicSummary]
    message_count: int
    start: int  # first log time, ns
    stop: int  # last log time + 1 ns
    defined: frozenset[str]  # the topics' types that have a definition (bag's or distro's)

    def require(self, topic: str, types: tuple[str, ...], role: str, flag: str) -> str:
        """The type of ``topic``; BagError when absent, empty, of a wrong or undefined type."""
        topics = self.topics
        if self.message_count == 0:
            raise BagError(f"{self.path}: the bag is empty (no messages)")
        if topic not in topics:
            have = ", ".join(f"{t.name} [{t.msgtype}]" for t in topics.values()) or "none"
            raise BagError(
                f"{self.path}: no {role} topic {topic!r} (set it with {flag}); topics: {have}"
            )
        info = topics[topic]
        if info.msgtype not in types:
            raise BagError(
                f"{self.path}: {role} topic {topic!r} has type {info.msgtype}; "
                f"supported: {', '.join(types)}"
            )
        if info.msgtype not in self.defined:
            raise BagError(
                f"{self.path}: topic {topic!r}: type {info.msgtype} has no definition in the bag "
                f"(and the bag holds definitions for other types, so the {self.distro} ones "
                "are not used)"
            )
        if info.count == 0:
            raise BagError(f"{self.path}: {role} topic {topic!r} has no messages")
        return info.msgtype


class _DistroDefinitions:
    """A distribution's message definitions, built only for a bag that stores none of its own.

    rosbags' AnyReader reads its default typestore's ``fielddefs`` only for such a bag (rosbag2
    sqlite3 bags before Iron). Building rosbags' whole store for a distribution takes ~200 ms,
    which a bag with its own definitions (mcap, Iron and later, ROS 1) never needs.
    """

    def __init__(self, distro: str) -> None:
        self.distro = distro

    @property
    def fielddefs(self) -> Any:
        from lompo_core import messages as m

        return m.typestore(self.distro).fielddefs


class _Rosbag2Reader:
    """rosbags' rosbag2 Reader behind the part of AnyReader's interface that Bag uses, with
    AnyReader's message store opened only once a message needs it.

    AnyReader parses every definition a bag stores and generates classes for them at each open,
    about half of opening a bag, and the types read straight from their CDR bytes (``_FAST_CDR``)
    never use them; every worker opens every bag it reads (a worker's open of a 600-frame mcap
    bag: 29-35 -> 18-25 ms). Another type, or a bag whose stored definitions do not name a
    topic's type, opens an AnyReader beside this one, once; AnyReader's checks of the stored
    definitions (one that does not parse, a hash mismatch) come with it.
    """

    is2 = True

    def __init__(self, path: Path, default: Any) -> None:
        from rosbags.rosbag2 import Reader

        self.path, self.default = path, default
        self.readers = [Reader(path)]
        self.stack: contextlib.ExitStack | None = None
        self._store: Any = None  # an open AnyReader, once needed

    def open(self) -> None:
        stack = contextlib.ExitStack()
        stack.enter_context(self.readers[0])
        self.stack = stack

    def close(self) -> None:
        stack, self.stack = self.stack, None
        if stack is not None:
            stack.close()

    @property
    def topics(self) -> dict[str, Any]:
        return self.readers[0].topics

    @property
    def connections(self) -> list[Any]:
        return self.readers[0].connections

    @property
    def message_count(self) -> int:
        return self.readers[0].message_count

    @property
    def start_time(self) -> int:
        return self.readers[0].start_time

    @property
    def end_time(self) -> int:
        return self.readers[0].end_time

    def messages(self, connections: Any = (), start: Any = None, stop: Any = None) -> Any:
        return self.readers[0].messages(connections=connections, start=start, stop=stop)

    @property
    def typestore(self) -> Any:
        if self._store is None:
            from rosbags.highlevel import AnyReader

            assert self.stack is not None, "the bag is not open"
            store = AnyReader([self.path], default_typestore=self.default)
            store.open()
            self.stack.callback(store.close)
            self._store = store
        return self._store.typestore

    def deserialize(self, raw: Any, msgtype: str) -> Any:
        return self.typestore.deserialize_cdr(raw, msgtype)

    def defined(self, msgtypes: set[str]) -> set[str]:
        """Those of ``msgtypes`` that the bag defines: a type with a stored definition of its
        own (not parsed here), one that AnyReader's store finds inside another's definition, or,
        for a bag that stores none, the distribution's."""
        from rosbags.interfaces import MessageDefinitionFormat

        stored = {
            c.msgtype for c in self.connections if c.msgdef.format != MessageDefinitionFormat.NONE
        }
        if not stored:
            return {t for t in msgtypes if t in self.default.fielddefs}
        found = msgtypes & stored
        if msgtypes - found:  # perhaps defined inside another type's definition
            types = self.typestore.types
            found |= {t for t in msgtypes - found if t in types}
        return found


class Bag:
    """An open bag: ``with Bag(path, distro) as bag: ...``. Wraps rosbags' AnyReader (ROS 1) or
    its rosbag2 Reader."""

    def __init__(self, path: Path, distro: str = "jazzy") -> None:
        from lompo_core import messages as m

        self.path = Path(path)
        self._errors = _rosbags_errors()
        self._distro = distro
        self._default = _DistroDefinitions(distro if distro in m.DISTROS else "jazzy")
        self.reader: Any = None

    def __enter__(self) -> Bag:
        from rosbags.highlevel import AnyReader

        try:
            if self.path.suffix == ".bag":  # ROS 1
                self.reader = AnyReader([self.path], default_typestore=self._default)
            else:
                self.reader = _Rosbag2Reader(self.path, self._default)
            self.reader.open()
        except self._errors as exc:
            self.reader = None
            raise BagError(f"{self.path}: cannot open bag ({_describe(exc)})") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self.reader is not None and self.reader.stack is not None:
            # Closing a damaged bag must not hide the error that brought us here.
            with contextlib.suppress(*self._errors):
                self.reader.close()

    @property
    def topics(self) -> dict[str, TopicSummary]:
        return {
            name: TopicSummary(name, info.msgtype or "(several types)", info.msgcount)
            for name, info in self.reader.topics.items()
        }

    def summary(self) -> BagSummary:
        topics = self.topics
        msgtypes = {info.msgtype for info in self.reader.topics.values() if info.msgtype}
        try:
            if isinstance(self.reader, _Rosbag2Reader):
                defined = self.reader.defined(msgtypes)
            else:
                defined = {t for t in msgtypes if t in self.reader.typestore.types}
        except self._errors as exc:
            raise BagError(
                f"{self.path}: cannot read the bag's message definitions ({_describe(exc)})"
            ) from exc
        return BagSummary(
            path=self.path,
            distro=self._distro,
            topics=topics,
            message_count=int(self.reader.message_count),
            start=int(self.reader.start_time),
            stop=int(self.reader.end_time) + 1,
            defined=frozenset(defined),
        )

    def raw_messages(
        self, topics: list[str], start: int | None = None, stop: int | None = None
    ) -> Iterator[tuple[str, str, int, Any]]:
        """(topic, msgtype, log time ns, raw) in rosbags' order, logged in [start, stop).

        An image's raw may be a memoryview valid only until the next message is requested
        (uncompressed mcap chunks are read without rosbags' copies: ``mcap_chunks``).
        """
        it = mcap_chunks.messages(self.reader, topics, start, stop)
        if it is None:
            conns = [c for c in self.reader.connections if c.topic in topics]
            it = (
                (c.topic, c.msgtype, t, raw)
                for c, t, raw in self.reader.messages(connections=conns, start=start, stop=stop)
            )
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except (*self._errors, RuntimeError) as exc:
                if isinstance(exc, RuntimeError) and not _is_lz4_error(exc):
                    raise
                raise BagError(
                    f"{self.path}: the bag is truncated or corrupt, reading stopped "
                    f"({_describe(exc)})"
                ) from exc
            yield item

    def deserialize(self, raw: Any, msgtype: str, topic: str) -> Any:
        try:
            parse = _FAST_CDR.get(msgtype) if self.reader.is2 else None
            msg = parse(raw) if parse is not None else None
            return msg if msg is not None else self.reader.deserialize(raw, msgtype)
        except self._errors as exc:
            raise BagError(
                f"{self.path}: topic {topic!r}: cannot deserialise a {msgtype} ({_describe(exc)})"
            ) from exc


@dataclass(frozen=True, slots=True)
class _Stamp:
    sec: int
    nanosec: int


@dataclass(frozen=True, slots=True)
class _Header:
    stamp: _Stamp
    frame_id: str


@dataclass(frozen=True, slots=True)
class RawImage:
    """A sensor_msgs/msg/Image read straight from its CDR bytes; ``data`` is a view of them."""

    header: _Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray


_U32, _TWO_U32, _STAMP = struct.Struct("<I"), struct.Struct("<II"), struct.Struct("<iI")


def _cdr_le(raw: Any) -> memoryview | None:
    """The message's bytes if little-endian CDR (what ROS 2 records); None for rosbags to read."""
    buf = memoryview(raw).cast("B")
    return buf if len(buf) >= 4 and buf[0] == 0 and buf[1] == 1 else None


def _cdr_string(buf: memoryview, pos: int) -> tuple[str, int]:
    """The string at ``pos`` and the position after it (its length counts the closing NUL)."""
    (n,) = _U32.unpack_from(buf, pos)
    end = pos + 4 + n
    if end > len(buf):
        raise ValueError(f"string of {n} bytes runs past the message's {len(buf)}")
    return bytes(buf[pos + 4 : end - 1 if n else end]).decode(), end


def _cdr_header(buf: memoryview) -> tuple[_Header, int]:
    """A std_msgs/Header at the start of a message, and the position after it."""
    sec, nanosec = _STAMP.unpack_from(buf, 4)
    frame_id, pos = _cdr_string(buf, 12)
    return _Header(_Stamp(sec, nanosec), frame_id), pos


def _cdr_bytes(buf: memoryview, pos: int, count: int) -> np.ndarray:
    """``count`` bytes of image data at ``pos``, a view of the message."""
    if pos + count > len(buf):
        raise ValueError(f"image data of {count} bytes runs past the message's {len(buf)}")
    return np.frombuffer(buf, np.uint8, count, pos)


def parse_image_cdr(raw: Any) -> RawImage | None:
    """A little-endian CDR sensor_msgs/msg/Image (what ROS 2 records), or None for another byte
    order (then rosbags deserialises it). rosbags' generated deserialiser spends ~50 us a frame on
    what is a fixed layout; reading its few header fields here takes ~5 us. The pixels stay a view
    of ``raw``. tests/data/test_bagread.py checks it against rosbags field by field.
    """
    buf = _cdr_le(raw)
    if buf is None:
        return None
    # Fields align to their size counted from the end of the 4-byte encapsulation header, which
    # is itself 4-aligned: absolute positions align the same way.
    header, pos = _cdr_header(buf)
    pos = (pos + 3) & ~3
    height, width = _TWO_U32.unpack_from(buf, pos)
    encoding, pos = _cdr_string(buf, pos + 8)
    is_bigendian = buf[pos]
    pos = (pos + 1 + 3) & ~3
    step, count = _TWO_U32.unpack_from(buf, pos)
    data = _cdr_bytes(buf, pos + 8, count)
    return RawImage(header, height, width, encoding, is_bigendian, step, data)


@dataclass(frozen=True, slots=True)
class RawCompressedImage:
    """A sensor_msgs/msg/CompressedImage read straight from its CDR bytes; ``data`` is a view."""

    header: _Header
    format: str
    data: np.ndarray


def parse_compressed_image_cdr(raw: Any) -> RawCompressedImage | None:
    """Like ``parse_image_cdr``, for a jpeg or png frame: header, format, then the bytes."""
    buf = _cdr_le(raw)
    if buf is None:
        return None
    header, pos = _cdr_header(buf)
    fmt, pos = _cdr_string(buf, (pos + 3) & ~3)
    pos = (pos + 3) & ~3
    (count,) = _U32.unpack_from(buf, pos)
    return RawCompressedImage(header, fmt, _cdr_bytes(buf, pos + 4, count))


@dataclass(frozen=True, slots=True)
class _Vector3:
    x: float
    y: float
    z: float


@dataclass(frozen=True, slots=True)
class RawTwist:
    linear: _Vector3
    angular: _Vector3


@dataclass(frozen=True, slots=True)
class RawTwistStamped:
    header: _Header
    twist: RawTwist


@dataclass(frozen=True, slots=True)
class RawValue:
    """std_msgs Float32, Float64 or Bool."""

    data: float | bool


_SIX_F64, _F32, _F64 = struct.Struct("<6d"), struct.Struct("<f"), struct.Struct("<d")


def _twist_at(buf: memoryview, pos: int) -> RawTwist:
    v = _SIX_F64.unpack_from(buf, pos)
    return RawTwist(_Vector3(*v[:3]), _Vector3(*v[3:]))


def parse_twist_cdr(raw: Any) -> RawTwist | None:
    buf = _cdr_le(raw)
    return None if buf is None else _twist_at(buf, 4)


def parse_twist_stamped_cdr(raw: Any) -> RawTwistStamped | None:
    buf = _cdr_le(raw)
    if buf is None:
        return None
    header, pos = _cdr_header(buf)
    pos = 4 + ((pos - 4 + 7) & ~7)  # doubles align to 8 from the end of the 4-byte header
    return RawTwistStamped(header, _twist_at(buf, pos))


@dataclass(frozen=True, slots=True)
class RawArray:
    """std_msgs Float32MultiArray or Float64MultiArray: the values (a view; the layout, which no
    action reads, is skipped)."""

    data: np.ndarray


def _array_parser(dtype: type) -> Any:
    size = np.dtype(dtype).itemsize

    def parse(raw: Any) -> RawArray | None:
        buf = _cdr_le(raw)
        if buf is None:
            return None
        (dims,) = _U32.unpack_from(buf, 4)
        pos = 8
        for _ in range(dims):  # label, then size and stride
            _, pos = _cdr_string(buf, pos)
            pos = ((pos + 3) & ~3) + 8
        pos = ((pos + 3) & ~3) + 4  # data_offset
        (count,) = _U32.unpack_from(buf, pos)
        if not count:  # no values, no padding before them
            return RawArray(np.zeros(0, dtype))
        pos = 4 + ((pos + size - 1) & ~(size - 1))  # aligned from the header's end (pos + 4 - 4)
        if pos + count * size > len(buf):
            raise ValueError(f"{count} values run past the message's {len(buf)} bytes")
        return RawArray(np.frombuffer(buf, dtype, count, pos))

    return parse


def _scalar_parser(codec: struct.Struct, kind: type) -> Any:
    def parse(raw: Any) -> RawValue | None:
        buf = _cdr_le(raw)
        return None if buf is None else RawValue(kind(codec.unpack_from(buf, 4)[0]))

    return parse


# The small messages of every step, read directly from little-endian CDR (what ROS 2 records).
# rosbags builds a typestore per bag from the definitions it stores and generates each type's
# deserialiser on first use: for a bag of a hundred frames that code generation cost more than
# reading it (a third of converting `lompo collect` bags). tests/data/test_bagread.py checks
# every parser against rosbags.
_FAST_CDR: dict[str, Any] = {
    IMAGE_TYPES[0]: parse_image_cdr,
    IMAGE_TYPES[1]: parse_compressed_image_cdr,
    TWIST_TYPES[0]: parse_twist_stamped_cdr,
    TWIST_TYPES[1]: parse_twist_cdr,
    REWARD_TYPES[0]: _scalar_parser(_F32, float),
    REWARD_TYPES[1]: _scalar_parser(_F64, float),
    SUCCESS_TYPES[0]: _scalar_parser(struct.Struct("<B"), bool),
    ARRAY_TYPES[0]: _array_parser(np.float64),
    ARRAY_TYPES[1]: _array_parser(np.float32),
}


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or "no details"
    return f"{type(exc).__name__}: {text}"[:300]


def header_stamp(msg: Any, log_time: int) -> int:
    """The header stamp in ns, or the bag's log time for messages without one (or unset)."""
    hdr = getattr(msg, "header", None)
    if hdr is None:
        return log_time
    stamp = int(hdr.stamp.sec) * 1_000_000_000 + int(hdr.stamp.nanosec)
    return stamp if stamp > 0 else log_time


def action_reader(
    msgtype: str, fields: tuple[str, ...] | None
) -> tuple[Callable[[Any], np.ndarray], tuple[str, ...] | None]:
    """A function message -> float64 vector, and the action's names (None: known on first use)."""
    if msgtype in TWIST_TYPES:
        names = fields or TWIST_DEFAULT
        paths = []
        for name in names:
            parts = name.split(".")
            if len(parts) != 2 or parts[0] not in ("linear", "angular") or parts[1] not in "xyz":
                raise LompoError(
                    f"action field {name!r} is not a Twist field (linear.x ... angular.z)"
                )
            paths.append((parts[0], parts[1]))

        def twist(msg: Any) -> np.ndarray:
            tw = getattr(msg, "twist", msg)
            return np.array([getattr(getattr(tw, a), b) for a, b in paths], np.float64)

        return twist, tuple(names)
    index = None if fields is None else [array_index(f) for f in fields]

    def array(msg: Any) -> np.ndarray:
        data = np.asarray(msg.data, np.float64)
        return data if index is None else data[index]

    names = None if index is None else tuple(f"data[{i}]" for i in index)
    return array, names


def array_index(field_name: str) -> int:
    text = str(field_name).removeprefix("data[").removesuffix("]")
    try:
        return int(text)
    except ValueError:
        raise LompoError(
            f"action field {field_name!r}: a Float*MultiArray field is an index (0, 1, ...)"
        ) from None


class StampOrder:
    """Restores header-stamp order from the bag's arrival order, with a bounded look-back.

    A message may arrive up to ``max_latency`` (bag time) after its stamp; within one topic the
    stamps must not go backwards. Either violation is a BagError naming the topic.
    """

    def __init__(self, bag: Path, max_latency_ns: int, capacity: int = 4096) -> None:
        self.bag, self.latency, self.capacity = bag, max_latency_ns, capacity
        self._heap: list[tuple[int, int, int, str, Any]] = []
        self._seq = 0
        self._released = -(2**63)
        self._last: dict[str, int] = {}

    def push(self, topic: str, stamp: int, log_time: int, priority: int, item: Any) -> None:
        prev = self._last.get(topic)
        if prev is not None and stamp < prev:
            raise BagError(
                f"{self.bag}: topic {topic!r}: header stamps out of order "
                f"({stamp} ns after {prev} ns, {(prev - stamp) / 1e6:.3f} ms back)"
            )
        self._last[topic] = stamp
        if stamp < self._released:
            raise BagError(
                f"{self.bag}: topic {topic!r}: a message stamped {stamp} ns arrived after "
                f"{self._released} ns had been processed: more than max_latency_s "
                f"({self.latency / 1e9:g} s) late; its stamp is {(stamp - log_time) / 1e9:+.3g} s "
                "from its log time: if this topic's clock is not the bag's (a camera clock "
                "ahead, sim time recorded without use_sim_time), pass --stamps log"
            )
        self._seq += 1
        heapq.heappush(self._heap, (stamp, priority, self._seq, topic, item))
        self._log_time = log_time

    def pop_ready(self, log_time: int) -> Iterator[tuple[int, str, Any]]:
        heap = self._heap
        while heap and (heap[0][0] <= log_time - self.latency or len(heap) > self.capacity):
            stamp, _, _, topic, item = heapq.heappop(heap)
            self._released = stamp
            yield stamp, topic, item

    def pop_all(self) -> Iterator[tuple[int, str, Any]]:
        while self._heap:
            stamp, _, _, topic, item = heapq.heappop(self._heap)
            self._released = stamp
            yield stamp, topic, item
