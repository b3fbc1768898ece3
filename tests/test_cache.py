"""A poisoned cache cannot run code (issue 12, "What to build" 8).

The grammar cache once was a pickle that Lark unpickled before comparing its
hash, and generated modules were imported from ``<cache>/generated/<hash>.py``
(falling back to ``/tmp/essdsl-<uid>``).  Now the grammar cache is JSON data read
only from a private folder, and generated code is never read back from disk.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import lark
import pytest

from essdsl.lang import grammar_cache
from essdsl.lang.parse import grammar_text

ROOT = Path(__file__).resolve().parent.parent
DARTS = ROOT / "spaces" / "darts_rnn.space"


class _RunsCode:
    """Unpickling this writes the marker file: what an attacker would plant."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def check_darts(cache: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "essdsl", "check", str(DARTS)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env=dict(os.environ, ESSDSL_CACHE=str(cache), **env),
    )  # fmt: skip


def old_cache_name(grammar: str) -> str:
    key = f"{grammar}\0{lark.__version__}\0{sys.version_info[:2]}".encode("utf-8")
    return f"space-grammar-{hashlib.sha256(key).hexdigest()[:24]}.lark"


def test_a_pickle_in_the_grammar_cache_is_never_unpickled(tmp_path):
    cache, marker = tmp_path / "cache", tmp_path / "marker"
    cache.mkdir(mode=0o700)
    payload = pickle.dumps(_RunsCode(marker))
    key = grammar_cache.cache_key(grammar_text())
    (cache / old_cache_name(grammar_text())).write_bytes(payload)  # where the old code looked
    (cache / f"space-grammar-{key[:24]}.json").write_bytes(payload)  # where the new code looks
    result = check_darts(cache)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert not marker.exists(), "the cache ran code"
    # the garbage was replaced by data that loads back into a working parser
    stored = (cache / f"space-grammar-{key[:24]}.json").read_text(encoding="utf-8")
    assert grammar_cache.tables_from_text(stored, key).parse("space a cell { }")


def forged_tables(key: str) -> str:
    """Valid tables under the right key, built from a grammar that spells 'space' 'spaec':
    if the cache were trusted, every real file would fail to parse."""
    forged = lark.Lark(grammar_text().replace('"space" NAME', '"spaec" NAME'), parser="lalr", lexer="contextual",
                       propagate_positions=True, maybe_placeholders=False)  # fmt: skip
    return grammar_cache.tables_to_text(forged, key)


@pytest.mark.parametrize("mode", [0o700, 0o777, 0o770], ids=["private", "world-writable", "group-writable"])
def test_only_a_private_cache_folder_is_read(tmp_path, mode):
    cache = tmp_path / "cache"
    cache.mkdir()
    key = grammar_cache.cache_key(grammar_text())
    target = cache / f"space-grammar-{key[:24]}.json"
    forgery = forged_tables(key)
    target.write_text(forgery, encoding="utf-8")
    target.chmod(0o600)
    cache.chmod(mode)
    result = check_darts(cache)
    if mode == 0o700:  # the user's own cache is trusted: the forgery shows (so this test can fail)
        assert result.returncode == 1 and "unexpected" in result.stderr, result.stderr
    else:  # a folder others can write (like /tmp) is neither read nor written
        assert result.returncode == 0, result.stderr
        assert target.read_text(encoding="utf-8") == forgery


def test_a_cache_file_others_can_write_is_not_read(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    key = grammar_cache.cache_key(grammar_text())
    target = cache / f"space-grammar-{key[:24]}.json"
    target.write_text(forged_tables(key), encoding="utf-8")
    target.chmod(0o666)
    assert check_darts(cache).returncode == 0


def test_tables_round_trip_and_a_wrong_key_is_refused():
    text = grammar_text()
    parser = lark.Lark(text, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=False)
    stored = grammar_cache.tables_to_text(parser, "k1")
    loaded = grammar_cache.tables_from_text(stored, "k1")
    source = DARTS.read_text(encoding="utf-8")
    assert loaded.parse(source) == parser.parse(source)
    assert grammar_cache.tables_from_text(stored, "k2") is None


def test_generated_code_is_never_imported_from_the_cache(tmp_path, monkeypatch):
    """Plant a module where the old code imported it from, under the exact name it used."""
    from essdsl.lang.check import load_graph
    from essdsl.compile import ModelConfig, generate_source
    from essdsl.compile.codegen import load_source

    graph = load_graph(DARTS, sizes={"ninp": 4, "nhid": 4})
    source = generate_source(graph, ModelConfig(vocab=10, search=True)) + "\n# planted test variant\n"
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    marker = tmp_path / "marker"
    evil = f"open({str(marker)!r}, 'w').write('ran')\n"
    monkeypatch.setenv("ESSDSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    planted = [tmp_path / "cache" / "generated", tmp_path / "home" / ".cache" / "essdsl" / "generated"]
    for folder in planted:
        folder.mkdir(parents=True)
        (folder / f"{digest}.py").write_text(evil, encoding="utf-8")
        os.utime(folder / f"{digest}.py", (0, 0))
    model_class = load_source(source, graph)
    assert model_class.__name__.endswith("Model")
    assert not marker.exists(), "a planted module ran"
    for folder in planted:
        assert [p.name for p in folder.iterdir()] == [f"{digest}.py"]  # nothing written there either
    import inspect

    assert "planted test variant" in inspect.getsource(sys.modules[model_class.__module__])  # TorchScript can read it
