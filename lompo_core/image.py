"""The one image preprocessing shared by the converter and the policy node.

Any ROS image (``sensor_msgs/Image`` in rgb8, bgr8, rgba8, bgra8, mono8, mono16, or a
``sensor_msgs/CompressedImage`` in jpeg or png) becomes a ``size x size`` RGB uint8 array: decode,
optional crop (fractions of the frame, so the same crop serves any camera resolution), then an
area resize. The dataset records ``Preprocessing.as_dict()`` and the exported policy refuses to run
with a different one, so training and serving always see the same pixels.

Every message is untrusted: sizes are bounded (``ImageLimits``) against the message's own fields,
its data's length and a JPEG's or PNG's header before anything is allocated or decoded, and a file
that is truncated, corrupt or of another format than its label is refused with one line (an
``ImageError``) rather than half-decoded.

numpy and OpenCV only: this module runs on the robot computer, where torch is not installed.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import zlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from lompo_core.errors import ImageError

# encoding -> (channels, numpy dtype, conversion to RGB or None when already RGB)
_RAW_ENCODINGS: dict[str, tuple[int, np.dtype, int | None]] = {
    "rgb8": (3, np.dtype(np.uint8), None),
    "bgr8": (3, np.dtype(np.uint8), cv2.COLOR_BGR2RGB),
    "rgba8": (4, np.dtype(np.uint8), cv2.COLOR_RGBA2RGB),
    "bgra8": (4, np.dtype(np.uint8), cv2.COLOR_BGRA2RGB),
    "mono8": (1, np.dtype(np.uint8), cv2.COLOR_GRAY2RGB),
    "8uc1": (1, np.dtype(np.uint8), cv2.COLOR_GRAY2RGB),
    "8uc3": (3, np.dtype(np.uint8), cv2.COLOR_BGR2RGB),  # OpenCV's own order
    "mono16": (1, np.dtype(np.uint16), cv2.COLOR_GRAY2RGB),
    "16uc1": (1, np.dtype(np.uint16), cv2.COLOR_GRAY2RGB),
}
SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
SUPPORTED_FORMATS = ("jpeg", "png")

# Hard caps on any image, whatever the policy: 4096x4096, 16 Mpx (a 16 Mpx rgb8 frame is 48 MB).
HARD_MAX_SIDE = 4096
HARD_MAX_PIXELS = 4096 * 4096
# A policy trained on a W x H camera accepts frames up to this many times W and H (a camera
# replaced by a bigger one still works, the crop being in fractions); one without a recorded
# camera accepts up to DEFAULT_LIMITS.
CAMERA_HEADROOM = 8
MAX_MODEL_SIZE = 1024  # the model's input side; the reference uses 64


def _crop_value(v: Any) -> float:
    if isinstance(v, (bool, str, bytes)):
        raise TypeError(f"not a number: {v!r}")
    return float(v)


@dataclass(frozen=True)
class Preprocessing:
    """Crop (fractions x0, y0, x1, y1 of width and height), then area resize to size x size."""

    crop: tuple[float, float, float, float] | None = None
    size: int = 64

    def __post_init__(self) -> None:
        if (
            not isinstance(self.size, int)
            or isinstance(self.size, bool)
            or not 1 <= self.size <= MAX_MODEL_SIZE
        ):
            raise ImageError(
                f"preprocessing size must be an integer in [1, {MAX_MODEL_SIZE}], got {self.size!r}"
            )
        if self.crop is not None:
            try:
                crop = tuple(_crop_value(v) for v in self.crop)
            except (TypeError, ValueError):
                raise ImageError(
                    f"preprocessing crop must be 4 numbers, got {self.crop!r}"
                ) from None
            if len(crop) != 4:
                raise ImageError(f"preprocessing crop must be (x0, y0, x1, y1), got {self.crop!r}")
            x0, y0, x1, y1 = crop
            if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
                raise ImageError(
                    f"preprocessing crop {crop} must satisfy 0 <= x0 < x1 <= 1 and "
                    "0 <= y0 < y1 <= 1 (fractions of the image width and height)"
                )
            # Frozen: normalise through object.__setattr__ so equal crops compare equal.
            object.__setattr__(self, "crop", crop)

    def as_dict(self) -> dict[str, Any]:
        return {
            "crop": None if self.crop is None else list(self.crop),
            "size": self.size,
            "resize": "area",
            "color": "rgb",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        if not isinstance(d, dict):
            raise ImageError(f"preprocessing must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {"crop", "size", "resize", "color"}
        if unknown:
            raise ImageError(f"preprocessing: unknown field(s) {', '.join(sorted(unknown))}")
        # The fixed fields are recorded so that a reader sees the whole recipe; refuse others.
        if d.get("resize", "area") != "area" or d.get("color", "rgb") != "rgb":
            raise ImageError(
                f"preprocessing: resize {d.get('resize')!r} / color {d.get('color')!r} "
                "not supported (this lompo does 'area' / 'rgb')"
            )
        crop = d.get("crop")
        if crop is not None and not isinstance(crop, (list, tuple)):
            raise ImageError(f"preprocessing crop must be 4 numbers or null, got {crop!r}")
        return cls(crop=None if crop is None else tuple(crop), size=d.get("size", 64))

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The crop in pixels (x0, y0, x1, y1) for a frame of this size; never empty."""
        if self.crop is None:
            return 0, 0, width, height
        x0, y0, x1, y1 = self.crop
        px0, px1 = int(round(x0 * width)), int(round(x1 * width))
        py0, py1 = int(round(y0 * height)), int(round(y1 * height))
        return px0, py0, max(px1, px0 + 1), max(py1, py0 + 1)


