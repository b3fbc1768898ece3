"""CoNLL reading: columns, label schemes and their conversion, the held-out slice,
and file:line errors for bad files."""

from pathlib import Path

import pytest

from essdsl.tasks.tagging_data import (
    Columns,
    ConllError,
    DataError,
    detect_scheme,
    load_tagging_data,
    read_conll,
    spans,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

# CoNLL-2003 style (IOB1: I- opens an entity, B- only between two of one type)
NER_IOB1 = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
Paris NNP I-NP I-LOC
Rome NNP I-NP B-LOC
"""


def write_folder(folder: Path, train: str, test: str, valid=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)
    if valid is not None:
        (folder / "dev.txt").write_text(valid)
    return folder


def test_columns_spec():
    c = Columns.parse("word,pos,-,tag")
    assert (c.word, c.tag, c.features) == (0, 3, ("pos",))
    for bad in ("word,pos", "pos,tag", "word,word,tag", "word,,tag", "word,pos,pos,tag"):
        with pytest.raises(DataError):
            Columns.parse(bad)


def test_iob1_ner_is_detected_and_converted(tmp_path):
    folder = write_folder(tmp_path / "ner", NER_IOB1, NER_IOB1, valid=NER_IOB1)
    data = load_tagging_data(folder, Columns.parse("word,pos,-,tag"), min_count=1)
    assert data.file_scheme == "iob1" and data.valid_source == "dev.txt"
    first, second = data.train
    assert first.words == ["EU", "rejects", "German", "call", "."]
    assert first.features == [["NNP", "VBZ", "JJ", "NN", "."]]
    assert first.tags == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert second.tags == ["B-PER", "I-PER", "B-LOC", "B-LOC"]
    assert second.lines == [9, 10, 11, 12]
    iobes = load_tagging_data(folder, Columns.parse("word,-,-,tag"), scheme="iobes", min_count=1)
    assert iobes.train[1].tags == ["B-PER", "E-PER", "S-LOC", "S-LOC"]
    assert iobes.features == [] and spans(iobes.train[1].tags) == spans(second.tags)


def test_scheme_detection():
    def sentences(*tag_lists):
        from essdsl.tasks.tagging_data import Sentence

        return [Sentence(["w"] * len(t), [], list(t), list(range(1, len(t) + 1))) for t in tag_lists]

    assert detect_scheme([("f", sentences(["B-NP", "I-NP", "B-NP", "O"]))]) == "bio"
    assert detect_scheme([("f", sentences(["I-NP", "B-NP"]))]) == "iob1"
    assert detect_scheme([("f", sentences(["B-NP", "E-NP", "S-VP"]))]) == "iobes"
    assert detect_scheme([("f", sentences(["O", "O"]))]) == "bio"
    with pytest.raises(ConllError, match=r"^g:2: error: mixed label schemes.*f:1 is BIO"):
        detect_scheme([("f", sentences(["B-NP", "O"])), ("g", sentences(["O", "I-PER"]))])
    with pytest.raises(ConllError, match="mixed label schemes"):
        detect_scheme([("f", sentences(["S-NP", "I-VP"]))])


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("a DT B-NP\nb NN\n", 2, "2 columns, expected 3"),
        ("a DT B-NP\n\nb NN I-NP extra\n", 3, "4 columns, expected 3"),
        ("a DT B-NP\nb NN X-NP\n", 2, "label 'X-NP' is not"),
        ("a DT B-\n", 1, "label 'B-' is not"),
        ("a DT NP\n", 1, "label 'NP' is not"),
        ("\n\n", 0, "no sentences"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "train.txt"
    path.write_text(text)
    with pytest.raises(ConllError) as info:
        read_conll(path, Columns.parse("word,pos,tag"))
    where = f"{path}:{line}: error: " if line else f"{path}: error: "
    assert str(info.value).startswith(where) and message in str(info.value)


def test_not_utf8_and_missing_files(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"a DT B-NP\n\xff NN I-NP\n")
    with pytest.raises(ConllError, match=r"train.txt:2: error: not UTF-8"):
        read_conll(path, Columns.parse("word,pos,tag"))
    with pytest.raises(DataError, match="test.txt: missing"):
        load_tagging_data(tmp_path, Columns.parse("word,pos,tag"))


def test_held_out_slice_is_seeded_disjoint_and_documented(tmp_path):
    train = "".join(f"w{i} NN B-NP\nx VB B-VP\n\n" for i in range(40))
    folder = write_folder(tmp_path / "c", train, "a NN B-NP\n")
    a = load_tagging_data(folder, Columns.parse("word,pos,tag"))
    b = load_tagging_data(folder, Columns.parse("word,pos,tag"))
    assert len(a.valid) == 4 and len(a.train) == 36
    assert [s.words for s in a.valid] == [s.words for s in b.valid]
    assert not {s.words[0] for s in a.valid} & {s.words[0] for s in a.train}
    assert "10% of its sentences, seed 12345" in a.valid_source


@pytest.mark.skipif(not (DATA / "conll2000").is_dir(), reason="../shared/data/conll2000 not present")
def test_conll2000_sizes():
    data = load_tagging_data(DATA / "conll2000", Columns.parse("word,pos,tag"))
    sizes = data.sizes()
    assert sizes["train"]["sentences"] + sizes["valid"]["sentences"] == 8936
    assert sizes["valid"]["sentences"] == 894
    assert sizes["test"] == {"sentences": 2012, "tokens": 47377}
    assert data.file_scheme == "bio" and "B-NP" in data.tags.index
