#!/usr/bin/python3
"""Writes the seed corpora of fuzz_cifar_reader, fuzz_idx_reader and fuzz_npz_reader into
fuzz/corpus/<target>/.

Deterministic: running it again rewrites the same bytes, so the committed files can be checked
with `git diff` (the .npz seeds come from NumPy 1.24 and Python 3.11's zipfile, as in Debian 12's
/usr/bin/python3; another NumPy may pad .npy headers differently). A cifar_reader input is the
fuzzer's 2-byte header (see fuzz_cifar_reader.cpp) followed by the bytes one parser sees:

  byte 0  bit 0: 0 = parse_cifar100_records, 1 = parse_label_names
          bit 1: records only: 1 = byte 1 is expected_records, 0 = any count
  byte 1  the expected count

Usage: /usr/bin/python3 fuzz/make_corpus.py
"""
import gzip
import io
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

RECORD_BYTES = 3074
PIXELS = 3072

RECORDS = 0x00         # parse_cifar100_records(bytes, name, std::nullopt)
RECORDS_EXPECT = 0x02  # parse_cifar100_records(bytes, name, byte 1)
NAMES = 0x01           # parse_label_names(text, name, byte 1)

# The label names of CIFAR-100, in label order, as in the official archive.
FINE = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor
train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
COARSE = """aquatic_mammals fish flowers food_containers fruit_and_vegetables
household_electrical_devices household_furniture insects large_carnivores
large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores
medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
vehicles_2""".split()
assert len(FINE) == 100 and len(COARSE) == 20


def record(coarse: int, fine: int, seed: int) -> bytes:
    """One 3074-byte record whose pixels follow a pattern that differs between records."""
    pixels = bytes((seed * 37 + i * 7 + (i >> 10) * 101) % 256 for i in range(PIXELS))
    return bytes([coarse, fine]) + pixels


def header(mode: int, count: int = 0) -> bytes:
    return bytes([mode, count])


def text(lines, end="\n") -> bytes:
    return "".join(line + end for line in lines).encode()


def seeds() -> dict:
    one = record(7, 42, 0)
    three = record(0, 0, 1) + record(19, 99, 2) + record(3, 58, 3)
    return {
        # Records that parse.
        "records_1_any": header(RECORDS) + one,
        "records_1_expect_1_label_maxima": header(RECORDS_EXPECT, 1) + record(19, 99, 4),
        "records_3_expect_3": header(RECORDS_EXPECT, 3) + three,
        "records_empty_expect_0": header(RECORDS_EXPECT, 0),
        "records_empty_any": header(RECORDS),
        # Records that must be refused.
        "records_count_1_expect_2": header(RECORDS_EXPECT, 2) + one,
        "records_truncated_3073": header(RECORDS) + one[:-1],
        "records_oversized_3075": header(RECORDS) + one + b"\x00",
        "records_3_truncated_in_third": header(RECORDS_EXPECT, 3) + three[: 2 * RECORD_BYTES + 100],
        "records_bad_coarse_20": header(RECORDS) + record(20, 5, 5),
        "records_bad_coarse_255": header(RECORDS) + record(255, 5, 6),
        "records_bad_fine_100": header(RECORDS) + record(5, 100, 7),
        "records_bad_fine_in_second": header(RECORDS_EXPECT, 2) + record(1, 1, 8) + record(2, 200, 9),
        # Label names that parse.
        "names_fine_100": header(NAMES, 100) + text(FINE),
        "names_coarse_20_crlf_trailing_blank": header(NAMES, 20) + text(COARSE, "\r\n") + b"\n\r\n\n",
        "names_3_no_final_newline": header(NAMES, 3) + b"apple\naquarium_fish\nbaby",
        "names_empty_expect_0": header(NAMES, 0),
        # Label names that must be refused.
        "names_empty_line": header(NAMES, 3) + b"apple\n\nbaby\n",
        "names_3_expect_2": header(NAMES, 2) + b"apple\naquarium_fish\nbaby\n",
        "names_coarse_19_expect_20": header(NAMES, 20) + text(COARSE[:19]),
        # Regressions: inputs that once broke an invariant (see fuzz/README.md).
        # A '\r' inside a name was kept, giving a name write_label_names refuses: the fuzzer's
        # crash input minimised, and the "\n\r" line ends that produce it in a real file.
        "regression_names_stray_cr_min": bytes([0x01, 0x01, 0x0D, 0x1A]),
        "regression_names_lf_cr_line_ends": header(NAMES, 3) + b"apple\n\rbaby\n\rcup\n\r",
    }


