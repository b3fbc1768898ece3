"""Hostile input to the run commands: options out of range, bad data folders,
dangerous output paths, corrupted or tampered run files, faults while writing.
Every case must end with a clear message and exit 1 or 2, never a traceback,
and leave no file half-written."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from essdsl.options import RANGES, option_problems
from test_cli_run import essdsl  # python -m essdsl in a subprocess

ROOT = Path(__file__).resolve().parents[1]
SPACE = "spaces/darts_rnn.space"


def assert_clean_failure(result, fragment, code=None):
    assert result.returncode != 0, result.stdout
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert fragment in result.stderr, result.stderr


# ----------------------------------------------------------------- options
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["search", SPACE, "--nhid", "-5"], "--nhid must be a positive integer"),
        (["search", SPACE, "--nhid", "100000000"], "--nhid must be a positive integer (at most"),
        (["search", SPACE, "--batch-size", "100000"], "--batch-size must be"),
        (["search", SPACE, "--synthetic-tokens", "100000000000"], "--synthetic-tokens must be"),
        (["search", SPACE, "--seed", "-1"], "--seed must be"),
        (["search", SPACE, "--lr", "-1"], "--lr must be a finite number greater than 0"),
        (["search", SPACE, "--lr", "nan"], "--lr must be a finite number"),
        (["search", SPACE, "--lr", "inf"], "--lr must be a finite number"),
        (["search", SPACE, "--wd", "nan"], "--wd must be a finite number"),
        (["search", SPACE, "--arch-lr", "nan"], "--arch-lr must be"),
        (["search", SPACE, "--dropoutx", "2"], "--dropoutx must be a probability in [0, 1)"),
        (["search", SPACE, "--dropout", "1.0"], "--dropout must be a probability"),
        (["search", SPACE, "--dropouth", "-0.5"], "--dropouth must be a probability"),
        (["search", SPACE, "--clip", "-1"], "--clip must be"),
        (["search", SPACE, "--bptt", "0"], "--bptt must be"),
        (["search", SPACE, "--final-epochs", "-1"], "--final-epochs must be"),
        (["search", SPACE, "--data", "/nonexistent", "--synthetic-tokens", "5000"], "cannot be combined with --data"),
        (["train", "genotypes/darts_v1.space", "--ninp", "0"], "--ninp must be a positive integer"),
        (["eval", "/nonexistent/model.pt", "--batch-size", "0"], "--batch-size must be"),
        (["compile", SPACE, "--vocab", "-3"], "--vocab must be"),
        (["check", SPACE, "--nhid", "100000"], "--nhid must be"),
    ],
)
def test_out_of_range_options_are_usage_errors(args, fragment):
    assert_clean_failure(essdsl(*args), fragment, code=2)


def test_every_numeric_range_rejects_nan_and_its_bounds():
    for name, limits in RANGES.items():
        low = limits.low - 1 if limits.kind is int else (limits.low if limits.low_open else limits.low - 1e-9)
        assert option_problems({name: limits.kind(low)}), name
        assert not option_problems({name: limits.kind(limits.low + (1 if limits.low_open else 0))}), name
        if limits.high != float("inf"):
            above = limits.high + 1 if limits.kind is int else limits.high
            assert option_problems({name: limits.kind(above)}), name
        if limits.kind is float:
            assert option_problems({name: float("nan")}) and option_problems({name: float("-inf")}), name


def test_a_valid_split_of_one_word_names_the_file(tmp_path):
    (tmp_path / "train.txt").write_text("a b c d e f g\n" * 200)
    (tmp_path / "test.txt").write_text("a b c d e f g\n" * 20)
    (tmp_path / "valid.txt").write_text("word\n")
    r = essdsl("search", SPACE, "--data", tmp_path, "--nhid", "8", "--ninp", "8", "--batch-size", "4")
    assert_clean_failure(r, f"{tmp_path}/valid.txt: error: 2 tokens are too few for batch size", code=1)


# ----------------------------------------------------------------- output paths
def _temp_files(folder):
    return [p.name for p in Path(folder).rglob(".*.tmp*")]


def test_compile_and_show_refuse_to_overwrite_their_input(tmp_path):
    victim = tmp_path / "victim.space"
    victim.write_bytes((ROOT / SPACE).read_bytes())
    before = victim.read_bytes()
    assert_clean_failure(essdsl("compile", victim, "-o", victim, "--nhid", "8", "--ninp", "8"), "refusing to overwrite", code=1)
    assert_clean_failure(essdsl("show", victim, "-o", victim), "refusing to overwrite", code=1)
    assert victim.read_bytes() == before
    assert_clean_failure(essdsl("compile", victim, "-o", tmp_path, "--nhid", "8", "--ninp", "8"), "is a folder", code=1)
    assert_clean_failure(essdsl("compile", victim, "-o", victim / "x.pt", "--nhid", "8", "--ninp", "8"), "is a file, not a folder", code=1)
    assert_clean_failure(essdsl("compile", victim, "-o", "/dev/full", "--nhid", "8", "--ninp", "8"), "not a regular file", code=1)
    assert _temp_files(tmp_path) == []


def test_outputs_get_the_usual_permissions(tmp_path):
    """mkstemp creates 0600 files; what essdsl writes follows the umask like any file."""
    dot = tmp_path / "cell.dot"
    r = essdsl("show", SPACE, "--format", "dot", "-o", dot)
    assert r.returncode == 0, r.stderr
    mask = os.umask(0)
    os.umask(mask)
    assert dot.stat().st_mode & 0o777 == 0o666 & ~mask
    dot.chmod(0o640)  # rewriting keeps the mode the file has
    assert essdsl("show", SPACE, "--format", "dot", "-o", dot).returncode == 0
    assert dot.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("kind", ["file", "under-file", "foreign-folder"])
def test_run_folder_that_cannot_hold_a_run_is_refused_before_any_work(tmp_path, kind):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    out = {"file": tmp_path / "afile", "under-file": tmp_path / "afile" / "run", "foreign-folder": tmp_path / "other"}[kind]
    fragment = {"file": "it is a file", "under-file": "is a file, not a folder", "foreign-folder": "not an essdsl run folder"}[kind]
    assert_clean_failure(essdsl("search", SPACE, "--out", out), fragment, code=1)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine" and sorted(os.listdir(tmp_path / "other")) == ["notes.txt"]


def test_full_disk_and_read_only_folder_leave_no_temp_file(tmp_path, monkeypatch):
    import errno

    from essdsl import files

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def full_disk(fd, data):
        os.write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_all", full_disk)
    with pytest.raises(files.OutputError, match="no space left"):
        files.atomic_write_bytes(target, b"x" * 1000)
    assert target.read_bytes() == b"old" and _temp_files(tmp_path) == []
    monkeypatch.undo()

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    with pytest.raises(files.OutputError, match="read-only"):
        files.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"


FULL_DISK = """
import errno, os, sys
import essdsl.files as files
def full(fd, data):
    os.write(fd, bytes(data[:100]))
    raise OSError(errno.ENOSPC, "No space left on device")
