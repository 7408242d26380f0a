"""What the commands share: argparse's types (one line for a bad value), the data options, and the run a command
reads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaelab.errors import VaelabError

EXIT_USER_ERROR = VaelabError.exit_code
MAX_FIGURE_IMAGES = 1000  # images in one figure: more is unreadable and slow to draw


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (what was wrong, where to look) and exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):
        """argparse's, but arguments left over (`--manifold -inf`: an optional value that looks like an option) are
        refused by the command they were given to, whose help says what it takes, rather than by `vaelab` itself."""
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self._command_parser(namespace).error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace

    def _command_parser(self, namespace: argparse.Namespace) -> argparse.ArgumentParser:
        for action in self._actions:
            command = getattr(namespace, action.dest, None)
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return action.choices[command]
        return self


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def path(text: str) -> Path:
    """An argparse type: a non-empty path (an empty string would silently mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r} (a NUL byte cannot be in a path)")
    return Path(text)


def nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a name or a path, got an empty string")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"expected a name or a path, got {text!r} (a NUL byte cannot be in either)")
    return text


def host(text: str) -> str:
    """An argparse type: a host name or address, printable (a NUL or undecodable bytes cannot name a host)."""
    if not text.strip() or not text.isprintable() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"expected a host name or an address, got {text!r}")
    try:
        text.encode("idna" if not text.isascii() else "ascii")
    except UnicodeError:
        raise argparse.ArgumentTypeError(f"expected a host name or an address, got {text!r}") from None
    return text


def int_in(low: int, high: int, what: str):
    """An argparse type: an integer from `low` to `high`, else one line saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what}, an integer from {low} to {high}, got {text!r}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}: an integer from {low} to {high}, got {value}")
        return value

    return parse


SEED = int_in(0, 2**32 - 1, "a seed")  # the seed of draws (generate, evaluate, quality): numpy's, any uint32


def sampler_spec(text: str):
    """An argparse type: a sampler after training, prior, gmm or gmm:K (vaelab.analysis.samplers)."""
    from vaelab.analysis.samplers import parse_sampler

    try:
        return parse_sampler(text)
    except VaelabError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def devices(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'all', got {text!r}") from None


def add_data_options(p: argparse.ArgumentParser, of_run: bool = False) -> None:
    """--dataset and --data-dir; unless `of_run` (a run reads its data as it was trained), --image-size and --grey,
    which say how a folder's or an .npz's images are read."""
    from vaelab.data import BUILTIN

    p.add_argument(
        "--dataset",
        metavar="NAME|PATH",
        type=nonempty,
        default=None,
        help="the run's own dataset (a different one is refused)"
        if of_run
        else f"{', '.join(BUILTIN)} (default: mnist), a folder of images (one subfolder per class) or an .npz",
    )
    p.add_argument(
        "--data-dir",
        type=path,
        default=None,
        help="directory holding (or to cache) the built-in datasets; default $VAELAB_DATA_DIR or ~/.cache/vaelab",
    )
    if not of_run:
        add_image_options(p)


def add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--image-size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="pad and resize the images of a folder or an .npz to H x W pixels (default: their own size, one for all)",
    )
    p.add_argument("--grey", action="store_true", help="convert colour images to grey (ITU-R 601-2 luma)")


def image_keywords(args: argparse.Namespace) -> dict:
    """What `add_data_options` parsed about reading the images, as the library's keywords (data_dir, image_size,
    grey)."""
    return {"data_dir": args.data_dir, "image_size": args.image_size, "grey": args.grey}


def add_run_parser(sub, name: str, help: str, func) -> argparse.ArgumentParser:
    """A command that analyses one run: RUN, --out (default RUN/analysis) and the run's data options."""
    p = sub.add_parser(name, help=help)
    p.add_argument("run", type=path, metavar="RUN", help="run directory")
    p.add_argument("--out", type=path, help="directory for the figures and tables (default: RUN/analysis)")
    add_data_options(p, of_run=True)
    p.set_defaults(func=func)
    return p


def load(args: argparse.Namespace):
    """The run named on the command line (trained for an epoch at least), its data, and the output directory
    (default RUN/analysis)."""
    from vaelab.run import load_run

    run = load_run(args.run).require_trained()
    out = args.out or Path(args.run) / "analysis"
    return run, run.load_data(args.dataset, args.data_dir), out


def gaussian(run, command: str) -> None:
    """Refuses a run whose codes are no Gaussian latent space (a vqvae's) in a command that draws or walks one."""
    if not run.config.model.member.gaussian_latent:
        raise VaelabError(
            f"vaelab {command} maps a Gaussian latent space, and a {run.config.model.family}'s codes are codebook "
            "indices; use "
            f"`vaelab evaluate {run.path}` (code usage) or `vaelab generate {run.path} --samples N`"
        )


def log(message: str) -> None:
    print(message, file=sys.stderr)


def wrote(*paths: Path) -> None:
    for file in paths:
        print(f"wrote {file}", file=sys.stderr)
