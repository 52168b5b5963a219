"""Write a synthetic data set in one of the public layouts (the sets `tune-run` uses without --data).

    python scripts/make_synthetic.py /tmp/covid-synth --per-class 200 --image-size 128
    python scripts/make_synthetic.py /tmp/covid-ct --layout image_folder    # then --data /tmp/covid-ct/Images-processed
    python scripts/make_synthetic.py /tmp/busi --layout busi --per-class 40
    python scripts/make_synthetic.py /tmp/medfmc --layout annotation_list --images 200
"""

import argparse
import inspect

from trainables.data import LAYOUTS, DataError
from trainables.data.synthetic import SYNTHETIC


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder to write the data set into")
    parser.add_argument("--layout", choices=LAYOUTS, default="covid_radiography", help="(default: %(default)s)")
    parser.add_argument("--per-class", type=int, help="images per class (all layouts but annotation_list)")
    parser.add_argument("--images", type=int, help="images in all (annotation_list)")
    parser.add_argument("--image-size", type=int, help="image side in pixels (image_folder: the largest side)")
    parser.add_argument(
        "--mask-size", type=int, help="covid_radiography: mask side, unlike the image side as in the real download"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    _, generate, data = SYNTHETIC[args.layout]
    accepted = inspect.signature(generate).parameters
    options = {name: getattr(args, name) for name in ("per_class", "images", "image_size", "mask_size", "seed")}
    given = {name: value for name, value in options.items() if value is not None}
    wrong = [f"--{name.replace('_', '-')}" for name in given if name not in accepted]
    if wrong:
        parser.error(f"{', '.join(wrong)} does not apply to --layout {args.layout}; it accepts "
                     + ", ".join(f"--{name.replace('_', '-')}" for name in accepted if name != "root") + ".")
    try:
        generate(args.root, **given)
    except DataError as e:
        parser.error(str(e))
    defaults = {name: p.default for name, p in accepted.items() if name != "root"}
    print(f"Wrote a synthetic {args.layout} set ({', '.join(f'{k}={v}' for k, v in {**defaults, **given}.items())}) "
          f"to {args.root}; its data root is {args.root.rstrip('/') + ('/' + data if data else '')}")


if __name__ == "__main__":
    main()
