"""Install WordNet 3.0 for NLTK from Debian's `wordnet-base` and `wordnet-sense-index` packages.

The NLTK downloader needs the internet; the Debian packages carry the same WordNet 3.0 database but lack the
`lexnames` file NLTK reads, so it is rebuilt from the `lexnames(5WN)` man page that `wordnet-base` installs.
Slim container images often drop man pages (dpkg path-exclude), so WordNet 3.0's fixed table is kept here as a
fallback; a test checks that it matches the man page.
"""

from __future__ import annotations

import functools
import gzip
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

DEBIAN_PACKAGES = ("wordnet-base", "wordnet-sense-index")
DEFAULT_SOURCE = Path("/usr/share/wordnet")
DEFAULT_MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")
_PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")
# Files NLTK's WordNetCorpusReader opens; lexnames is written separately.
REQUIRED_FILES = (
    *(f"{kind}.{pos}" for kind in ("data", "index") for pos in _PARTS_OF_SPEECH),
    *(f"{pos}.exc" for pos in _PARTS_OF_SPEECH),
    "index.sense",
)
LEXNAMES_COUNT = 45
WORDNET_30_LEXNAMES = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
CATEGORIES = {pos: number for number, pos in enumerate(_PARTS_OF_SPEECH, start=1)}  # lexnames(5WN)
_LEXNAME_LINE = re.compile(r"^(\d{2})\t\s*([a-z]+\.[A-Za-z]+)\s*\t")


class WordNetMissing(RuntimeError):
    """WordNet cannot be installed or loaded; the message says how to fix it."""


def default_target() -> Path:
    return Path(sys.prefix) / "nltk_data"


def _install_hint() -> str:
    return f"apt-get install {' '.join(DEBIAN_PACKAGES)}, then run `python -m joulebench.wordnet`"


def read_man_page(man_page: Path) -> str:
    opener = gzip.open if man_page.suffix == ".gz" else open
    with opener(man_page, "rt", encoding="utf-8") as handle:
        return handle.read()


def _entry(number: int, name: str) -> tuple[int, str, int]:
    return number, name, CATEGORIES[name.split(".")[0]]


def parse_lexnames(man_text: str) -> list[tuple[int, str, int]]:
    """(number, name, syntactic category) for each lexicographer file listed in the man page's table."""
    matches = (_LEXNAME_LINE.match(line) for line in man_text.splitlines())
    entries = [_entry(int(match.group(1)), match.group(2)) for match in matches if match]
    numbers = [number for number, _, _ in entries]
    if numbers != list(range(LEXNAMES_COUNT)):
        raise WordNetMissing(
            f"expected lexicographer files 00..{LEXNAMES_COUNT - 1} in the lexnames man page, "
            f"found {len(entries)}; reinstall {DEBIAN_PACKAGES[0]}"
        )
    return entries


def lexnames_entries(man_page: Path) -> list[tuple[int, str, int]]:
    if man_page.is_file():
        return parse_lexnames(read_man_page(man_page))
    return [_entry(number, name) for number, name in enumerate(WORDNET_30_LEXNAMES)]


def format_lexnames(entries: list[tuple[int, str, int]]) -> str:
    return "".join(f"{number:02d}\t{name}\t{category}\n" for number, name, category in entries)


def _check_sources(source_dir: Path) -> None:
    missing = [name for name in REQUIRED_FILES if not (source_dir / name).is_file()]
    if missing:
        raise WordNetMissing(
            f"WordNet files missing in {source_dir} ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}): {_install_hint()}"
        )


def _source_files(source_dir: Path) -> list[Path]:
    # Every top-level regular file (data, index, exceptions, sense index, verb frames), not bin/ or pixmaps/.
    return sorted(path for path in source_dir.iterdir() if path.is_file())


def _is_complete(corpus_dir: Path, sources: list[Path], lexnames: str) -> bool:
    lexnames_path = corpus_dir / "lexnames"
    if not lexnames_path.is_file() or lexnames_path.read_text(encoding="utf-8") != lexnames:
        return False
    return all(
        (corpus_dir / src.name).is_file() and (corpus_dir / src.name).stat().st_size == src.stat().st_size
        for src in sources
    )


