"""The shared image preprocessing: every encoding decodes to the same RGB, crop then area resize."""

from __future__ import annotations

import array
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from bagfactory import BagSpec, image_message

from lompo_core import messages as m
from lompo_core.errors import ImageError
from lompo_core.image import Preprocessing, decode_image, preprocess, to_model_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)
TS = m.typestore("jazzy")


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_decode_exactly_with_step_padding(encoding: str, pad: int) -> None:
    msg = image_message(TS, BagSpec(encoding=encoding, pad=pad), RGB, 1, ros1=False)
    assert msg.step == 40 * len(encoding.rstrip("8")) + pad
    out = decode_image(msg)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize("encoding", ["mono8", "mono16"])
def test_mono_becomes_grey_rgb(encoding: str) -> None:
    out = decode_image(image_message(TS, BagSpec(encoding=encoding, pad=3), RGB, 1, ros1=False))
    for c in range(3):  # mono16 keeps the high byte: the test wrote g*256+77
        np.testing.assert_array_equal(out[..., c], RGB[..., 1])


def test_mono16_big_endian() -> None:
    values = (RGB[..., 0].astype(np.uint16) << 8) | 5
    msg = SimpleNamespace(
        encoding="mono16",
        height=30,
        width=40,
        step=80,
        is_bigendian=1,
        data=values.astype(">u2").tobytes(),
    )
    np.testing.assert_array_equal(decode_image(msg)[..., 2], RGB[..., 0])


def test_png_is_lossless_and_jpeg_close() -> None:
    png = decode_image(image_message(TS, BagSpec(encoding="png"), RGB, 1, ros1=False))
    np.testing.assert_array_equal(png, RGB)
    smooth = cv2.GaussianBlur(RGB, (9, 9), 5)
    jpg = decode_image(image_message(TS, BagSpec(encoding="jpeg"), smooth, 1, ros1=False))
    assert np.abs(jpg.astype(int) - smooth).mean() < 4


def test_rclpy_style_messages_are_duck_typed() -> None:
    # rclpy gives array.array('B') for uint8[] and plain str fields.
    msg = SimpleNamespace(
        header=None,
        encoding="bgr8",
        height=30,
        width=40,
        step=120,
        is_bigendian=0,
        data=array.array("B", RGB[..., ::-1].tobytes()),
    )
    np.testing.assert_array_equal(decode_image(msg), RGB)
    listed = SimpleNamespace(**{**msg.__dict__, "data": list(RGB[..., ::-1].tobytes())})
    np.testing.assert_array_equal(decode_image(listed), RGB)
    ok, buf = cv2.imencode(".png", RGB[..., ::-1])
    comp = SimpleNamespace(format="rgb8; png compressed bgr8", data=array.array("B", buf.tobytes()))
    np.testing.assert_array_equal(decode_image(comp), RGB)


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_compressed_colour_order_follows_image_transports_format(codec: str) -> None:
    # image_transport writes "<encoding>; <codec> compressed <order>": a bgr order was encoded from
    # a BGR buffer (OpenCV's own order), an rgb order from the RGB buffer as it was.
    flat = np.zeros((16, 16, 3), np.uint8)
    flat[..., 0], flat[..., 2] = 200, 40  # red, not blue
    ext = ".png" if codec == "png" else ".jpg"
    written = {
        "bgr8": cv2.imencode(ext, flat[..., ::-1])[1],
        "rgb8": cv2.imencode(ext, flat)[1],
    }
    for label, order in [
        (codec, "bgr8"),
        (f"rgb8; {codec} compressed bgr8", "bgr8"),
        (f"bgr8; {codec} compressed bgr8", "bgr8"),
        (f"rgb8; {codec} compressed rgb8", "rgb8"),
    ]:
        msg = SimpleNamespace(format=label, data=array.array("B", written[order].tobytes()))
        got = decode_image(msg).astype(int)
        assert abs(got[..., 0].mean() - 200) < 4 and abs(got[..., 2].mean() - 40) < 4, label


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"encoding": "yuv422"}, "unsupported image encoding 'yuv422'"),
        ({"step": 100}, "step 100 is shorter than a row"),
        ({"height": 31}, "needs"),
        ({"width": 0}, "empty image"),
    ],
)
def test_bad_raw_images_are_named(change: dict, words: str) -> None:
    msg = image_message(TS, BagSpec(), RGB, 1, ros1=False)
    bad = SimpleNamespace(
        **{
            k: getattr(msg, k)
            for k in ("encoding", "height", "width", "step", "is_bigendian", "data")
        }
    )
    for k, v in change.items():
        setattr(bad, k, v)
    with pytest.raises(ImageError, match=words):
        decode_image(bad)