# fuzz_idx_reader: byte 0 chooses the parser, byte 1 is the number of classes (labels only).
IDX_IMAGES = 0x00
IDX_LABELS = 0x01


def idx_images(count: int, rows: int, cols: int, seed: int = 0) -> bytes:
    pixels = bytes((seed * 29 + i * 13) % 256 for i in range(count * rows * cols))
    return struct.pack(">IIII", 0x0803, count, rows, cols) + pixels


def idx_labels(labels) -> bytes:
    return struct.pack(">II", 0x0801, len(labels)) + bytes(labels)


def gz(data: bytes) -> bytes:
    """gzip with mtime 0, so the same input always gives the same bytes."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def idx_seeds() -> dict:
    images = idx_images(3, 28, 28)
    labels = idx_labels([0, 9, 4, 7])
    packed = gz(images)
    return {
        # Files that parse, plain and gzipped.
        "images_3_28x28": header(IDX_IMAGES) + images,
        "images_3_28x28_gz": header(IDX_IMAGES) + packed,
        "images_1_1x1": header(IDX_IMAGES) + idx_images(1, 1, 1, 3),
        "labels_4_classes_10": header(IDX_LABELS, 10) + labels,
        "labels_4_classes_10_gz": header(IDX_LABELS, 10) + gz(labels),
        # Files that must be refused.
        "images_wrong_magic_labels": header(IDX_IMAGES) + labels,
        "labels_wrong_magic_images": header(IDX_LABELS, 10) + images,
        "images_magic_float": header(IDX_IMAGES) + struct.pack(">I", 0x0D03) + images[4:],
        "images_truncated_header": header(IDX_IMAGES) + images[:10],
        "images_truncated_data": header(IDX_IMAGES) + images[:-1],
        "images_trailing_byte": header(IDX_IMAGES) + images + b"\x00",
        "images_zero_rows": header(IDX_IMAGES) + struct.pack(">IIII", 0x0803, 2, 0, 28),
        "images_huge_count": header(IDX_IMAGES) + struct.pack(">IIII", 0x0803, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        "labels_label_10_of_10": header(IDX_LABELS, 10) + idx_labels([1, 10, 2]),
        "labels_classes_0": header(IDX_LABELS, 0) + idx_labels([0]),
        "gz_truncated": header(IDX_IMAGES) + packed[: len(packed) // 2],
        "gz_corrupt_deflate": header(IDX_IMAGES) + packed[:12] + bytes(b ^ 0x5A for b in packed[12:40]) + packed[40:],
        "gz_bad_crc": header(IDX_IMAGES) + packed[:-8] + bytes(b ^ 0xFF for b in packed[-8:-4]) + packed[-4:],
        "gz_two_members": header(IDX_LABELS, 10) + gz(labels) + gz(labels),
        "gz_magic_only": header(IDX_IMAGES) + b"\x1f\x8b",
    }


# fuzz_npz_reader: the whole input is the .npz file, so every seed is a real file (np.load reads
# the ones that Archive::from_bytes must accept).


def npy(array: np.ndarray, version=None) -> bytes:
    """The .npy bytes NumPy writes for `array` (format 1.0 unless `version` says otherwise)."""
    out = io.BytesIO()
    np.lib.format.write_array(out, array, version=version, allow_pickle=False)
    return out.getvalue()


def zip_members(members, comment: bytes = b"") -> bytes:
    """A zip of (name, bytes) members written the way np.savez writes them: stored, ZIP64 sizes
    in every local header (force_zip64), 1980-01-01 timestamps; so the same input always gives
    the same bytes."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about a duplicate name, which one seed wants
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, data in members:
                with zf.open(name, "w", force_zip64=True) as member:
                    member.write(data)
            zf.comment = comment
    return out.getvalue()


def savez(compressed: bool = False, **arrays) -> bytes:
    out = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(out, **arrays)
    return out.getvalue()


