"""`python -m sgg_kernels.generate`'s folder can always be finished: seeds written twice by two runs,
unreadable parts, and options that would only fail after config.json was written (a shape or a class
count the model cannot take, a NaN) are all handled before or during a rerun; seed ranges stay ranges."""
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from sgg_kernels.generate import main, parse_seeds

COMMON = ["--model", "toy-random", "--steps", "3", "--schedule", "sgg:3,2,0.5", "--threads", "1"]


def run(out: Path, *extra: str, seeds="0-11", batch="4") -> dict:
    path = main([*COMMON, "--seeds", seeds, "--batch-size", batch, "--out", str(out), *extra])
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """An uninterrupted run: what every finished folder below must equal, bit for bit."""
    return run(tmp_path_factory.mktemp("clean") / "out")


def assert_same(got, expected):
    assert got.keys() == expected.keys()
    for k in expected:
        assert np.array_equal(got[k], expected[k]), k


# Item 5: two runs into one folder.
def test_equal_copies_of_a_seed_in_two_parts_are_merged_as_one(tmp_path, clean):
    out = tmp_path / "out"
    run(out)
    parts = sorted((out / "parts").glob("seeds-*.npz"))
    shutil.copy(parts[1], out / "parts" / "seeds-000000004-000000009.npz")  # as a second run's batch would
    (out / "samples.npz").unlink()
    assert_same(run(out), clean)


def test_different_copies_of_a_seed_are_refused_naming_both_files(tmp_path):
    out = tmp_path / "out"
    run(out)
    first = sorted((out / "parts").glob("seeds-*.npz"))[0]
    with np.load(first) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["samples"][0] += 1  # what a model whose output depends on the batch gives at another batch size
    other = out / "parts" / "seeds-000000000-000000001.npz"
    np.savez(other, **arrays)
    with pytest.raises(RuntimeError, match=f"seed 0 was written twice with different results, in .*{other.name} "
                                           f"and in .*{first.name}.*delete one of the two files"):
        run(out)


# Item 6: a part that cannot be read is set aside and made again.
@pytest.mark.parametrize("damage", ["truncated", "empty", "corrupted"])
def test_unreadable_part_is_set_aside_and_redone(tmp_path, clean, capsys, damage):
    out = tmp_path / "out"
    run(out)
    part = sorted((out / "parts").glob("seeds-*.npz"))[1]
    data = part.read_bytes()
    if damage == "truncated":
        part.write_bytes(data[:len(data) // 2])
    elif damage == "empty":
        part.write_bytes(b"")
    else:  # flip bytes inside the stored arrays: the zip's CRC check fails on reading
        middle = len(data) // 2
        part.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 16]) + data[middle + 16:])
    (out / "samples.npz").unlink()
    capsys.readouterr()
    assert_same(run(out), clean)
    said = capsys.readouterr().out
    assert f"{part} cannot be read" in said and f"moved it to {part.name}.bad" in said
    assert (out / "parts" / f"{part.name}.bad").exists()
    assert "generated 4 of them" in said  # exactly the bad part's seeds were made again


# Item 7: the model is tried once before anything is written.
@pytest.mark.parametrize("extra, message", [
    (["--shape", "-1"], "--shape sizes must be positive"),
    (["--shape", "0"], "--shape sizes must be positive"),
    (["--shape", "3"], "--shape 3 and --classes 4: one trial sample"),
    (["--classes", "100000"], "--classes 100000: one trial sample .label 99999. failed"),
    (["--shift", "nan"], "--shift must be a finite number, got nan"),  # item 8
    (["--shift", "inf"], "--shift must be a finite number, got inf"),
    (["--timeout", "inf"], "--timeout must be a finite number"),
])
def test_options_the_model_cannot_take_are_refused_before_any_file(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        run(out, *extra, "--grid", "sd3")
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_folder_with_a_config_and_no_sample_takes_new_settings(tmp_path, clean):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"model": "toy-random", "shape": [3]}')  # a run that crashed at once
    assert_same(run(out), clean)
    with pytest.raises(SystemExit):  # once samples exist, other settings are refused as before
        run(out, "--steps", "4")


# Item 9: ranges stay ranges.
def test_a_trillion_seeds_parse_as_two_ranges():
    seeds = parse_seeds("5-9,1000-999999999999")
    assert len(seeds) == 5 + 999999999000
    assert (seeds[0], seeds[4], seeds[5], seeds[-1]) == (5, 9, 1000, 999999999999)
    assert seeds[3:7] == [8, 9, 1000, 1001]
    with pytest.raises(ValueError, match="names some seeds twice"):
        parse_seeds("0-999999999999,5-6")


def test_merge_removes_only_dead_writers_temporary_files(tmp_path):
    """A running writer's temporary file survives another run's merge; a dead one's is removed."""
    out = tmp_path / "out"
    run(out)
    live = out / "parts" / f".seeds-x.npz.tmp-{os.getpid()}"
    dead = out / "parts" / ".seeds-y.npz.tmp-999999999"
    live.write_bytes(b""), dead.write_bytes(b"")
    (out / "samples.npz").unlink()
    run(out)
    assert live.exists() and not dead.exists()
