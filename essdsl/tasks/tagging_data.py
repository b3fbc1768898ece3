"""CoNLL column files for sequence tagging: reading, label schemes, splits, vocabularies.

Format: one token a line, columns separated by whitespace, a blank line between
sentences (CoNLL-2000 chunking ``word POS chunk``, CoNLL-2003 NER
``word POS chunk NE``).  ``-DOCSTART-`` lines (document breaks of CoNLL-2003) are
dropped.  A folder holds ``train.txt``, ``valid.txt`` or ``dev.txt``, and ``test.txt``.

Columns are chosen by a spec such as ``word,pos,tag``: one name a column, in file
order.  ``word`` is the token, ``tag`` the label, ``-`` a column to ignore, and every
other name a feature column (embedded next to the word).  Every line must have
exactly as many columns as the spec names.

Labels: ``O`` or ``PREFIX-TYPE`` with the prefix in one of three schemes, detected
per data set (train, valid and test together, so that all splits agree):

* ``iob1`` -- ``I-`` everywhere, ``B-`` only to split two adjacent chunks of one type
  (CoNLL-2003's original files);
* ``bio`` (IOB2) -- every chunk starts with ``B-`` (CoNLL-2000);
* ``iobes`` -- ``B-``/``I-``/``E-`` for multi-token chunks, ``S-`` for single tokens.

All three are converted to the same spans; the model is trained on BIO tags (or
IOBES with ``scheme="iobes"``), and spans are scored as ``conlleval`` scores them.
Evidence of two schemes in one data set (a ``B-`` opening a chunk after ``O`` next to
an ``I-`` opening one; ``E-``/``S-`` next to IOB1 openings) is an error at the line
that contradicts the first evidence.

Validation slice: CoNLL-2000 ships no validation file.  Then
:data:`HELD_OUT_FRACTION` (10 %) of the training sentences, chosen by a permutation
of ``numpy.random.default_rng(HELD_OUT_SEED)`` (seed 12345, independent of the
training seed so that every run and every cell sees the same split), becomes the
validation split, and the rest is trained on.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from essdsl.tasks.corpus import DataError

WORD, TAG, SKIP = "word", "tag", "-"
OUTSIDE = "O"
PREFIXES = ("B", "I", "E", "S")
SCHEMES = ("bio", "iob1", "iobes")
HELD_OUT_FRACTION = 0.1
HELD_OUT_SEED = 12345
DOCSTART = "-DOCSTART-"
VALID_NAMES = ("valid.txt", "dev.txt")
PAD, UNK = "<pad>", "<unk>"


class ConllError(DataError):
    """A CoNLL file is malformed; renders as ``file:line: error: message``."""

    def __init__(self, path: str, line: int, message: str):
        self.path, self.line, self.detail = str(path), line, message
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: error: {message}", located=True)  # printed as it is


@dataclass(frozen=True)
class Columns:
    """Which column of a line is the word, the label, and each feature."""

    names: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str) -> "Columns":
        names = tuple(n.strip().lower() for n in spec.split(","))
        if any(not n for n in names):
            raise DataError(f"column spec {spec!r}: empty column name (write e.g. 'word,pos,tag')")
        if names.count(WORD) != 1 or names.count(TAG) != 1:
            raise DataError(f"column spec {spec!r}: name exactly one 'word' and one 'tag' column")
        features = [n for n in names if n not in (WORD, TAG, SKIP)]
        if len(set(features)) != len(features):
            raise DataError(f"column spec {spec!r}: a feature column is named twice")
        return cls(names)

    @property
    def word(self) -> int:
        return self.names.index(WORD)

    @property
    def tag(self) -> int:
        return self.names.index(TAG)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n not in (WORD, TAG, SKIP))

    def feature_index(self, name: str) -> int:
        return self.names.index(name)

    def __str__(self) -> str:
        return ",".join(self.names)


@dataclass
class Sentence:
    words: list[str]
    features: list[list[str]]  # features[k][i]: feature k of token i
    tags: list[str]
    lines: list[int]  # the file line of every token, for messages


# ---------------------------------------------------------------- reading
def read_conll(path, columns: Columns) -> list[Sentence]:
    """The sentences of one file; :class:`ConllError` at the first malformed line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ConllError(path, text_line_of_byte(path, exc.start), "not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    sentences: list[Sentence] = []
    current: Optional[Sentence] = None
    width = len(columns.names)
    for number, raw in enumerate(text.split("\n"), start=1):
        fields = raw.split()
        if not fields:
            if current is not None:
                sentences.append(current)
                current = None
            continue
        if fields[0] == DOCSTART:
            continue
        if len(fields) != width:
            raise ConllError(
                path, number, f"{len(fields)} column{'s' if len(fields) != 1 else ''}, expected {width} ({columns})"
            )
        label = fields[columns.tag]
        check_label(path, number, label)
        if current is None:
            current = Sentence([], [[] for _ in columns.features], [], [])
        current.words.append(fields[columns.word])
        for k, name in enumerate(columns.features):
            current.features[k].append(fields[columns.feature_index(name)])
        current.tags.append(label)
        current.lines.append(number)
    if current is not None:
        sentences.append(current)
    if not sentences:
        raise ConllError(path, 0, "no sentences (expected one token a line, blank lines between sentences)")
    return sentences


def text_line_of_byte(path: Path, offset: int) -> int:
    return path.read_bytes()[:offset].count(b"\n") + 1


def check_label(path, line: int, label: str) -> None:
    if label == OUTSIDE:
        return
    prefix, sep, kind = label.partition("-")
    if not sep or prefix not in PREFIXES or not kind:
        raise ConllError(
            path, line, f"label {label!r} is not 'O' or B-/I-/E-/S- followed by a type (e.g. 'B-NP')"
        )


def split_label(label: str) -> tuple[str, str]:
    """``"B-NP"`` -> ``("B", "NP")``; ``"O"`` -> ``("O", "")``."""
    if label == OUTSIDE:
        return OUTSIDE, ""
    prefix, _, kind = label.partition("-")
    return prefix, kind


# ---------------------------------------------------------------- schemes
def detect_scheme(files: Sequence[tuple[str, list[Sentence]]]) -> str:
    """The one label scheme of every sentence in ``files`` ((path, sentences) pairs)."""
    evidence: dict[str, tuple[str, int]] = {}  # scheme -> first (path, line) showing it

    def saw(scheme: str, path: str, line: int) -> None:
        evidence.setdefault(scheme, (path, line))
        conflict = [s for s in evidence if s != scheme and not compatible(s, scheme)]
        if conflict:
            other = conflict[0]
            first_path, first_line = evidence[other]
            raise ConllError(
                path,
                line,
                f"mixed label schemes: this line is {describe_scheme(scheme)}, but "
                f"{first_path}:{first_line} is {describe_scheme(other)}",
            )

    for path, sentences in files:
        for sentence in sentences:
            previous = (OUTSIDE, "")
            for i, label in enumerate(sentence.tags):
                prefix, kind = split_label(label)
                continues = previous[0] != OUTSIDE and previous[1] == kind and previous[0] not in ("E", "S")
                if prefix in ("E", "S"):
                    saw("iobes", path, sentence.lines[i])
                elif prefix == "I" and not continues:
                    saw("iob1", path, sentence.lines[i])
                elif prefix == "B" and not continues:
                    saw("bio", path, sentence.lines[i])
                # (B- right after a chunk of its own type splits two chunks: legal in
                # every scheme, so it is no evidence)
                previous = (prefix, kind)
    if "iobes" in evidence:
        return "iobes"
    if "iob1" in evidence:
        return "iob1"
    return "bio"


def compatible(a: str, b: str) -> bool:
    """BIO and IOBES both open chunks with B-; IOB1 opens them with I-."""
    return {a, b} == {"bio", "iobes"} or a == b


def describe_scheme(scheme: str) -> str:
    return {
        "iob1": "IOB1 (a chunk opened by I-)",
        "bio": "BIO (a chunk opened by B-)",
        "iobes": "IOBES (E-/S- tags)",
    }[scheme]


def spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The chunks (type, start, end exclusive) that ``tags`` denote, in any of the three
    schemes (conlleval's rules do not depend on the scheme).

    A tag that cannot continue the open chunk starts a new one (an ``I-`` after ``O``
    or after another type), as ``conlleval`` reads ill-formed sequences; ``E-``/``S-``
    close the chunk they are in.
    """
    chunks: list[tuple[str, int, int]] = []
    start, kind = -1, ""
    for i, label in enumerate(tags):
        prefix, k = split_label(label)
        if start >= 0 and (prefix in (OUTSIDE, "S") or k != kind or (prefix == "B")):
            chunks.append((kind, start, i))
            start, kind = -1, ""
        if prefix in ("B", "I", "E", "S") and start < 0:
            start, kind = i, k
        if prefix in ("E", "S") and start >= 0:
            chunks.append((kind, start, i + 1))
            start, kind = -1, ""
    if start >= 0:
        chunks.append((kind, start, len(tags)))
    return chunks


def tags_from_spans(chunks: Sequence[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    """The tags of ``scheme`` (``bio`` or ``iobes``) that denote ``chunks``."""
    tags = [OUTSIDE] * length
    for kind, start, end in chunks:
        if scheme == "iobes" and end - start == 1:
            tags[start] = f"S-{kind}"
            continue
        tags[start] = f"B-{kind}"
        for i in range(start + 1, end):
            tags[i] = f"I-{kind}"
        if scheme == "iobes":
            tags[end - 1] = f"E-{kind}"
    return tags


def convert(tags: Sequence[str], target: str) -> list[str]:
    """``tags`` (any scheme) rewritten in ``target`` (``bio``/``iobes``), same spans."""
    return tags_from_spans(spans(tags), len(tags), target)


# ---------------------------------------------------------------- data set
@dataclass
class Vocab:
    """Strings to ids; id 0 is padding, id 1 the unknown string."""

    items: list[str]
    index: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.index = {s: i for i, s in enumerate(self.items)}

    @classmethod
    def build(cls, counts: Counter, min_count: int = 1, specials=(PAD, UNK)) -> "Vocab":
        kept = sorted((s for s, c in counts.items() if c >= min_count and s not in specials), key=lambda s: (-counts[s], s))
        return cls(list(specials) + kept)

    def __len__(self) -> int:
        return len(self.items)

    def ids(self, strings: Sequence[str]) -> list[int]:
        unk = self.index.get(UNK, 0)
        return [self.index.get(s, unk) for s in strings]


def normalise_word(word: str) -> str:
    """The word-embedding key: lower case, every digit 0 (the character encoder, when
    on, still sees the word as written)."""
    return "".join("0" if c.isdigit() else c for c in word.lower())


@dataclass
class TaggingData:
    """Three splits of one CoNLL folder, their label scheme, and the vocabularies.

    ``tags`` are the training tags (BIO or IOBES, see ``scheme``) -- id order fixed by
    the training split so that a checkpoint's output layer keeps its meaning.
    """

    name: str
    source: str
    columns: Columns
    file_scheme: str  # what the files use
    scheme: str  # what the model is trained on ("bio" or "iobes")
    train: list[Sentence]
    valid: list[Sentence]
    test: list[Sentence]
    valid_source: str  # "valid.txt", "dev.txt" or "held out from train.txt (...)"
    words: Vocab
    features: list[Vocab]
    chars: Vocab
    tags: Vocab
    digest: str = ""

    def split(self, name: str) -> list[Sentence]:
        if name not in ("train", "valid", "test"):
            raise DataError(f"no split {name!r} (use train, valid or test)")
        return getattr(self, name)

    def sizes(self) -> dict:
        return {
            split: {"sentences": len(self.split(split)), "tokens": sum(len(s.tags) for s in self.split(split))}
            for split in ("train", "valid", "test")
        }


def load_tagging_data(
    folder,
    columns: Columns,
    scheme: str = "bio",
    min_count: int = 2,
    held_out_fraction: float = HELD_OUT_FRACTION,
    held_out_seed: int = HELD_OUT_SEED,
    max_train_sentences: Optional[int] = None,
) -> TaggingData:
    """Read ``folder``'s splits (see the module docstring).

    Words seen fewer than ``min_count`` times in the training split map to ``<unk>``
    (so that ``<unk>`` is trained on real rare words).  ``max_train_sentences`` keeps
    the first that many training sentences after the validation slice is taken out
    (budgeted experiments).
    """
    if scheme not in ("bio", "iobes"):
        raise DataError(f"tag scheme {scheme!r}: train on 'bio' or 'iobes'")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such data folder (expected train.txt, test.txt and valid.txt or dev.txt)")
    train_path, test_path = folder / "train.txt", folder / "test.txt"
    for path in (train_path, test_path):
        if not path.is_file():
            raise DataError(f"{path}: missing (a tagging folder holds train.txt, test.txt and valid.txt or dev.txt)")
    valid_path = next((folder / n for n in VALID_NAMES if (folder / n).is_file()), None)
    train = read_conll(train_path, columns)
    test = read_conll(test_path, columns)
    valid = read_conll(valid_path, columns) if valid_path else []
    files = [(str(train_path), train), (str(test_path), test)]
    if valid_path:
        files.insert(1, (str(valid_path), valid))
    file_scheme = detect_scheme(files)
    if valid_path is None:
        train, valid = hold_out(train, held_out_fraction, held_out_seed)
        valid_source = f"held out from train.txt ({held_out_fraction:.0%} of its sentences, seed {held_out_seed})"
    else:
        valid_source = valid_path.name
    if max_train_sentences is not None:
        train = train[:max_train_sentences]
    for sentence in (*train, *valid, *test):
        sentence.tags = convert(sentence.tags, scheme)

    words = Vocab.build(Counter(normalise_word(w) for s in train for w in s.words), min_count)
    features = [
        Vocab.build(Counter(v for s in train for v in s.features[k])) for k in range(len(columns.features))
    ]
    chars = Vocab.build(Counter(c for s in train for w in s.words for c in w))
    tag_counts = Counter(t for s in train for t in s.tags)
    # Every tag of valid/test gets an id too: a type unseen in train must count as a
    # miss, not crash.  Order: by training frequency, then the rest by name.
    for s in (*valid, *test):
        for t in s.tags:
            tag_counts.setdefault(t, 0)
    tags = Vocab([t for t in sorted(tag_counts, key=lambda t: (-tag_counts[t], t))])
    digest = hashlib.sha256()
    for path, _ in files:
        digest.update(Path(path).read_bytes())
    return TaggingData(
        name=folder.name,
        source=str(folder),
        columns=columns,
        file_scheme=file_scheme,
        scheme=scheme,
        train=train,
        valid=valid,
        test=test,
        valid_source=valid_source,
        words=words,
        features=features,
        chars=chars,
        tags=tags,
        digest=digest.hexdigest()[:16],
    )


def hold_out(sentences: list[Sentence], fraction: float, seed: int) -> tuple[list[Sentence], list[Sentence]]:
    """(rest, held out): ``fraction`` of ``sentences`` chosen by a seeded permutation;
    both keep file order."""
    if not 0 < fraction < 1:
        raise DataError(f"held-out fraction {fraction} must be between 0 and 1")
    count = max(1, int(round(len(sentences) * fraction)))
    if count >= len(sentences):
        raise DataError(f"train.txt has {len(sentences)} sentence(s): too few to hold out a validation slice")
    chosen = set(np.random.default_rng(seed).permutation(len(sentences))[:count].tolist())
    rest = [s for i, s in enumerate(sentences) if i not in chosen]
    held = [s for i, s in enumerate(sentences) if i in chosen]
    return rest, held