files._write_all = full
sys.argv = ["essdsl", *sys.argv[1:]]
from essdsl.cli import main
main()
"""


def test_compile_on_a_full_disk_is_a_clear_error(tmp_path):
    """Fault injection: every write fails with ENOSPC after 100 bytes (torch writing
    to a full disk itself used to abort with a c10::Error and exit 134)."""
    out = tmp_path / "build" / "m.pt"
    r = subprocess.run(
        [sys.executable, "-c", FULL_DISK, "compile", SPACE, "--nhid", "8", "--ninp", "8", "-o", out],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert_clean_failure(r, "no space left on the device", code=1)
    assert not out.exists() and _temp_files(tmp_path) == []


# ----------------------------------------------------------------- divergence (D7)
def _tiny_trainer(run_dir, max_steps=4):
    import torch

    import essdsl
    from essdsl.tasks.corpus import synthetic_corpus
    from essdsl.tasks.lm import LanguageModelTask

    torch.set_num_threads(1)  # as the CLI does for small cells: two threads on a busy machine are 20x slower
    task = LanguageModelTask(synthetic_corpus(0, train=3000, valid=600, test=300), bptt=8)  # DARTS's search dropouts
    return essdsl.trainer(ROOT / SPACE, task, run_dir=run_dir, ninp=8, nhid=8, epochs=1, max_steps=max_steps, batch_size=8,
                          eval_batch_size=10, bptt=8)  # fmt: skip


def test_validation_losses_that_are_not_a_good_state():
    from essdsl.nas.trainer import usable_validation_loss

    chance = math.log(50)  # guessing among 50 words
    assert usable_validation_loss(3.9, chance) and usable_validation_loss(20.0, chance)
    for loss in (math.inf, math.nan, -math.inf, 5.6e20, 1e3):
        assert not usable_validation_loss(loss, chance), loss


def test_divergence_before_any_checkpoint_names_no_missing_file_and_shows_the_rollbacks(tmp_path):
    from essdsl.nas.runconfig import Diverged

    trainer = _tiny_trainer(tmp_path / "run")
    trainer._train_step = lambda: math.nan
    with pytest.raises(Diverged) as caught:
        trainer.run()
    message = str(caught.value)
    assert "no checkpoint was written yet" in message and "checkpoint.pt" not in message
    assert message.count("rollback:") == 3 and "lr halved to" in message


def test_an_absurd_finite_validation_loss_is_rolled_back(tmp_path):
    trainer = _tiny_trainer(tmp_path / "run")
    real = trainer.evaluate
    losses = iter([{"loss": 5.6e20, "ppl": math.inf}])
    trainer.evaluate = lambda split="valid": next(losses, None) or real(split)
    notes = trainer.notes
    trainer.run()
    # lr 20 on this tiny model really does reach ~1e20 after a few steps: more rollbacks may follow
    assert trainer.rollbacks >= 1 and "5.6e+20" in notes[0] and trainer.lr <= trainer.cfg.lr / 2
    assert len(trainer.history) == 1 and trainer.history[0]["valid_loss"] < 10


# ----------------------------------------------------------------- run files (D9, D12)
TINY = ["--ninp", "8", "--nhid", "8", "--batch-size", "8", "--bptt", "8", "--threads", "1",
        "--synthetic-tokens", "2000", "--epochs", "1", "--max-steps", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny search run, copied by each test that damages it."""
    run = tmp_path_factory.mktemp("runs") / "run"
    r = essdsl("search", SPACE, *TINY, "--out", run)
    assert r.returncode == 0, r.stderr
    return run


