"""Write a synthetic data set in the COVID-19 Radiography Database layout.

    python scripts/make_synthetic.py /tmp/covid-synth --per-class 200 --image-size 128
"""

import argparse

from trainables.data import DataError, generate_covid_radiography
from trainables.data.synthetic import CLASSES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder to write <Class>/images/*.png and <Class>/masks/*.png into")
    parser.add_argument("--per-class", type=int, default=96, help="images per class (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=96, help="image side in pixels (default: %(default)s)")
    parser.add_argument(
        "--mask-size", type=int, default=80,
        help="mask side in pixels, unlike the images as in the real 299/256 px download (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        generate_covid_radiography(args.root, args.per_class, args.image_size, args.mask_size, args.seed)
    except DataError as e:
        parser.error(str(e))
    print(f"Wrote {len(CLASSES) * args.per_class} images with masks to {args.root}")


if __name__ == "__main__":
    main()
