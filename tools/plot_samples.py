#!/usr/bin/python3
"""A grid of training images with their class names, from the samples.npz stage 1 writes.

    /usr/bin/python3 tools/plot_samples.py samples.npz -o samples.png [--title T] [--columns 8]

samples.npz holds `images` (float32, N x C x H x W, pixel / 255 after the training runs'
augmentation and before normalisation), `labels` (int32, N) and `class_names` (uint8, the names
one per line, in label order). One channel is drawn in grey, three as RGB. Needs numpy and
Debian's python3-matplotlib.
"""

import argparse
import sys

import numpy as np

from plotting import plt, save, wrapped


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("npz", help="samples.npz of stage 1")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    parser.add_argument("--title", default="", help="title (say which data the images come from)")
    parser.add_argument("--columns", type=int, default=8, help="images per row")
    args = parser.parse_args()

    try:
        archive = np.load(args.npz)
        images, labels = archive["images"], archive["labels"]
        names = bytes(archive["class_names"]).decode("utf-8").splitlines()
    except (OSError, KeyError, ValueError) as e:
        sys.exit(f"plot_samples.py: cannot read '{args.npz}': {e}")
    if images.ndim != 4 or len(labels) != len(images):
        sys.exit(f"plot_samples.py: '{args.npz}': images {images.shape} and labels {labels.shape} do not match")

    columns = max(1, min(args.columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.6 * rows + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        image = np.clip(images[i], 0.0, 1.0)
        if image.shape[0] == 1:
            ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(np.transpose(image, (1, 2, 0)))
        label = int(labels[i])
        ax.set_title(names[label] if 0 <= label < len(names) else str(label), fontsize=7)
    if args.title:
        fig.suptitle(wrapped(args.title, 90), fontsize=9)
    fig.tight_layout()
    save(fig, args.output, 120, "plot_samples.py")


if __name__ == "__main__":
    main()