@dataclass(frozen=True)
class ImageLimits:
    """Size caps checked against a message's own fields and headers before anything is allocated.

    A camera message is untrusted input: its ``height``, ``width`` and ``step``, and the size a
    JPEG or PNG header claims, are checked against these caps before a byte is copied or a pixel
    decoded, so a 30-byte message or an 875 KB PNG cannot make the decoder allocate gigabytes.
    """

    max_width: int = HARD_MAX_SIDE
    max_height: int = HARD_MAX_SIDE
    max_pixels: int = HARD_MAX_PIXELS

    def __post_init__(self) -> None:
        for name in ("max_width", "max_height", "max_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ImageError(f"image limit {name} must be a positive integer, got {value!r}")
        # Never above the hard caps, whatever a sidecar or a caller asks for.
        object.__setattr__(self, "max_width", min(self.max_width, HARD_MAX_SIDE))
        object.__setattr__(self, "max_height", min(self.max_height, HARD_MAX_SIDE))
        object.__setattr__(self, "max_pixels", min(self.max_pixels, HARD_MAX_PIXELS))

    @classmethod
    def for_camera(cls, width: int, height: int, headroom: int = CAMERA_HEADROOM) -> ImageLimits:
        """Caps for a policy trained on a ``width x height`` camera: ``headroom`` x each side."""
        return cls(
            max_width=int(width) * headroom,
            max_height=int(height) * headroom,
            max_pixels=int(width) * int(height) * headroom * headroom,
        )

    def check(self, width: int, height: int, what: str) -> None:
        """Raise ImageError unless a ``width x height`` image of ``what`` is within the caps."""
        if width < 1 or height < 1:
            raise ImageError(f"empty image ({width}x{height}, {what})")
        if width > self.max_width or height > self.max_height or width * height > self.max_pixels:
            raise ImageError(
                f"{what} is {width}x{height}, over the limit {self.max_width}x{self.max_height} "
                f"({self.max_pixels / 1e6:.3g} Mpx)"
            )


HARD_LIMITS = ImageLimits()
DEFAULT_LIMITS = ImageLimits(max_width=2048, max_height=2048, max_pixels=2048 * 2048)


def _buffer(data: Any) -> np.ndarray:
    """The message's data as a flat uint8 array without copying where possible."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8)
    try:  # rclpy gives array.array('B') or a list of ints
        return np.frombuffer(memoryview(data), np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _data_len(data: Any) -> int:
    """Bytes in a message's data without converting it (a list of ints counts one per item)."""
    if isinstance(data, np.ndarray):
        return int(data.nbytes)
    try:
        return memoryview(data).nbytes
    except TypeError:
        return len(data)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    # 16-bit images keep their 8 most significant bits: a fixed, documented mapping (no
    # per-frame normalisation, which would make the same scene look different frame to frame).
    return (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else img


def _field_int(msg: Any, name: str) -> int:
    value = getattr(msg, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ImageError(f"image field {name} must be an integer, got {value!r}")
    return int(value)


def _decode_raw(msg: Any, limits: ImageLimits) -> np.ndarray:
    encoding = str(msg.encoding).strip().lower()
    if encoding not in _RAW_ENCODINGS:
        raise ImageError(
            f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    channels, dtype, conversion = _RAW_ENCODINGS[encoding]
    height, width, step = (_field_int(msg, k) for k in ("height", "width", "step"))
    # Every size is checked against the caps and against the data's own length before a byte is
    # copied: a 30-byte message claiming step 4294967295 must not allocate 4 GB.
    limits.check(width, height, f"{encoding} image")
    row = width * channels * dtype.itemsize
    if step < row:
        raise ImageError(f"image step {step} is shorter than a row ({width} x {encoding} = {row})")
    size = _data_len(msg.data)
    if step * height > size:
        raise ImageError(
            f"image data holds {size} bytes, {width}x{height} {encoding} with step {step} "
            f"needs {step * height} (step x height)"
        )
    buf = _buffer(msg.data)
    # Rows may carry padding beyond width*channels: slice it off, no copy.
    rows = buf[: step * height].reshape(height, step)[:, :row]
    if dtype.itemsize > 1:
        big = bool(getattr(msg, "is_bigendian", 0))
        rows = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if big else "<"))
        img = _to_uint8(rows.astype(dtype).reshape(height, width))
    else:
        img = rows.reshape(height, width, channels) if channels > 1 else rows
    if conversion is None:
        return img
    if channels == 1:
        img = np.ascontiguousarray(img.reshape(height, width))
    return cv2.cvtColor(img, conversion)


_REDUCED = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers; not DHT, JPG, DAC
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MAX_PNG_CHUNKS = 4096  # libpng and OpenCV write 8 KB IDAT chunks: 32 MB of PNG
# Other formats OpenCV would decode as readily, named in the refusal.
_OTHER_MAGIC = (
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF8", "GIF"),
    (b"RIFF", "RIFF/WebP"),
    (b"P1", "PBM"),
    (b"P2", "PGM"),
    (b"P3", "PPM"),
    (b"P4", "PBM"),
    (b"P5", "PGM"),
    (b"P6", "PPM"),
    (b"P7", "PAM"),
    (b"PF", "PFM"),
    (b"#?RADIANCE", "HDR"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)
_MAX_JPEG_SCANS = 100  # progressive files have about 10
_MAX_JPEG_SEGMENTS = 256  # APPn, DQT, DHT, ... before the frame header; real files have < 20
# libjpeg's warnings (JWRN_* in jerror.h): the decoder carries on and returns an image, so each
# one means the pixels are not the ones that were encoded.
_LIBJPEG_WARNING = re.compile(
    rb"^(Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters|"
    rb"Inconsistent progression sequence|Warning: unknown JFIF|Unknown Adobe color transform|"
    rb"Application transferred too many scanlines)[^\n]*",
    re.MULTILINE,
)
# libpng's errors: OpenCV returns no image, the line says why.
_LIBPNG_ERROR = re.compile(rb"^libpng error: [^\n]*", re.MULTILINE)


def _bytes_view(data: bytes | np.ndarray) -> memoryview:
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    return memoryview(data).cast("B")


def jpeg_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header without decoding it; None if there is none.

    The walk over the segments before the frame header is bounded (``_MAX_JPEG_SEGMENTS``), so
    a file of a million empty segments costs no more than a real one.
    """
    header = _jpeg_header(_bytes_view(data))
    return None if header is None else (header[0], header[1])


def _jpeg_header(b: memoryview) -> tuple[int, int, int] | None:
    """(width, height, components) from the first frame header (SOFn), or None."""
    if len(b) < 4 or b[0] != 0xFF or b[1] != 0xD8:
        return None
    i, segments = 2, 0
    while i + 10 <= len(b) and segments < _MAX_JPEG_SEGMENTS:
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            return (b[i + 7] << 8) | b[i + 8], (b[i + 5] << 8) | b[i + 6], b[i + 9]
        if marker in (0xD8, 0xD9, 0xDA) or 0xD0 <= marker <= 0xD7:
            return None  # another image, the end, or scan data before any frame header
        i += 2 + ((b[i + 2] << 8) | b[i + 3])  # skip the segment (APPn, EXIF, DQT, ...)
        segments += 1
    return None


def jpeg_reduction(width: int, height: int, p: Preprocessing) -> int:
    """The largest JPEG decode scale 1/r (r = 8, 4, 2) whose crop still covers the output size."""
    x0, y0, x1, y1 = p.crop_box(width, height)
    for r in (8, 4, 2):
        if (x1 - x0) // r >= p.size and (y1 - y0) // r >= p.size:
            return r
    return 1


def _png_header(b: memoryview) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk (which must come first); ImageError otherwise."""
    if len(b) < 33 or bytes(b[8:16]) != b"\x00\x00\x00\rIHDR":
        raise ImageError("PNG without an IHDR header chunk (truncated or not a PNG)")
    width = int.from_bytes(b[16:20], "big")
    height = int.from_bytes(b[20:24], "big")
    depth, colour = b[24], b[25]
    valid = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
    if depth not in valid.get(colour, ()):
        raise ImageError(f"PNG header has bit depth {depth} with colour type {colour}: not valid")
    return width, height


def _png_chunks(b: memoryview, what: str) -> None:
    """Walk a PNG's chunks: each within the file with its CRC right, IEND last, one frame.

    OpenCV's PNG reader allocates what a chunk's length field says before it reads the chunk, so
    one flipped bit in a length costs a gigabyte and seconds; the walk refuses that file first.
    """
    end, i, count = len(b), 8, 0
    while i < end:
        if i + 12 > end:
            raise ImageError(f"cannot decode {what}: truncated PNG (a chunk header at byte {i})")
        length = int.from_bytes(b[i : i + 4], "big")
        kind = bytes(b[i + 4 : i + 8])
        if length > end - i - 12:
            raise ImageError(
                f"cannot decode {what}: PNG chunk {kind!r} at byte {i} claims {length} bytes, "
                f"the file has {end - i - 12} left (truncated or corrupt)"
            )
        if not kind.isalpha() or not kind.isascii():
            raise ImageError(f"cannot decode {what}: corrupt PNG (chunk type {kind!r} at byte {i})")
        crc = int.from_bytes(b[i + 8 + length : i + 12 + length], "big")
        if zlib.crc32(b[i + 4 : i + 8 + length]) != crc:
            raise ImageError(f"cannot decode {what}: corrupt PNG (chunk {kind.decode()} CRC)")
        if kind in (b"acTL", b"fcTL", b"fdAT"):
            raise ImageError(f"cannot decode {what}: animated PNG (one frame expected)")
        count += 1
        if count > _MAX_PNG_CHUNKS:
            raise ImageError(f"cannot decode {what}: PNG with over {_MAX_PNG_CHUNKS} chunks")
        i += 12 + length
        if kind == b"IEND":
            if i != end:
                raise ImageError(f"cannot decode {what}: {end - i} bytes after the PNG's IEND")
            return
    raise ImageError(f"cannot decode {what}: truncated PNG (no IEND chunk at the end)")


def _sniff(b: memoryview) -> str:
    """What the data's magic bytes say it is: 'jpeg', 'png' or the name of another format."""
    head = bytes(b[:16])
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    for magic, name in _OTHER_MAGIC:
        if head.startswith(magic):
            return name
    return f"unknown data (starts with {head[:8].hex()})"


class _StderrCapture:
    """Reads what C code prints on file descriptor 2 during a call: libjpeg and libpng messages.

    OpenCV decodes a JPEG with libjpeg and lets libjpeg print its warnings ("Corrupt JPEG data:
    ...") on stderr, then returns the damaged image as if nothing happened. The only sign of the
    corruption is that line, so a strict decode points fd 2 at a private file for the call, reads
    it and hands any text that is not libjpeg's back to the real stderr. A lock serialises the
    decodes that capture; a line another thread prints in that window is passed on unchanged.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None

    def call(
        self, fn: Any, *args: Any, pattern: re.Pattern = _LIBJPEG_WARNING
    ) -> tuple[Any, bytes]:
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = os.memfd_create("lompo-jpeg-warnings", 0)
                saved = os.dup(2)
            except (OSError, AttributeError):  # no fd 2 or no memfd: decode without the check
                return fn(*args), b""
            try:
                with contextlib.suppress(AttributeError, OSError, ValueError):
                    sys.stderr.flush()
                try:
                    os.dup2(self._fd, 2)
                except OSError:
                    return fn(*args), b""
                try:
                    result = fn(*args)
                finally:
                    os.dup2(saved, 2)
            finally:
                os.close(saved)
            size = os.lseek(self._fd, 0, os.SEEK_CUR)
            text = os.pread(self._fd, size, 0) if size else b""
            if size:
                os.ftruncate(self._fd, 0)
                os.lseek(self._fd, 0, os.SEEK_SET)
        warnings = b"\n".join(m.group(0) for m in pattern.finditer(text))
        rest = pattern.sub(b"", text).strip(b"\n")
        if rest:
            with contextlib.suppress(OSError):
                os.write(2, rest + b"\n")
        return result, warnings


_CAPTURE = _StderrCapture()


def _decode_compressed(msg: Any, p: Preprocessing | None, limits: ImageLimits) -> np.ndarray:
    fmt = str(msg.format).lower()
    # image_transport writes e.g. "rgb8; jpeg compressed bgr8"; depth uses "compressedDepth".
    if "compresseddepth" in fmt or not any(f in fmt for f in ("jpeg", "jpg", "png")):
        raise ImageError(
            f"unsupported compressed image format {msg.format!r}; supported: jpeg, png"
        )
    label = "png" if "png" in fmt else "jpeg"
    size = _data_len(msg.data)
    if size == 0:
        raise ImageError(f"empty compressed image ({msg.format!r})")
    what = f"compressed image ({msg.format!r}, {size} bytes)"
    # Nothing beyond a copy-free view is made before the magic bytes and the header are checked.
    buf = _buffer(msg.data)
    b = _bytes_view(buf)
    kind = _sniff(b)
    if kind != label:
        raise ImageError(f"cannot decode {what}: the data is {kind}, not {label}")
    if label == "png":
        width, height = _png_header(b)
        limits.check(width, height, f"PNG header of {what}")
        _png_chunks(b, what)
        img, errors = _CAPTURE.call(cv2.imdecode, buf, cv2.IMREAD_UNCHANGED, pattern=_LIBPNG_ERROR)
        if img is None and errors:
            line = errors.decode("ascii", "replace").splitlines()[0]
            raise ImageError(f"cannot decode {what}: corrupt PNG ({line})")
        expected = (height, width)
    else:
        header = _jpeg_header(b)
        if header is None:
            raise ImageError(f"cannot decode {what}: JPEG without a frame header (SOF)")
        width, height, components = header
        limits.check(width, height, f"JPEG header of {what}")
        if components not in (1, 3, 4):
            raise ImageError(f"cannot decode {what}: JPEG with {components} colour components")
        end = len(b)
        while end > 2 and b[end - 1] == 0:  # some drivers pad their buffers with zeros
            end -= 1
        if end < 4 or b[end - 2] != 0xFF or b[end - 1] != 0xD9:
            raise ImageError(f"cannot decode {what}: truncated JPEG (no end-of-image marker)")
        # Each progressive scan is a pass over the whole image: bound their number (a marker
        # FF DA cannot occur inside entropy-coded data, where FF is always stuffed as FF 00).
        scans = bytes(b).count(b"\xff\xda")
        if scans > _MAX_JPEG_SCANS:
            raise ImageError(
                f"cannot decode {what}: JPEG with {scans} scans (over {_MAX_JPEG_SCANS})"
            )
        r = 1 if p is None else jpeg_reduction(width, height, p)
        flag = _REDUCED.get(r, cv2.IMREAD_UNCHANGED)
        img, warnings = _CAPTURE.call(cv2.imdecode, buf, flag)
        if warnings:
            line = warnings.decode("ascii", "replace").splitlines()[0]
            raise ImageError(f"cannot decode {what}: corrupt JPEG (libjpeg: {line})")
        expected = (-(-height // r), -(-width // r))
    if img is None:
        raise ImageError(f"cannot decode {what}")
    if img.shape[:2] != expected:
        raise ImageError(
            f"cannot decode {what}: decoded {img.shape[1]}x{img.shape[0]}, its header says "
            f"{expected[1]}x{expected[0]}"
        )
    img = _to_uint8(img)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    # OpenCV hands back the file's channels in the order it would write BGR. image_transport
    # names what was written: "...compressed bgr8" (and a plain "jpeg") was BGR, so it is
    # swapped; "...compressed rgb8" was an RGB buffer written as is, so it already is RGB.
    written_rgb = "compressed rgb" in fmt
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_RGBA2RGB if written_rgb else cv2.COLOR_BGRA2RGB)
    return img if written_rgb else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_image(
    msg: Any, p: Preprocessing | None = None, limits: ImageLimits | None = None
) -> np.ndarray:
    """A sensor_msgs Image or CompressedImage (rosbags or rclpy) -> [H, W, 3] uint8 RGB.

    The message is untrusted: its sizes are checked against ``limits`` (default: the hard caps,
    4096x4096 and 16 Mpx) and against its own data before anything is allocated, a JPEG or PNG
    against its header's size before it is decoded; bytes of another format than the one
    labelled, a truncated file and a JPEG libjpeg warns about are refused, not half-decoded.

    With ``p`` (the preprocessing that follows), a JPEG is decoded at 1/2, 1/4 or 1/8 scale where
    its crop still covers ``p.size`` (libjpeg's DCT-domain downscale, an average over 2x2 ... 8x8
    blocks): several times cheaper than decoding every pixel and averaging them afterwards.
    """
    limits = HARD_LIMITS if limits is None else limits
    try:
        if hasattr(msg, "encoding") and hasattr(msg, "step"):
            return _decode_raw(msg, limits)
        if hasattr(msg, "format") and hasattr(msg, "data"):
            return _decode_compressed(msg, p, limits)
    except ImageError:
        raise
    except (ValueError, TypeError, AttributeError, OverflowError, cv2.error) as exc:
        raise ImageError(f"cannot decode image: {type(exc).__name__}: {exc}") from None
    raise ImageError(f"not an image message: {type(msg).__name__}")


def check_array(img: np.ndarray, limits: ImageLimits | None = None) -> None:
    """Raise ImageError unless an image array's height and width are within ``limits``."""
    limits = HARD_LIMITS if limits is None else limits
    if img.ndim < 2:
        raise ImageError(f"expected an RGB image [H, W, 3] or mono [H, W], got shape {img.shape}")
    limits.check(int(img.shape[1]), int(img.shape[0]), "image array")


def preprocess(rgb: np.ndarray, p: Preprocessing) -> np.ndarray:
    """[H, W, 3] (or [H, W] mono) uint8 -> crop, then INTER_AREA resize -> [size, size, 3] uint8."""
    img = np.asarray(rgb)
    if img.dtype == np.uint16:
        img = _to_uint8(img)
    if img.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got dtype {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_GRAY2RGB)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ImageError(f"expected an RGB image [H, W, 3] or mono [H, W], got shape {img.shape}")
    height, width = img.shape[:2]
    x0, y0, x1, y1 = p.crop_box(width, height)
    img = img[y0:y1, x0:x1]
    return area_resize(img, p.size)


def area_resize(img: np.ndarray, size: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [size, size, 3] uint8 by averaging pixel areas (no aliasing).

    A frame that divides into whole blocks takes one INTER_AREA step (OpenCV's exact fast path).
    Otherwise, while it is at least twice the target on both axes and both sides are even, it is
    halved by exact 2x2 means (OpenCV's vectorised special case, ~10x cheaper per pixel than a
    general INTER_AREA), and INTER_AREA averages the rest: 0.17 ms instead of 0.9 ms for 640x480.
    Against a single INTER_AREA step this differs by the halvings' rounding and pixel grid (a few
    levels at sharp edges). Frames under twice the target, like the simulated camera's crop, take
    the single step only.
    """
    height, width = img.shape[:2]
    if height % size == 0 and width % size == 0:  # whole blocks: INTER_AREA's exact fast path
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    while height >= 2 * size and width >= 2 * size and height % 2 == 0 and width % 2 == 0:
        height, width = height // 2, width // 2
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def to_model_image(image_or_msg: Any, p: Preprocessing) -> np.ndarray:
    """Decode if a message, then preprocess: what the model sees, [size, size, 3] uint8 RGB."""
    if isinstance(image_or_msg, np.ndarray):
        return preprocess(image_or_msg, p)
    return preprocess(decode_image(image_or_msg, p), p)