@pytest.fixture()
def run_copy(finished_run, tmp_path):
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def test_run_files_are_strict_json_and_carry_checksums(finished_run):
    from essdsl.nas.runfiles import read_metrics, read_run_manifest, sha256_file

    manifest = read_run_manifest(finished_run)
    assert sha256_file(finished_run / "checkpoint.pt") == manifest["checksums"]["checkpoint.pt"][0]
    for line in (finished_run / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl"))
    assert read_metrics(finished_run / "metrics.jsonl")[0]["epoch"] == 1


def test_non_finite_metrics_round_trip_as_strings(tmp_path):
    from essdsl.nas.runfiles import metrics_line, read_metrics

    line = metrics_line({"epoch": 1, "train_ppl": math.inf, "valid_ppl": 12.5, "elapsed_s": 1.0, "lr": math.nan})
    assert "Infinity" not in line and "NaN" not in line
    (tmp_path / "metrics.jsonl").write_text(line)
    [record] = read_metrics(tmp_path / "metrics.jsonl")
    assert record["train_ppl"] == math.inf and math.isnan(record["lr"])


MANIFEST_DAMAGE = {
    "list": lambda m: [m],
    "null": lambda m: None,
    "missing corpus": lambda m: {k: v for k, v in m.items() if k != "corpus"},
    "vocab a string": lambda m: {**m, "corpus": {**m["corpus"], "vocab": "many"}},
    "space a list": lambda m: {**m, "space": []},
    "sizes not ints": lambda m: {**m, "sizes": {"nhid": [8]}},
    "kind unknown": lambda m: {**m, "kind": "party"},
    "config missing bptt": lambda m: {**m, "config": {k: v for k, v in m["config"].items() if k != "bptt"}},
}
FIELD = {"list": "expected an object with fields, found list", "null": "found null", "missing corpus": "'corpus'", "vocab a string": "corpus.vocab",
         "space a list": "'space'", "sizes not ints": "sizes.nhid", "kind unknown": "'kind'", "config missing bptt": "config.bptt"}  # fmt: skip


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_run_manifest_of_the_wrong_shape_names_the_field(finished_run, tmp_path, damage):
    from essdsl.nas.runfiles import RunFileError, read_run_manifest

    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST_DAMAGE[damage](json.loads((finished_run / "manifest.json").read_text()))))
    with pytest.raises(RunFileError, match="manifest.json") as caught:
        read_run_manifest(tmp_path)
    assert FIELD[damage] in str(caught.value)