def zip64_end_records(**arrays) -> bytes:
    """np.savez with zipfile's ZIP64 thresholds lowered to 0, so that it writes what it writes for
    an archive past 2 GiB: sizes (and, after the first member, offsets) in ZIP64 extra fields of
    the central directory, 0xFFFFFFFF in the 32-bit fields, a ZIP64 end record and its locator.
    The 32-bit end record then gets the "see ZIP64" markers (0xFFFF entries, 0xFFFFFFFF size and
    offset) that a really large archive has, so only the ZIP64 records tell where things are."""
    limits = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
    zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 0, 0
    try:
        data = savez(**arrays)
    finally:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = limits
    end = len(data) - 22
    assert data[end:end + 4] == b"PK\x05\x06" and data[end - 20:end - 16] == b"PK\x06\x07"
    return data[:end + 8] + struct.pack("<HHII", 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + data[end + 20:]


def distopt_to_bytes(arrays) -> bytes:
    """What Archive::to_bytes writes (include/distopt/core/archive.hpp) for (name, array) pairs:
    stored members, version 20, DOS date 1980-01-01, no ZIP64; each local header carries one
    extra-field record (tag 0xD935 and the alignment 64, as Android's zipalign writes it) that
    pads the array data to a 64-byte boundary; bit 11 (UTF-8) only for non-ASCII names."""
    out, central = bytearray(), bytearray()
    for name, array in arrays:
        zip_name = (name + ".npy").encode()
        member = npy(array)
        crc = zlib.crc32(member)
        flags = 0 if zip_name.isascii() else 0x0800
        offset = len(out)
        padding = (64 - (offset + 30 + len(zip_name)) % 64) % 64
        padding += 64 if padding < 6 else 0
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, 0, 0, 0x21, crc, len(member), len(member),
                           len(zip_name), padding)
        out += zip_name + struct.pack("<HHH", 0xD935, padding - 4, 64) + bytes(padding - 6) + member
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 20, 20, flags, 0, 0, 0x21, crc,
                               len(member), len(member), len(zip_name), 0, 0, 0, 0, 0o100644 << 16, offset)
        central += zip_name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(arrays), len(arrays), len(central), len(out), 0)
    return bytes(out + central + end)


def text_array(text: str) -> np.ndarray:
    """Text as Archive::put_string stores it: a 1-D uint8 array of its UTF-8 bytes."""
    return np.frombuffer(text.encode(), dtype=np.uint8)


def flip(data: bytes, at: int, mask: int = 0x01) -> bytes:
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1:]


def npz_arrays():
    """The arrays of the seeds that must load, by seed name."""
    return {
        "savez_seven_dtypes": {
            "f4": np.array([0.0, -0.0, 1.5, np.inf, -np.inf, np.nan, 3.4028235e38], dtype=np.float32),
            "f8": np.array([np.pi, -1e-300, np.nan, 5e-324], dtype=np.float64),
            "i4": np.array([0, -1, 2**31 - 1, -2**31], dtype=np.int32),
            "i8": np.array([0, -1, 2**63 - 1, -2**63], dtype=np.int64),
            "u1": np.array([0, 1, 127, 128, 255], dtype=np.uint8),
            "u4": np.array([0, 1, 2**32 - 1], dtype=np.uint32),
            "u8": np.array([0, 1, 2**64 - 1], dtype=np.uint64),
        },
        "savez_scalars_0d": {
            "step": np.array(1000, dtype=np.int64),
            "lr": np.array(0.05, dtype=np.float64),
            "seed": np.array(42, dtype=np.uint64),
        },
        "savez_empty_arrays": {
            "none": np.zeros((0,), dtype=np.float32),
            "no_columns": np.zeros((3, 0), dtype=np.int64),
            "no_rows": np.zeros((0, 0, 2), dtype=np.uint8),
        },
        "savez_float32_2d": {
            "weight": (np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5) / 4,
        },
        # Data sets as data::load_arrays reads them (x features, y targets).
        "arrays_classes": {
            "x": (np.arange(24, dtype=np.float32).reshape(6, 4) - 7) / 3,
            "y": np.array([0, 2, 1, 0, 2, 1], dtype=np.int64),
        },
        "arrays_regression_images": {
            "x": np.linspace(-1, 1, 5 * 2 * 3 * 3).reshape(5, 2, 3, 3),
            "y": np.linspace(0, 4, 10, dtype=np.float32).reshape(5, 2),
        },
        "arrays_nan_feature": {
            "x": np.array([[0.0, 1.0], [np.nan, 2.0]], dtype=np.float32),
            "y": np.array([0, 1], dtype=np.int32),
        },
        "arrays_counts_differ": {
            "x": np.ones((3, 2), dtype=np.float32),
            "y": np.array([1, 0], dtype=np.uint8),
        },
        "savez_text_as_put_string": {
            "config": text_array('{"optimizer": "adamw", "lr": 0.001}\n'),
            "note": text_array("schön, naïve, 東京 ✓"),
            "schön": text_array(""),  # non-ASCII member name: zipfile sets the UTF-8 flag (bit 11)
        },
        "npy_version_2": {
            "bias": np.array([[1, 2, 3]], dtype=np.int32),
        },
        "zip64_end_records": {
            "a": np.arange(5, dtype=np.float64),
            "b": np.array([7, 8], dtype=np.uint32),
        },
        "distopt_to_bytes": {
            "step": np.array(10, dtype=np.int64),
            "w": np.array([[1.5, -2.0, 0.25], [3.0, 4.0, 5.0]], dtype=np.float32),
            "note": text_array("distopt checkpoint, café"),
            "été": np.zeros((0,), dtype=np.uint8),
        },
        "empty_archive_with_comment": {},
    }


