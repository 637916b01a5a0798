#!/usr/bin/python3
"""Writes the seed corpora of fuzz_cifar_reader and fuzz_idx_reader into fuzz/corpus/<target>/.

Deterministic: running it again rewrites the same bytes, so the committed files can be checked
with `git diff`. Each input is the fuzzer's 2-byte header (see fuzz_cifar_reader.cpp) followed by
the bytes one parser sees:

  byte 0  bit 0: 0 = parse_cifar100_records, 1 = parse_label_names
          bit 1: records only: 1 = byte 1 is expected_records, 0 = any count
  byte 1  the expected count

Usage: /usr/bin/python3 fuzz/make_corpus.py
"""
import gzip
import struct
from pathlib import Path

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


if __name__ == "__main__":
    main()