def install_wordnet(
    target_dir: Path | None = None,
    source_dir: Path = DEFAULT_SOURCE,
    man_page: Path = DEFAULT_MAN_PAGE,
) -> Path:
    """Build `<target>/corpora/wordnet/` from the Debian files and return that folder.

    Idempotent: a complete existing install is left alone. The corpus is assembled in a temporary sibling
    folder and renamed into place, so parallel jobs never see a half-copied corpus.
    """
    target = default_target() if target_dir is None else Path(target_dir)
    corpus_dir = target / "corpora" / "wordnet"
    _check_sources(source_dir)
    lexnames = format_lexnames(lexnames_entries(man_page))
    sources = _source_files(source_dir)
    if _is_complete(corpus_dir, sources, lexnames):
        return corpus_dir

    corpus_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=corpus_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the corpus should be readable like the venv
    try:
        for src in sources:
            shutil.copyfile(src, staging / src.name)
        (staging / "lexnames").write_text(lexnames, encoding="utf-8")
        if corpus_dir.exists():
            shutil.rmtree(corpus_dir)
        try:
            os.replace(staging, corpus_dir)
        except OSError:
            if not _is_complete(corpus_dir, sources, lexnames):  # else a parallel job installed it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return corpus_dir


class LemmaIndex(dict):
    """NLTK's lemma → {part of speech: synset offsets} map, filled on demand: each lemma's lines are found by binary
    search in WordNet's sorted `index.<pos>` files, as WordNet's own library does, instead of parsing all 150,000
    lemmas (a second per job) for the few words METEOR looks up. A lemma WordNet lacks maps to {} and is not `in` it."""

    def __init__(self, reader: Any) -> None:
        super().__init__()
        self._reader = reader
        self._files: dict[str, Any] = {}

    def __missing__(self, lemma: str) -> dict[str, list[int]]:
        from nltk.corpus.reader.wordnet import ADJ, ADJ_SAT
        from nltk.util import binary_search_file

        entry: dict[str, list[int]] = {}
        for pos, suffix in self._reader._FILEMAP.items():
            if suffix not in self._files:
                self._files[suffix] = self._reader.open(f"index.{suffix}")
            line = binary_search_file(self._files[suffix], lemma) if lemma and " " not in lemma else None
            if line is None:
                continue
            fields = line.split()
            n_synsets, n_pointers = int(fields[2]), int(fields[3])
            entry[pos] = [int(offset) for offset in fields[6 + n_pointers: 6 + n_pointers + n_synsets]]
            if pos == ADJ:
                entry[ADJ_SAT] = [offset for offset in entry[pos] if offset in self._reader.satellite_offsets]
        self[lemma] = entry
        return entry

    def __contains__(self, lemma: object) -> bool:
        return isinstance(lemma, str) and bool(self[lemma])

    def get(self, lemma: str, default: Any = None) -> Any:
        return self[lemma] if lemma in self else default

    def __iter__(self) -> Any:
        raise NotImplementedError("LemmaIndex reads lemmas on demand and cannot list them all")


@functools.cache
def load_wordnet() -> Any:
    """NLTK's WordNet reader for English look-ups, loaded once per process; WordNetMissing with the fix otherwise.

    NLTK 3.10's reader also builds, on every load, a map from WordNet 3.0 synsets for its multilingual (OMW) look-ups:
    its version check compares the version number ("3.0") with the corpus name ("wordnet"), so the map is built even
    for WordNet 3.0 itself, reading index.sense twice. That is most of the load time, and English look-ups never
    read it, so this reader skips it. It also reads the lemma index on demand (`LemmaIndex`) instead of all of it."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            return None

        def _load_lemma_pos_offset_map(self) -> None:
            self._lemma_pos_offset_map = LemmaIndex(self)

    try:
        root = nltk.data.find("corpora/wordnet")
        with warnings.catch_warnings():  # "multilingual functions are not available": none are used
            warnings.simplefilter("ignore", UserWarning)
            reader = EnglishWordNet(root, None)
        found = bool(reader.synsets("dog"))
    except (LookupError, OSError):
        found = False
    if not found:
        raise WordNetMissing(f"NLTK cannot load WordNet: {_install_hint()}")
    return reader


def main() -> int:
    try:
        corpus_dir = install_wordnet()
    except WordNetMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"WordNet installed in {corpus_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
