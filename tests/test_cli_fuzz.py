"""Property-based fuzz of the command line: whatever the arguments, exit 0 or 2, one line on failure, no traceback.

Each command's options get values drawn from tokens that are valid (small, so that a run that
succeeds stays short) and invalid (out of range, not numbers, not finite, huge, empty, paths that
are files or do not exist). `vaelab.cli.main` runs in-process, as the console script would.
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelab import cli
from vaelab.data import default_data_dir

pytestmark = pytest.mark.slow

INTS = ["0", "-1", "1", "2", "3", "1.5", "nan", "inf", "-inf", "abc", "", "99999999999999999999", "4294967296"]
FLOATS = ["0", "-1", "1e-3", "0.5", "nan", "inf", "-inf", "1e309", "abc", "", "-0"]
PATHS = ["{run}", "{file}", "/nonexistent/x", "", "{long}"]

# Each command's options and the tokens their values are drawn from.
OPTIONS = {
    # --data-dir: nothing that would start a download (an empty directory would)
    "data": {"--dataset": ["mnist", "cifar", "{file}", "{run}", ""], "--data-dir": ["{file}", "{long}", "", "{cache}"]},
    "train": {
        "--preset": ["mlp", "conv", "resnet", ""],
        "--epochs": INTS,
        "--batch-size": INTS,
        "--latent-dim": [*INTS, "1000000000"],
        "--seed": INTS,
        "--optimizer": ["adam", "sgd"],
        "--learning-rate": FLOATS,
        "--train-subset": INTS,
        "--test-subset": INTS,
        "--implementation": ["keras", "fast"],
        "--out": PATHS,
        "--resume": PATHS,
        "--dataset": ["mnist", "nothing", "{file}"],
        # in this process JAX runs already, on one CPU device: more devices, or joining processes, is refused
        "--devices": ["1", "2", "all", "0", "abc", ""],
        "--coordinator": ["127.0.0.1:1", "nowhere", ""],
        "--num-processes": ["1", "2", "0", "abc"],
        "--process-id": ["0", "-1", "abc"],
        "--peer-timeout": INTS,
    },
    "encode": {"--pick": [*INTS, "9999", "0 0"], "--out": PATHS, "--dataset": ["mnist", "fashion-x"]},
    "generate": {
        "--z": ["0.5 0.2", "1", "nan 0", "1e300 0", "1 2 3", ""],
        "--samples": INTS,
        "--manifold": INTS,
        "--seed": INTS,
        "--out": PATHS,
        "--sampler": ["prior", "gmm", "gmm:2", "gmm:0", "gmm:x", "flow", ""],
    },
    "interpolate": {
        "--from-index": [*INTS, "9999", "10000"],
        "--to-index": INTS,
        "--from-class": ["3", "ten", "-1", ""],
        "--to-class": ["8", "3", "99"],
        "--steps": [*INTS, "1001"],
    },
    "evaluate": {"--samples": [*INTS, "100000000"], "--images": INTS, "--seed": INTS},
    "export": {"--out": PATHS},
    # no valid port and no host that could bind: a valid explore would serve forever
    "explore": {"--port": ["0", "-1", "65536", "abc", "", "{busy}"], "--host": ["nowhere.", "256.1.1.1"]},
    "kl": {},
}
FLAGS = {"train": ["--binarize", "--overwrite"], "interpolate": ["--allow-same-class"]}
TAKES_A_RUN = {"encode", "generate", "interpolate", "evaluate", "export", "explore"}
# Put before the drawn options (argparse keeps the last value given): a run that succeeds stays short.
SAFE = {
    "train": ["--train-subset", "300", "--test-subset", "100", "--epochs", "1"],
    "evaluate": ["--samples", "2", "--images", "50"],
    "explore": ["--port", "{busy}"],
    "kl": ["0", "1", "1", "2"],
}


def command(name: str):
    options = OPTIONS[name]
    drawn = st.lists(
        st.tuples(st.sampled_from(sorted(options)), st.integers(0, 99)), max_size=4, unique_by=lambda o: o[0]
    ) if options else st.just([])  # fmt: skip
    flags = st.lists(st.sampled_from(FLAGS[name]), unique=True) if name in FLAGS else st.just([])
    return st.tuples(st.just(name), drawn, flags)


COMMANDS = st.one_of(*[command(name) for name in OPTIONS])


@pytest.fixture(scope="module")
def places(small_run, tmp_path_factory):
    """Paths the tokens name: a run (a copy: fuzzed commands may retrain or overwrite it), a file, ..."""
    import shutil

    base = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(small_run.path, base / "run")
    (base / "file").write_text("not a directory")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    yield {"run": str(base / "run"), "file": str(base / "file"), "long": str(base / ("x" * 300)),
           "busy": str(busy.getsockname()[1]), "base": base, "cache": str(default_data_dir())}  # fmt: skip
    busy.close()


def argv_of(case, places, serial: int) -> list[str]:
    name, drawn, flags = case
    argv = [name, *([places["run"]] if name in TAKES_A_RUN else [])]
    argv += [token.format(**places) for token in SAFE.get(name, [])]
    if name in ("train", "encode", "generate", "interpolate", "export"):
        argv += ["--out", str(places["base"] / f"out{serial}")]  # a fresh directory unless --out is drawn
    for key, pick in drawn:
        tokens = OPTIONS[name][key]
        value = tokens[pick % len(tokens)].format(**places)
        argv += [key, *(value.split(" ") if value else [""])]
    return argv + list(flags)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=COMMANDS, serial=st.integers(0, 10**9))
def test_any_arguments_give_exit_0_or_2_and_one_line(case, serial, places, capsys):
    argv = argv_of(case, places, serial)
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse: --help, or a usage error
        code = exit.code
    out = capsys.readouterr()
    assert code in (0, 2), (argv, code, out.err[-2000:])
    assert "Traceback" not in out.err, (argv, out.err[-2000:])
    if code:  # the error is one line, the last: work that had started may have logged before it
        last = [line for line in out.err.splitlines() if line.strip()][-1]
        assert last.startswith(f"vaelab {argv[0]}: error: "), (argv, out.err[-2000:])


HOSTILE = ["", "\x00", "\udcff", "nan", "-inf", "1e309", "-1", "9" * 40]  # to every option that takes a value
HOSTILE_PATHS = ["", "\x00", "a\x00b"]  # to paths: anything else names a file, which may be fine
# Options whose value is free text that a command acts on at length (a coordinator to wait for, a Ray cluster).
SKIPPED = {"--coordinator", "--ray", "--help", "--version"}
POSITIONALS = {"kl": ["0", "1", "0", "1"]}


def option_walk() -> list[tuple[str, str, str]]:
    """(command, option, hostile value) for every option of every command that takes a value."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction)).choices
    cases = []
    for name, sub in commands.items():
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0 or action.option_strings[0] in SKIPPED:
                continue
            values = HOSTILE_PATHS if action.type is cli._path else HOSTILE
            cases += [(name, action.option_strings[0], value) for value in values]
    return cases


