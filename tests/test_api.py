"""The public Python API: the README's example runs as written, library errors name
settings (the CLI names flags), and the package stays torch-free on import."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import essdsl

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    (tmp_path / "spaces").symlink_to(ROOT / "spaces")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md (From Python)", "exec"), {})
    printed = capsys.readouterr().out
    assert re.search(r"test ppl \d+\.\d\d \(unigram \d+\.\d\d\)", printed)
    run = essdsl.Run(tmp_path / "runs" / "from-python")
    assert run.kind == "search" and run.manifest["task"] == "lm" and len(run.metrics) == 1
    assert "provenance" in run.genotype and run.genotype_path == tmp_path / "runs" / "from-python" / "genotype.space"
    trained = essdsl.Run(tmp_path / "runs" / "from-python-train")
    assert trained.kind == "train" and trained.checkpoint.exists() and trained.last["epoch"] == 1

    from essdsl.nas.runconfig import SettingError

    with pytest.raises(SettingError, match="refusing to resume: seed 5 differs from the run's 0"):
        essdsl.search("spaces/ess_joint.space", resume=run.folder, seed=5)
    with pytest.raises(SettingError, match="refusing to resume: synthetic_tokens 3000 differs from the run's 2000"):
        essdsl.search("spaces/ess_joint.space", resume=run.folder, synthetic_tokens=3000)
    again = essdsl.search("spaces/ess_joint.space", resume=run.folder)  # finished: nothing to do but derive
    assert again.genotype == run.genotype and len(again.metrics) == 1


def test_settings_are_checked_and_named_as_the_library_calls_them(tmp_path):
    from essdsl.nas.runconfig import SettingError

    with pytest.raises(SettingError, match=r"^epochs must be a positive integer \(at most 100000\), got 0$") as caught:
        essdsl.search(ROOT / "spaces" / "ess_joint.space", out=tmp_path / "r", epochs=0)
    assert caught.value.render("--epochs").startswith("--epochs must be")
    with pytest.raises(SettingError, match="colour is not a setting of search with task lm"):
        essdsl.search(ROOT / "spaces" / "ess_joint.space", out=tmp_path / "r", colour="red")
    with pytest.raises(essdsl.EssdslError, match="unknown task 'chess'"):
        essdsl.train(ROOT / "genotypes" / "darts_v1.space", task="chess")
    assert not (tmp_path / "r").exists()  # nothing written before the settings are known good


def test_load_space_reads_files_and_text():
    from_file = essdsl.load_space(ROOT / "genotypes" / "darts_v1.space")
    from_text = essdsl.load_space(from_file.text)
    assert from_text.sha256 == from_file.sha256 and from_text.graph().name == from_file.graph().name
    model, manifest = essdsl.compile_space(from_file, sizes={"ninp": 8, "nhid": 8}, vocab=20, search=False)
    assert manifest["sizes"]["nhid"] == 8 and sum(p.numel() for p in model.parameters()) > 0


def test_import_is_lazy_and_torch_free():
    code = "import sys, essdsl; essdsl.load_space; assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
