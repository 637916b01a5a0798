#!/usr/bin/python3
"""Writes the seed corpus of fuzz_cifar_reader into fuzz/corpus/cifar_reader/.

Deterministic: running it again rewrites the same bytes, so the committed files can be checked
with `git diff`. Each input is the fuzzer's 2-byte header (see fuzz_cifar_reader.cpp) followed by
the bytes one parser sees:

  byte 0  bit 0: 0 = parse_cifar100_records, 1 = parse_label_names
          bit 1: records only: 1 = byte 1 is expected_records, 0 = any count
  byte 1  the expected count

Usage: /usr/bin/python3 fuzz/make_corpus.py
"""
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


def main() -> None:
    out = Path(__file__).resolve().parent / "corpus" / "cifar_reader"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(seeds().items()):
        assert len(data) <= 10 * 1024, name
        (out / name).write_bytes(data)
    print(f"wrote {len(seeds())} seeds to {out}")


if __name__ == "__main__":
    main()
