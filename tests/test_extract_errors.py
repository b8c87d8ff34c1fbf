"""Bad input fails fast: one line on stderr naming the flag, exit 2, nothing written."""

import pytest

from emulators.earthengine import EarthEngineEmulator
from emulators.earthengine.synthetic import make_embedding_collection
from pipelines import extract

GOOD_BBOX = "3.0,45.0,3.01,45.01"


@pytest.fixture(scope="module")
def emu():
    emulator = EarthEngineEmulator()
    for image in make_embedding_collection(years=(2021,), seed=1):
        emulator.add_image(**image)
    with emulator:
        yield emulator


def run(capsys, emu, tmp_path, *args, output=None):
    output = output or str(tmp_path / "out.zarr")
    argv = [
        "--output",
        output,
        "--tuning",
        f"ee_api_url={emu.url}",
        "--tuning",
        "ee_project=p",
        "--runner=FnApiRunner",
        *args,
    ]
    code = extract.run(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "args, flag, words",
    [
        (["--bbox", "3.1,45,3.0,45.1", "--years", "2021"], "--bbox", "inverted"),
        (["--bbox", "3,95,4,96", "--years", "2021"], "--bbox", "out of range"),
        (["--bbox", GOOD_BBOX, "--years", "2015"], "--years", "before 2017"),
        (["--bbox", GOOD_BBOX, "--years", "2099"], "--years", "future"),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--tuning", "chunk_size=16"],
            "--tuning",
            "chunk_size: 16 is too small; use at least 128",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--tuning", "chunk_size=abc"],
            "--tuning",
            "chunk_size: must be an integer, got 'abc'",
        ),
        (
            [
                "--bbox",
                GOOD_BBOX,
                "--years",
                "2021",
                "--tuning",
                "chunk_size=1000",
                "--tuning",
                "request_tile_size=256",
            ],
            "--tuning",
            "chunk_size: 1000 is not a multiple of the request tile size 256",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--chunk-size", "512"],
            "--chunk-size",
            "moved: use --tuning chunk_size=512 ",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--ee-project=other"],
            "--ee-project",
            "moved: use --tuning ee_project=other ",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--tuning", "ee_project= "],
            "--tuning",
            "expected KEY=VALUE",
        ),
        # --source-root = --cog-root = --zarr-root: one option, its meaning following --source
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--cog-root", "/mirror"],
            "--cog-root",
            "only used with --source cog; add --source cog",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--source", "zarr", "--cog-root", "/m"],
            "--cog-root",
            "only used with --source cog; add --source cog",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--source", "cog", "--zarr-root", "/s"],
            "--zarr-root",
            "only used with --source zarr; add --source zarr",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--zarr-root", "/s"],
            "--zarr-root",
            "only used with --source zarr; add --source zarr",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--source-root", "/s"],
            "--source-root",
            "only used with --source cog or zarr",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--source", "zarr"],
            "--zarr-root",
            "--source zarr needs --zarr-root (or --source-root)",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--source", "cog"],
            "--cog-root",
            "--source cog needs --cog-root (or --source-root)",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--source", "cog"]
            + ["--source-root", "/m", "--cog-root", "/n"],
            "--cog-root",
            "the source root is given twice (--source-root before)",
        ),
        (  # a spelling of another source is named first, as before --source-root
            ["--bbox", GOOD_BBOX, "--years", "2021", "--source", "cog"]
            + ["--cog-root", "/m", "--zarr-root", "/n"],
            "--zarr-root",
            "only used with --source zarr",
        ),
        (
            [
                "--bbox",
                GOOD_BBOX,
                "--years",
                "2021",
                "--tuning",
                "chunk_size=1024",
                "--tuning",
                "request_tile_size=1024",
                "--tuning",
                "transfer_dtype=float32",
            ],
            "--tuning",
            "request_tile_size: 1024 px does not fit",
        ),
        (
            ["--bbox", "-20,40,20,41", "--years", "2021", "--crs", "EPSG:32631"],
            "--bbox/--aoi",
            "too large for EPSG:32631",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--tuning", "collection=NO/SUCH/COLLECTION"],
            "--tuning",
            "collection: 'NO/SUCH/COLLECTION' is not an Earth Engine collection",
        ),
        (["--bbox", GOOD_BBOX, "--years", "2019"], "--years", "no images for 2019"),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--tuning", "max_concurrent_requests=0"],
            "--tuning",
            "max_concurrent_requests: must be a positive integer",
        ),
        (
            ["--bbox", GOOD_BBOX, "--years", "2021", "--chunk_sise", "3"],
            "--chunk_sise",
            "unknown flag",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    capsys, emu, tmp_path, ee_token, args, flag, words
):
    code, err = run(capsys, emu, tmp_path, *args)
    assert code == 2
    assert err.startswith(f"efm extract: error: {flag}: ") and words in err and "\n" not in err, err
    assert not (tmp_path / "out.zarr").exists()
    assert emu.count("computePixels") == 0


