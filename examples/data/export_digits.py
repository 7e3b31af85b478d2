#!/usr/bin/env python3
"""Exports scikit-learn's copy of the UCI handwritten digits to examples/data/digits.csv.

The data set: 1797 grey-scale 8x8 images of the digits 0-9 (each pixel an integer 0..16), as
shipped by scikit-learn (sklearn.datasets.load_digits, the test part of the UCI "Optical
Recognition of Handwritten Digits" set). The CSV is committed so that the C example
(examples/digits.c) needs no Python; this script only documents where it came from and lets
anyone re-create it:

    python3 examples/data/export_digits.py            # writes examples/data/digits.csv

Format: one comment line starting with '#', then one line per sample in scikit-learn's order:
the 64 pixel values (row-major, integers 0..16) followed by the label (0..9), comma-separated.
"""

import os
import sys

from sklearn.datasets import load_digits


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.csv")
    digits = load_digits()
    data, target = digits.data, digits.target
    assert data.shape == (1797, 64) and target.shape == (1797,)
    with open(out, "w", newline="\n") as f:
        f.write("# UCI handwritten digits via sklearn.datasets.load_digits: 1797 rows of 64 pixels (0..16, row-major 8x8) then the label (0..9)\n")
        for x, y in zip(data, target):
            pixels = [int(v) for v in x]
            assert all(float(p) == v and 0 <= p <= 16 for p, v in zip(pixels, x))
            f.write(",".join(str(p) for p in pixels) + "," + str(int(y)) + "\n")
    print(f"export_digits: wrote {len(target)} samples to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