def test_bad_compressed_images_are_named() -> None:
    with pytest.raises(ImageError, match="unsupported compressed image format"):
        decode_image(SimpleNamespace(format="compressedDepth png", data=b"x"))
    with pytest.raises(ImageError, match="cannot decode"):
        decode_image(SimpleNamespace(format="jpeg", data=np.arange(50, dtype=np.uint8)))
    with pytest.raises(ImageError, match="not an image"):
        decode_image(SimpleNamespace(foo=1))


def test_crop_then_area_resize() -> None:
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, 320:] = 200  # right half bright
    p = Preprocessing(crop=(0.5, 0.0, 1.0, 0.5), size=64)
    out = preprocess(img, p)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out == 200).all()  # only the bright half remains
    full = preprocess(img, Preprocessing())
    np.testing.assert_array_equal(full, cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA))
    assert preprocess(img[..., 0], Preprocessing(size=8)).shape == (8, 8, 3)  # mono input


def test_area_resize_is_inter_area_or_its_cheap_pyramid() -> None:
    from lompo_core.image import area_resize

    def inter_area(img: np.ndarray) -> np.ndarray:
        return cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA)

    def scene(w: int, h: int) -> np.ndarray:
        noise = np.random.default_rng(w).integers(0, 256, (h, w, 3), dtype=np.uint8)
        return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 8), None, 0, 255, cv2.NORM_MINMAX)

    # Whole blocks (512x384 = 8x6 per pixel) and frames under twice the target (the sim's
    # 102 px crop) take INTER_AREA itself.
    for w, h in ((512, 384), (102, 102), (64, 64), (100, 70)):
        img = scene(w, h)
        np.testing.assert_array_equal(area_resize(img, 64), inter_area(img))
    # Otherwise 2x2 halvings first: still an average over pixel areas, off by a level or so.
    for w, h in ((640, 480), (1280, 720)):
        img = scene(w, h)
        diff = np.abs(area_resize(img, 64).astype(int) - inter_area(img))
        assert diff.mean() < 2.0 and diff.max() <= 12
        flat = np.full((h, w, 3), 77, np.uint8)
        assert (area_resize(flat, 64) == 77).all()


def test_jpeg_size_and_reduction() -> None:
    from lompo_core.image import jpeg_reduction, jpeg_size

    for w, h in ((640, 480), (1280, 720), (33, 17)):
        ok, buf = cv2.imencode(".jpg", np.zeros((h, w, 3), np.uint8))
        assert jpeg_size(buf.ravel()) == (w, h) == jpeg_size(buf.tobytes())
    ok, png = cv2.imencode(".png", RGB)
    assert jpeg_size(png.ravel()) is None and jpeg_size(b"\xff\xd8\x00") is None
    p = Preprocessing(size=64)
    assert jpeg_reduction(640, 480, p) == 4  # 160x120; 1/8 would give 60 rows < 64
    assert jpeg_reduction(1280, 720, p) == 8
    assert jpeg_reduction(640, 480, Preprocessing(crop=(0.0, 0.0, 0.5, 0.5))) == 2
    assert jpeg_reduction(100, 100, p) == 1