METRICS_DAMAGE = {
    "invalid UTF-8": (b'{"epoch": 1, "train_ppl": 2.0, "valid_ppl": 3.0, "elapsed_s": 1}\n\xff\xfe\n', ":2: error: not UTF-8"),
    "not JSON": (b"{epoch\n", ":1: error: not valid JSON"),
    "Infinity": (b'{"epoch": 1, "train_ppl": Infinity, "valid_ppl": 3.0, "elapsed_s": 1}\n', ":1: error: not valid JSON"),
    "a list": (b"[1, 2]\n", ":1: expected an object with fields"),
    "ppl a word": (b'{"epoch": 1, "train_ppl": "low", "valid_ppl": 3.0, "elapsed_s": 1}\n', ":1: field 'train_ppl'"),
    "no epoch": (b'{"train_ppl": 2.0, "valid_ppl": 3.0, "elapsed_s": 1}\n', ":1: field 'epoch': missing"),
}


@pytest.mark.parametrize("damage", list(METRICS_DAMAGE))
def test_metrics_of_the_wrong_shape_name_the_line_and_field(tmp_path, damage):
    from essdsl.nas.runfiles import RunFileError, read_metrics

    data, fragment = METRICS_DAMAGE[damage]
    (tmp_path / "metrics.jsonl").write_bytes(data)
    with pytest.raises(RunFileError) as caught:
        read_metrics(tmp_path / "metrics.jsonl")
    assert f"metrics.jsonl{fragment}" in str(caught.value)


CHECKPOINT_DAMAGE = {
    "list": (lambda s: [s], "is not an essdsl checkpoint"),
    "missing progress": (lambda s: {k: v for k, v in s.items() if k != "progress"}, "field 'progress': missing"),
    "epoch a string": (lambda s: {**s, "progress": {**s["progress"], "epoch": "first"}}, "progress.epoch"),
    "model a list": (lambda s: {**s, "model": [1, 2]}, "field 'model'"),
    "weights not tensors": (lambda s: {**s, "model": {k: 0 for k in s["model"]}}, "model."),
    "history null": (lambda s: {**s, "history": None}, "field 'history'"),
    "rng missing": (lambda s: {k: v for k, v in s.items() if k != "rng"}, "field 'rng': missing"),
    "sizes wrong": (lambda s: {**s, "run": {**s["run"], "sizes": "big"}}, "run.sizes"),
}