@pytest.mark.parametrize(
    "given, source, cog_root, zarr_root",
    [
        (["--source-root", "/m"], "cog", "/m", None),
        (["--cog-root", "/m"], "cog", "/m", None),
        (["--source-root", "s3://b/aef.zarr"], "zarr", None, "s3://b/aef.zarr"),
        (["--zarr-root=s3://b/aef.zarr"], "zarr", None, "s3://b/aef.zarr"),
    ],
)
def test_source_root_is_one_option_whose_meaning_follows_the_source(
    given, source, cog_root, zarr_root
):
    """--source-root, --cog-root and --zarr-root: one option (one action, counted once in the
    surface), read by the source --source names."""
    from pipelines import common

    parser = extract.build_parser()
    roots = [a for a in parser._actions if "--source-root" in a.option_strings]
    assert [a.option_strings for a in roots] == [["--source-root", "--cog-root", "--zarr-root"]]
    argv = ["--bbox", GOOD_BBOX, "--years", "2021", "--output", "x.zarr", "--source", source]
    args, _ = common.split_args(parser, [*argv, *given])
    extract.check_source_flags(args)
    assert (args.cog_root, args.zarr_root) == (cog_root, zarr_root)


def test_unreadable_aoi(capsys, emu, tmp_path, ee_token):
    bad = tmp_path / "aoi.geojson"
    bad.write_text("{ this is not geojson")
    code, err = run(capsys, emu, tmp_path, "--aoi", str(bad), "--years", "2021")
    assert (
        code == 2 and err.startswith("efm extract: error: --aoi: cannot read") and "\n" not in err
    )
    assert not (tmp_path / "out.zarr").exists()


def test_existing_output_is_refused(capsys, emu, tmp_path, ee_token):
    existing = tmp_path / "out.zarr"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    code, err = run(capsys, emu, tmp_path, "--bbox", GOOD_BBOX, "--years", "2021")
    # not an efm store: no advice to --resume or --overwrite it, which would destroy it
    assert (
        code == 2
        and "--output: " in err
        and "is not an efm embedding store" in err
        and "--resume" not in err
        and "--overwrite" not in err
    )
    assert (existing / "keep.txt").read_text() == "precious" and len(list(existing.iterdir())) == 1


def test_missing_credentials_say_how_to_authenticate(capsys, emu, tmp_path, monkeypatch):
    monkeypatch.delenv("EFM_EE_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    import transforms.sources.earthengine as ee_module

    monkeypatch.setattr(ee_module, "_initialized_with", None)
    code, err = run(capsys, emu, tmp_path, "--bbox", GOOD_BBOX, "--years", "2021")
    assert (
        code == 2
        and "no Earth Engine credentials" in err
        and "gcloud auth" in err
        and "EFM_EE_ACCESS_TOKEN" in err
    )
    assert "\n" not in err and not (tmp_path / "out.zarr").exists()


def test_missing_bucket_is_refused(capsys, emu, tmp_path, gcs, ee_token):
    code, err = run(
        capsys,
        emu,
        tmp_path,
        "--bbox",
        GOOD_BBOX,
        "--years",
        "2021",
        output="gs://no-such-bucket-efm/out.zarr",
    )
    assert code == 2 and "bucket 'no-such-bucket-efm'" in err and "does not exist" in err


def test_unknown_flags_are_refused_inside_the_flex_template_launcher_too(monkeypatch):
    """Every option Dataflow's launcher adds is a Beam option (tests/test_templates.py checks the
    list), so an unknown name is refused there as well, not passed on with a warning."""
    from pipelines import common

    parser = extract.build_parser()
    argv = [
        "--bbox",
        GOOD_BBOX,
        "--years",
        "2021",
        "--output",
        "x.zarr",
        "--launcher_only_option=1",
    ]
    with pytest.raises(Exception, match="unknown flag"):
        common.split_args(parser, argv)
    monkeypatch.setenv("FLEX_TEMPLATE_PYTHON_PY_FILE", "templates/extract/main.py")
    with pytest.raises(Exception, match="^--launcher_only_option: unknown flag"):
        common.split_args(parser, argv)
    args, _ = common.split_args(
        parser,
        argv[:-1]
        + ["--template_location=gs://b/job", "--labels=goog-dataflow-provided-template-type=flex"],
    )
    assert args.output == "x.zarr"