def test_jpeg_reduced_decode_matches_the_full_one_after_preprocessing() -> None:
    noise = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    scene = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 8), None, 0, 255, cv2.NORM_MINMAX)
    msg = image_message(TS, BagSpec(encoding="jpeg"), scene, 1, ros1=False)
    p = Preprocessing(crop=(0.1, 0.0, 0.9, 0.8))
    reduced = decode_image(msg, p)
    assert reduced.shape == (120, 160, 3)  # decoded at 1/4 scale
    full = decode_image(msg)
    assert full.shape == (480, 640, 3)
    diff = np.abs(preprocess(reduced, p).astype(int) - preprocess(full, p))
    assert diff.mean() < 2.0 and diff.max() <= 16
    # What the converter and the node compute: the reduced decode.
    np.testing.assert_array_equal(to_model_image(msg, p), preprocess(reduced, p))


def test_to_model_image_accepts_messages_and_arrays() -> None:
    p = Preprocessing(crop=(0.1, 0.2, 0.9, 1.0), size=16)
    msg = image_message(TS, BagSpec(encoding="bgra8", pad=2), RGB, 1, ros1=False)
    np.testing.assert_array_equal(to_model_image(msg, p), to_model_image(RGB, p))


def test_preprocessing_round_trip_and_validation() -> None:
    p = Preprocessing(crop=(0, 0.1, 1, 0.9), size=32)
    assert Preprocessing.from_dict(p.as_dict()) == p
    assert Preprocessing.from_dict(Preprocessing().as_dict()) == Preprocessing()
    for crop in [(0.5, 0, 0.4, 1), (0, 0, 1.2, 1), (0, 0, 1)]:
        with pytest.raises(ImageError, match="crop"):
            Preprocessing(crop=crop)
    with pytest.raises(ImageError, match="size"):
        Preprocessing(size=0)
    with pytest.raises(ImageError, match="unknown field"):
        Preprocessing.from_dict({"size": 64, "gamma": 2})


def test_data_package_imports_no_torch() -> None:
    code = (
        "import sys; import lompo_core.image, lompo_core.data.convert, "
        "lompo_core.data.inspect, lompo_core.data.cli_convert, lompo_core.data.cli_inspect; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- hostile input: bounded before allocating or decoding, strict decoding ---------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG whose IHDR claims width x height: what a decompression bomb sends."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * min(width, 64)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    buf = bytearray(cv2.imencode(".jpg", RGB)[1].tobytes())
    i = bytes(buf).index(b"\xff\xc0")
    buf[i + 5 : i + 9] = bytes([height >> 8, height & 0xFF, width >> 8, width & 0xFF])
    return bytes(buf)


def _timed_refusal(msg, words: str, limits=None) -> None:
    import time

    start = time.perf_counter()
    with pytest.raises(ImageError, match=words):
        decode_image(msg, Preprocessing(), limits)
    assert time.perf_counter() - start < 0.05, "refused only after working on it"


def test_a_huge_step_with_30_bytes_is_refused_before_allocating() -> None:
    # Before: the last row was padded out to step x height (4.2 GB), then stepped as ok.
    msg = SimpleNamespace(
        encoding="rgb8", height=1, width=10, step=4294967295, is_bigendian=0, data=b"x" * 30
    )
    _timed_refusal(msg, r"holds 30 bytes.*needs 4294967295")


@pytest.mark.parametrize(("height", "width"), [(100_000, 10), (1, 5000), (4097, 4097)])
def test_raw_sizes_over_the_caps_are_refused(height: int, width: int) -> None:
    # Before: any size whose data was long enough was decoded (and padded when it was not).
    msg = SimpleNamespace(
        encoding="mono8", height=height, width=width, step=width, is_bigendian=0, data=b"\0" * 16
    )
    _timed_refusal(msg, "over the limit")


def test_a_last_row_without_its_padding_is_refused() -> None:
    # The message's contract is len(data) == step x height; a shorter one is not padded out.
    rows = np.zeros((4, 12), np.uint8)  # 4 rows of 10 bytes + 2 padding (mono8, width 10)
    data = rows.reshape(-1)[:-2].tobytes()
    msg = SimpleNamespace(encoding="mono8", height=4, width=10, step=12, is_bigendian=0, data=data)
    with pytest.raises(ImageError, match="holds 46 bytes.*needs 48"):
        decode_image(msg)


def test_limits_follow_the_camera_and_never_pass_the_hard_caps() -> None:
    from lompo_core.image import HARD_LIMITS, ImageLimits

    cam = ImageLimits.for_camera(128, 96)
    assert (cam.max_width, cam.max_height, cam.max_pixels) == (1024, 768, 1024 * 768)
    huge = ImageLimits.for_camera(4000, 4000)
    assert (huge.max_width, huge.max_height, huge.max_pixels) == (4096, 4096, 4096 * 4096)
    assert HARD_LIMITS.max_pixels == 16 * 2**20
    msg = image_message(TS, BagSpec(), np.zeros((100, 1030, 3), np.uint8), 1, ros1=False)
    with pytest.raises(ImageError, match="1030x100, over the limit 1024x768"):
        decode_image(msg, None, cam)
    assert decode_image(msg).shape == (100, 1030, 3)  # within the hard caps


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("png", _png_claiming(30000, 30000)),
        ("jpeg", _jpeg_claiming(40000, 40000)),
        ("rgb8; jpeg compressed bgr8", _jpeg_claiming(30000, 30000)),
    ],
)
def test_compressed_headers_over_the_caps_are_refused_before_decoding(fmt, data) -> None:
    # Before: the PNG inflated to 30000x30000 (9 s, 3.5 GB), the JPEG was decoded for 1.7 s.
    _timed_refusal(SimpleNamespace(format=fmt, data=data), "header of compressed image.*over the")