def npz_seeds() -> dict:
    arrays = npz_arrays()
    dtypes = savez(**arrays["savez_seven_dtypes"])
    matrix = savez(**arrays["savez_float32_2d"])
    weight = arrays["savez_float32_2d"]["weight"]
    directory = struct.unpack_from("<I", dtypes, len(dtypes) - 6)[0]
    third_member = dtypes.index(b"i4.npy") - 30
    seeds = {
        # Files that load: what np.savez writes, NumPy's other .npy version, ZIP64 end records,
        # what distopt itself writes, and the smallest archive (no member, a comment).
        "savez_seven_dtypes": dtypes,
        "savez_scalars_0d": savez(**arrays["savez_scalars_0d"]),
        "savez_empty_arrays": savez(**arrays["savez_empty_arrays"]),
        "savez_float32_2d": matrix,
        "savez_text_as_put_string": savez(**arrays["savez_text_as_put_string"]),
        "npy_version_2": zip_members([("bias.npy", npy(arrays["npy_version_2"]["bias"], version=(2, 0)))]),
        "zip64_end_records": zip64_end_records(**arrays["zip64_end_records"]),
        "distopt_to_bytes": distopt_to_bytes(list(arrays["distopt_to_bytes"].items())),
        "empty_archive_with_comment": zip_members([], comment=b"no arrays here"),
        "arrays_classes": savez(**arrays["arrays_classes"]),
        "arrays_regression_images": savez(**arrays["arrays_regression_images"]),
        "arrays_nan_feature": savez(**arrays["arrays_nan_feature"]),
        "arrays_counts_differ": savez(**arrays["arrays_counts_differ"]),
        # Files that must be refused: cut short, damaged, or valid NumPy that distopt does not read.
        "truncated_in_data": dtypes[: third_member + 100],
        "truncated_in_central_directory": dtypes[: directory + 60],
        "truncated_in_end_record": dtypes[:-5],
        "bad_crc": flip(matrix, matrix.index(b"\x93NUMPY") + 128 + 20),
        "zip_local_name_flipped": flip(matrix, 30, 0x20),  # "weight.npy" -> "Weight.npy" in the local header
        "wrong_npy_magic": zip_members([("weight.npy", b"\x93NUMPZ" + npy(weight)[6:])]),
        "npy_shape_flipped": zip_members([("weight.npy", npy(weight).replace(b"(3, 4)", b"(3, 5)"))]),
        "npy_file_not_npz": npy(weight),  # np.save's output handed over as a checkpoint
        "savez_compressed": savez(compressed=True, **arrays["savez_float32_2d"]),
        "fortran_order": savez(weight=np.asfortranarray(weight)),
        "unicode_string_array": savez(note=np.array(["schön", "naïve"])),  # NumPy's '<U5', not put_string's bytes
        "duplicate_names": zip_members([("w.npy", npy(weight)), ("w.npy", npy(weight[:1]))]),
    }
    # The seeds that must load do, in NumPy, with the arrays they were written from.
    for name, expected in arrays.items():
        with np.load(io.BytesIO(seeds[name]), allow_pickle=False) as loaded:
            assert list(loaded.keys()) == list(expected), name
            for key, array in expected.items():
                got = loaded[key]
                assert got.dtype == array.dtype and got.shape == array.shape, (name, key)
                assert got.tobytes() == array.tobytes(), (name, key)
    for name, data in seeds.items():
        assert len(data) < 8 * 1024, name
    return seeds


def write(target: str, seed_set: dict) -> None:
    out = Path(__file__).resolve().parent / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(seed_set.items()):
        assert len(data) <= 10 * 1024, name
        (out / name).write_bytes(data)
    print(f"wrote {len(seed_set)} seeds to {out}")


def main() -> None:
    write("cifar_reader", seeds())
    write("idx_reader", idx_seeds())
    write("npz_reader", npz_seeds())


if __name__ == "__main__":
    main()