def test_every_option_of_every_command_refuses_hostile_values_in_one_line(places, capsys, monkeypatch):
    """Walks each command's options (not a sample of them): a hostile value is exit 2 and one line, or it is
    harmless and the command does its work (exit 0); never a traceback or an internal error."""
    monkeypatch.chdir(places["base"])  # a value taken as a relative path lands here
    for serial, (name, option, value) in enumerate(option_walk()):
        argv = [name, *([places["run"]] if name in TAKES_A_RUN else []), *POSITIONALS.get(name, [])]
        argv += [token.format(**places) for token in SAFE.get(name, []) if name != "kl"]
        if name in ("train", "encode", "generate", "interpolate", "export", "report", "sweep"):
            argv += ["--out", str(places["base"] / f"walk{serial}")]
        if name in ("report", "sweep", "data"):
            argv += ["--dataset", str(places["file"])]  # whatever else they accept, they stop at the data
        argv += [option, value]
        try:
            code = cli.main(argv)
        except SystemExit as exit:
            code = exit.code
        out = capsys.readouterr()
        assert code in (0, 2), (argv, code, out.err[-2000:])
        assert "Traceback" not in out.err and "internal error" not in out.err, (argv, out.err[-2000:])
        if code:  # a value taken for an option ("-inf" after an optional value) is refused by the command too
            last = [line for line in out.err.splitlines() if line.strip()][-1]
            assert last.startswith(f"vaelab {name}: error: "), (argv, out.err[-2000:])