@pytest.mark.parametrize("damage", list(CHECKPOINT_DAMAGE))
def test_checkpoint_of_the_wrong_shape_names_the_field(run_copy, damage):
    """Written through essdsl's own saver, so the checksum matches and the schema is what refuses it."""
    import torch

    from essdsl.nas.runfiles import save_checkpoint
    from essdsl.nas.checkpoint import load_checkpoint
    from essdsl.nas.runconfig import RunError

    change, fragment = CHECKPOINT_DAMAGE[damage]
    state = torch.load(run_copy / "checkpoint.pt", weights_only=True)
    save_checkpoint(change(state), run_copy / "checkpoint.pt")
    with pytest.raises(RunError, match="checkpoint.pt") as caught:
        load_checkpoint(run_copy / "checkpoint.pt")
    assert fragment in str(caught.value)


def test_damaged_run_files_through_the_cli(run_copy):
    (run_copy / "metrics.jsonl").write_bytes((run_copy / "metrics.jsonl").read_bytes() + b"\xff\n")
    assert_clean_failure(essdsl("compare", run_copy), "metrics.jsonl:2: error: not UTF-8", code=1)
    assert_clean_failure(essdsl("plot", run_copy), "metrics.jsonl:2: error: not UTF-8", code=1)
    (run_copy / "manifest.json").write_text("[]")
    assert_clean_failure(essdsl("derive", run_copy), "manifest.json: expected an object with fields, found list", code=1)


class _Payload:
    """Unpickling this calls a function: what a malicious checkpoint would do."""

    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_tampered_checkpoint_is_refused_and_pickled_code_is_not_advised(run_copy):
    data = bytearray((run_copy / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run_copy / "checkpoint.pt").write_bytes(bytes(data))
    assert_clean_failure(essdsl("derive", run_copy), "does not match the sha256 recorded", code=1)

    import torch

    from essdsl.nas.checkpoint import load_checkpoint
    from essdsl.nas.runconfig import RunError

    manifest = json.loads((run_copy / "manifest.json").read_text())
    del manifest["checksums"]  # a run from before checksums: only the unpickler guards it
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    torch.save({"format": "essdsl-checkpoint-2", "x": _Payload()}, run_copy / "checkpoint.pt")
    with pytest.raises(RunError) as caught:
        load_checkpoint(run_copy / "checkpoint.pt")
    assert "the Python object print" in str(caught.value) and "weights_only" not in str(caught.value)


def test_eval_of_a_space_file_says_what_eval_expects():
    r = essdsl("eval", SPACE)
    assert_clean_failure(r, "to evaluate a genotype, train it first", code=1)
    assert "weights_only" not in r.stderr


def test_resume_removes_temp_files_a_kill_left(run_copy):
    stale = [run_copy / ".checkpoint.pt.tmp12345", run_copy / ".metrics.jsonl.tmp999", run_copy / ".manifest.json.x8_k2q.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    keep = run_copy / "notes.tmp"
    keep.write_text("not ours")
    r = essdsl("search", SPACE, "--resume", run_copy, "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert not any(path.exists() for path in stale) and keep.exists()


def test_search_verifies_the_artifact(tmp_path):
    artifact = tmp_path / "m.pt"
    r = essdsl("compile", SPACE, "--ninp", "8", "--nhid", "8", "-o", artifact)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "m.manifest.json").read_text())
    assert len(manifest["artifact_sha256"]) == 64
    artifact.write_bytes(artifact.read_bytes() + b"garbage")
    assert_clean_failure(essdsl("search", artifact, *TINY), "does not match its manifest", code=1)
    artifact.write_bytes(b"garbage")
    assert_clean_failure(essdsl("search", artifact, *TINY), "does not match its manifest", code=1)
    (tmp_path / "m.manifest.json").write_text(json.dumps({**manifest, "space": None}))
    assert_clean_failure(essdsl("search", artifact, *TINY), "field 'space'", code=1)


def test_derive_and_plot_refuse_bad_outputs(run_copy):
    before = (ROOT / SPACE).read_bytes()
    assert_clean_failure(essdsl("derive", run_copy, "-o", SPACE), "refusing to overwrite", code=1)
    assert (ROOT / SPACE).read_bytes() == before
    (run_copy / "afile").write_text("x")
    assert_clean_failure(essdsl("plot", run_copy, "--out", run_copy / "afile"), "is a file, not a folder", code=1)
