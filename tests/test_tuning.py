"""--tuning KEY=VALUE,... / @file.toml: typed values, defaults, and its bad input as one line.

The parser (transforms/core/tuning.py) is hit directly; the commands' side (pipelines/tuning.py:
old knob flags refused with a hint, values on the parsed arguments) through `efm extract` and
`efm verify` in-process: every refusal happens while parsing, before any network or file access.
"""

from __future__ import annotations

import pytest

from pipelines import common, extract, tuning, tuning_keys, verify
from transforms.core import tuning as core
from transforms.core.errors import InputError

KEYS = {key.name: key for key in tuning_keys.EXTRACT}
REQUIRED = ["--bbox", "6.0,46.0,6.1,46.1", "--years", "2021", "--output", "out.zarr"]


def parsed(*flags: str):
    args, _ = common.split_args(extract.build_parser(), [*REQUIRED, *flags])
    return args


def test_values_are_typed_and_unset_keys_keep_their_defaults():
    args = parsed(
        "--tuning", "max_retries=3,retry_initial_delay=0.25", "--tuning", "transfer_dtype=int8"
    )
    assert (args.max_retries, args.retry_initial_delay, args.transfer_dtype) == (3, 0.25, "int8")
    assert type(args.max_retries) is int and type(args.retry_initial_delay) is float
    # the defaults the flags had (README / docs/tuning.md), where nothing is given
    assert args.max_requests_per_second == 100.0 and args.worker_memory_gb == 2.0
    assert args.request_tile_size is None and args.max_concurrent_requests is None
    assert args.threads_per_worker is None
    assert not hasattr(args, "tuning_command") and not hasattr(args, "_efm_tuning_command")


def test_a_toml_file_gives_what_the_same_pairs_give(tmp_path):
    path = tmp_path / "tuning.toml"
    path.write_text(
        "# knobs for the big run\nmax_concurrent_requests = 20\nworker_memory_gb = 6\n"
        'transfer_dtype = "float32"\n'
    )
    from_file = parsed("--tuning", f"@{path}")
    inline = parsed(
        "--tuning", "max_concurrent_requests=20,worker_memory_gb=6,transfer_dtype=float32"
    )
    for name in KEYS:
        assert getattr(from_file, name) == getattr(inline, name), name
    assert from_file.worker_memory_gb == 6.0 and type(from_file.worker_memory_gb) is float


@pytest.mark.parametrize(
    "text, expected",
    [
        ("max_retrys=3", "unknown key 'max_retrys'; did you mean max_retries?"),
        (
            "threads=2",
            "unknown key 'threads'; the tuning keys of efm extract: collection, ee_api_url",
        ),
        ("max_retries=3,max_retries=4", "max_retries is given twice"),
        ("max_retries", "expected KEY=VALUE,KEY=VALUE (e.g. max_retries=3), got 'max_retries'"),
        ("max_retries=", "expected KEY=VALUE"),
        ("max_retries=many", "max_retries: must be an integer, got 'many'"),
        ("max_retries=-1", "max_retries: must be 0 or more (0 = give up at the first failure)"),
        ("max_concurrent_requests=0", "max_concurrent_requests: must be a positive integer, got 0"),
        ("request_tile_size=2.5", "request_tile_size: must be an integer, got '2.5'"),
        ("worker_memory_gb=-1", "worker_memory_gb: must be a positive number, got -1"),
        ("max_requests_per_second=inf", "max_requests_per_second: must be a positive number"),
        ("retry_initial_delay=nan", "retry_initial_delay: must be a positive number of seconds"),
        ("transfer_dtype=uint8", "transfer_dtype: must be one of auto, int8, float32, got 'uint8'"),
    ],
)
def test_bad_tuning_is_one_line_naming_the_key(capsys, tmp_path, text, expected):
    output = tmp_path / "out.zarr"
    argv = [*REQUIRED[:-1], str(output), "--tuning", text, "--runner=FnApiRunner"]
    assert extract.run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("efm extract: error: --tuning: ") and expected in err, err
    assert err.count("\n") == 1
    assert not output.exists()


@pytest.mark.parametrize("flag, key", sorted(tuning.MOVED["extract"].items()))
def test_an_old_knob_flag_is_refused_saying_where_it_went(capsys, tmp_path, flag, key):
    output = tmp_path / "out.zarr"
    argv = [*REQUIRED[:-1], str(output), flag, "4", "--runner=FnApiRunner"]
    said = "true" if KEYS[key].kind is bool else "4"  # a switch (--split-zones) had no value
    assert extract.run(argv) == 2
    err = capsys.readouterr().err
    assert err == f"efm extract: error: {flag}: moved: use --tuning {key}={said} " + (
        "(rarely needed knobs are --tuning keys: docs/tuning.md)\n"
    )
    assert not output.exists()
    assert extract.run([*argv[:-3], f"{flag}=4", "--runner=FnApiRunner"]) == 2  # --flag=value too
    assert f"{flag}: moved: use --tuning {key}={said} " in capsys.readouterr().err