def test_a_jpeg_truncated_then_closed_is_refused() -> None:
    # Before: decoded with libjpeg's warning "premature end of data segment" and stepped.
    smooth = cv2.GaussianBlur(RNG.integers(0, 256, (120, 160, 3), dtype=np.uint8), (9, 9), 3)
    jpg = cv2.imencode(".jpg", smooth)[1].tobytes()
    cut = jpg[: len(jpg) // 2] + b"\xff\xd9"
    with pytest.raises(ImageError, match="corrupt JPEG.*libjpeg: Corrupt JPEG data"):
        decode_image(SimpleNamespace(format="jpeg", data=cut))
    junk = jpg[:-2] + b"\x12\x34\x56\x78" * 4 + b"\xff\xd9"
    with pytest.raises(ImageError, match="extraneous bytes"):
        decode_image(SimpleNamespace(format="jpeg", data=junk), Preprocessing())
    with pytest.raises(ImageError, match="truncated JPEG"):
        decode_image(SimpleNamespace(format="jpeg", data=jpg[:-1]))
    # zero padding after the end marker (some drivers' buffers) is not a truncation
    padded = decode_image(SimpleNamespace(format="jpeg", data=jpg + b"\0" * 7))
    np.testing.assert_array_equal(padded, decode_image(SimpleNamespace(format="jpeg", data=jpg)))


def test_a_truncated_png_is_refused() -> None:
    png = cv2.imencode(".png", RGB)[1].tobytes()
    with pytest.raises(ImageError, match="truncated PNG"):
        decode_image(SimpleNamespace(format="png", data=png[:-12]))
    with pytest.raises(ImageError, match="IHDR"):
        decode_image(SimpleNamespace(format="png", data=png[:20]))


@pytest.mark.parametrize(
    ("ext", "name"),
    [(".bmp", "BMP"), (".tiff", "TIFF"), (".webp", "WebP"), (".ppm", "PPM"), (".pgm", "PGM")],
)
@pytest.mark.parametrize("label", ["png", "jpeg", "bgr8; jpeg compressed bgr8"])
def test_other_formats_labelled_png_or_jpeg_are_refused(ext: str, name: str, label: str) -> None:
    # Before: OpenCV decoded whatever it recognised, whatever the label said.
    img = RGB[..., 0] if ext == ".pgm" else RGB
    data = cv2.imencode(ext, img)[1].tobytes()
    want = "png" if "png" in label else "jpeg"
    with pytest.raises(ImageError, match=f"the data is {name}, not {want}"):
        decode_image(SimpleNamespace(format=label, data=data))


def test_gif_and_a_swapped_label_are_refused() -> None:
    with pytest.raises(ImageError, match="the data is GIF, not png"):
        decode_image(SimpleNamespace(format="png", data=b"GIF89a" + b"\0" * 40))
    png = cv2.imencode(".png", RGB)[1].tobytes()
    jpg = cv2.imencode(".jpg", RGB)[1].tobytes()
    with pytest.raises(ImageError, match="the data is png, not jpeg"):
        decode_image(SimpleNamespace(format="jpeg", data=png))
    with pytest.raises(ImageError, match="the data is jpeg, not png"):
        decode_image(SimpleNamespace(format="png", data=jpg))


def test_size_fields_that_are_not_integers_are_refused() -> None:
    msg = SimpleNamespace(encoding="mono8", height=2.5, width=2, step=2, is_bigendian=0, data=b"")
    with pytest.raises(ImageError, match="field height must be an integer"):
        decode_image(msg)


def test_preprocessing_size_must_be_a_bounded_integer() -> None:
    for size in (64.7, "64", True, 100_000):
        with pytest.raises(ImageError, match="size"):
            Preprocessing.from_dict({"crop": None, "size": size})
    with pytest.raises(ImageError, match="crop"):
        Preprocessing.from_dict({"crop": "0 0 1 1", "size": 64})


def _chunk_offsets(png: bytes) -> dict[bytes, int]:
    i, out = 8, {}
    while i < len(png):
        n = int.from_bytes(png[i : i + 4], "big")
        out.setdefault(png[i + 4 : i + 8], i)
        i += 12 + n
    return out


def test_a_png_chunk_length_bit_flip_is_refused_before_opencv_allocates_it() -> None:
    # Before: OpenCV's reader allocated the 1 GB the flipped IDAT length claims (3 s, 1 GB RSS).
    png = bytearray(cv2.imencode(".png", RGB)[1].tobytes())
    png[_chunk_offsets(bytes(png))[b"IDAT"]] ^= 0x40
    _timed_refusal(SimpleNamespace(format="png", data=bytes(png)), "chunk b'IDAT' .* claims")


def test_png_chunks_are_checked_one_by_one() -> None:
    import struct
    import zlib

    png = cv2.imencode(".png", RGB)[1].tobytes()
    idat = _chunk_offsets(png)[b"IDAT"]
    flipped = bytearray(png)
    flipped[idat + 20] ^= 0x01  # inside the IDAT data
    with pytest.raises(ImageError, match="corrupt PNG .*IDAT CRC"):
        decode_image(SimpleNamespace(format="png", data=bytes(flipped)))
    with pytest.raises(ImageError, match="bytes after the PNG's IEND"):
        decode_image(SimpleNamespace(format="png", data=png + b"junk"))
    body = struct.pack(">II", 2, 0)
    actl = struct.pack(">I", 8) + b"acTL" + body + struct.pack(">I", zlib.crc32(b"acTL" + body))
    animated = png[:idat] + actl + png[idat:]
    with pytest.raises(ImageError, match="animated PNG"):
        decode_image(SimpleNamespace(format="png", data=animated))


def test_a_jpeg_with_too_many_scans_is_refused() -> None:
    jpg = cv2.imencode(".jpg", RGB)[1].tobytes()
    sos = jpg.index(b"\xff\xda")
    many = jpg[:sos] + b"\xff\xda\x00\x02" * 200 + jpg[sos:]
    with pytest.raises(ImageError, match="JPEG with 201 scans"):
        decode_image(SimpleNamespace(format="jpeg", data=many))