def test_the_grid_and_source_keys_that_were_extract_flags():
    """--collection, --ee-api-url, --scale, --grid, --split-zones (issue 20 item 4): now keys, with
    the flags' defaults and checks."""
    args = parsed()
    assert args.collection == "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
    assert args.ee_api_url == "https://earthengine-highvolume.googleapis.com"
    assert (args.scale, args.grid, args.split_zones) == (None, None, False)
    args = parsed(
        "--tuning", "scale=20,grid=utm,split_zones=true,collection=A/B,ee_api_url=http://h:1"
    )
    assert (args.scale, args.grid, args.split_zones) == (20.0, "utm", True)
    assert type(args.scale) is float and (args.collection, args.ee_api_url) == ("A/B", "http://h:1")
    for text in ("scale=0", "scale=-10", "grid=native", "split_zones=maybe"):
        with pytest.raises(InputError, match=f"^--tuning: {text.split('=')[0]}: "):
            parsed("--tuning", text)


def test_chunk_size_and_ee_project_that_were_extract_flags(capsys, tmp_path):
    """--chunk-size and --ee-project (issue 20 item 4): now keys, with the flags' defaults (1024;
    the credentials' project) and checks (an integer, at least 128, a multiple of
    request_tile_size: refused as one line naming the key, before anything is written)."""
    args = parsed()
    assert (args.chunk_size, args.ee_project) == (1024, None)
    args = parsed("--tuning", "chunk_size=512,ee_project=my-ee-project")
    assert (args.chunk_size, args.ee_project) == (512, "my-ee-project")
    assert type(args.chunk_size) is int
    with pytest.raises(InputError, match="^--tuning: chunk_size: must be an integer, got '1k'$"):
        parsed("--tuning", "chunk_size=1k")
    output = tmp_path / "out.zarr"
    argv = [*REQUIRED[:-1], str(output), "--runner=FnApiRunner"]
    for given, said in [
        ("chunk_size=64", "chunk_size: 64 is too small; use at least 128 (default 1024)"),
        (
            "chunk_size=1000,request_tile_size=256",
            "chunk_size: 1000 is not a multiple of the request tile size 256 "
            "(request_tile_size); use e.g. chunk_size=768",
        ),
    ]:
        assert extract.run([*argv, "--tuning", given]) == 2
        assert capsys.readouterr().err == f"efm extract: error: --tuning: {said}\n"
    assert not output.exists()


def test_verify_takes_its_threads_through_tuning(capsys, tmp_path):
    args = common.own_args(verify.build_parser(), ["s.zarr", "--tuning", "threads=2"])
    assert args.threads == 2
    assert common.own_args(verify.build_parser(), ["s.zarr"]).threads == 4
    assert verify.run([str(tmp_path / "s.zarr"), "--tuning", "threads=0"]) == 2
    assert capsys.readouterr().err == (
        "efm verify: error: --tuning: threads: must be a positive integer, got 0\n"
    )
    assert verify.run([str(tmp_path / "s.zarr"), "--threads", "2"]) == 2
    assert "--threads: moved: use --tuning threads=2" in capsys.readouterr().err


def test_parse_refuses_what_a_file_cannot_mean(tmp_path):
    table = tmp_path / "t.toml"
    table.write_text("[extract]\nmax_retries = 2\n")
    with pytest.raises(InputError, match=r"\[extract\] is a table"):
        core.parse(f"@{table}", KEYS)
    wrong = tmp_path / "w.toml"
    wrong.write_text("max_retries = 3\nworker_memory_gb = true\n")
    with pytest.raises(
        InputError, match=r"^--tuning: worker_memory_gb: must be a number, got True$"
    ):
        core.parse(f"@{wrong}", KEYS)
    broken = tmp_path / "b.toml"
    broken.write_text("max_retries = = 3\n")
    with pytest.raises(InputError, match="cannot read it as TOML"):
        core.parse(f"@{broken}", KEYS)
    with pytest.raises(InputError, match="no such file"):
        core.parse(f"@{tmp_path / 'absent.toml'}", KEYS)
    flag = core.Key("flag", bool, False, "a switch")
    assert core.parse(["flag=Yes"], {"flag": flag}) == {"flag": True}
    assert core.parse(None, {"flag": flag}) == {"flag": False}
    with pytest.raises(InputError, match="flag: must be true or false, got 'maybe'"):
        core.parse("flag=maybe", {"flag": flag})
