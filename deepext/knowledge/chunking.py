"""Documents into chunks: plain text, Markdown and PDF (its text layer, read with pypdf).

Sizes are in characters, not tokens: `max_chars` (default 800) bounds every chunk, and a chunk
after the first of a section starts with up to `overlap` (default 120) characters of the one
before, cut at a word boundary. all-MiniLM-L6-v2 reads at most 256 tokens, about 1,000 characters
of English, so the defaults keep a chunk and its heading inside what the model sees.

Text is cut where it reads best: between paragraphs (blank lines); a paragraph too long for one
chunk between sentences; a sentence too long at a space, or hard at `max_chars`. Each chunk is a
slice of the source, so offsets (`TextChunk.start`) point back into it.

Markdown is first split into sections at its ATX headings (`#` .. `######`, not inside ``` or ~~~
fences); every chunk of a section begins with the section's heading path (`Install > Linux`) so it
can be found by what it is about even when its own words do not say.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from deepext.errors import InvalidInput

DEFAULT_MAX_CHARS = 800
DEFAULT_OVERLAP = 120
TEXT_SUFFIXES = (".txt", ".text")
MARKDOWN_SUFFIXES = (".md", ".markdown")
PDF_SUFFIXES = (".pdf",)
SUFFIXES = TEXT_SUFFIXES + MARKDOWN_SUFFIXES + PDF_SUFFIXES

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


@dataclass(frozen=True)
class TextChunk:
    index: int  # position in the document, from 0
    text: str  # what is embedded and returned: the heading path (Markdown), then the slice
    start: int  # offset of the slice in the (newline-normalised) source text
    end: int
    heading: str = ""  # Markdown heading path, "" outside any section


def check_sizes(max_chars: int, overlap: int) -> None:
    if max_chars < 20:
        raise InvalidInput("max_chars must be at least 20", field="max_chars")
    if not 0 <= overlap < max_chars // 2:
        raise InvalidInput("overlap must be at least 0 and less than half of max_chars", field="overlap")


# ---- plain text
def chunk_text(text: str, *, max_chars: int = DEFAULT_MAX_CHARS, overlap: int = DEFAULT_OVERLAP) -> list[TextChunk]:
    """`text` cut into chunks of at most `max_chars` characters (see the module docstring)."""
    check_sizes(max_chars, overlap)
    text = _normalise(text)
    spans = _pack(text, list(_units(text, 0, len(text), max_chars, max_chars - overlap)), max_chars, overlap)
    return [TextChunk(i, text[a:b], a, b) for i, (a, b) in enumerate(spans)]


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def _units(text: str, start: int, end: int, max_chars: int, piece: int) -> Iterator[tuple[int, int]]:
    """Spans of `text[start:end]` no longer than `max_chars`: paragraphs, else sentences, else
    pieces of at most `piece` characters (room left for the overlap) cut at a space, or hard."""
    for a, b in _split(text, start, end, _PARAGRAPH_BREAK):
        if b - a <= max_chars:
            yield a, b
            continue
        for c, d in _split(text, a, b, _SENTENCE_END):
            while d - c > max_chars:
                cut = text.rfind(" ", c + 1, c + piece + 1)
                cut = cut if cut > c else c + piece
                yield c, cut
                c = _skip_space(text, cut, d)
            if c < d:
                yield c, d


def _split(text: str, start: int, end: int, separator: re.Pattern[str]) -> Iterator[tuple[int, int]]:
    """The non-blank pieces of `text[start:end]` between matches of `separator`, stripped."""
    position = start
    for match in separator.finditer(text, start, end):
        yield from _stripped(text, position, match.start())
        position = match.end()
    yield from _stripped(text, position, end)


def _stripped(text: str, a: int, b: int) -> Iterator[tuple[int, int]]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    if a < b:
        yield a, b


def _skip_space(text: str, position: int, end: int) -> int:
    while position < end and text[position].isspace():
        position += 1
    return position


def _pack(text: str, units: list[tuple[int, int]], max_chars: int, overlap: int) -> list[tuple[int, int]]:
    """Greedy: consecutive units join one chunk while the slice from its start to the unit's end
    fits in `max_chars`; the next chunk starts `overlap` characters back, at a word boundary."""
    spans: list[tuple[int, int]] = []
    start: int | None = None
    end = 0
    for a, b in units:
        if start is not None and b - start <= max_chars:
            end = b
            continue
        if start is not None:
            spans.append((start, end))
        start = _overlap_start(text, end, a, b, overlap, max_chars) if spans else a
        end = b
    if start is not None:
        spans.append((start, end))
    return spans


def _overlap_start(text: str, previous_end: int, a: int, b: int, overlap: int, max_chars: int) -> int:
    """Where a chunk holding the unit `[a, b)` starts: up to `overlap` characters before the
    previous chunk's end, moved forward to the start of a word; `a` if that does not fit."""
    if overlap == 0:
        return a
    start = max(previous_end - overlap, 0)
    if start > 0 and not text[start - 1].isspace():  # inside a word: skip to the next one
        while start < previous_end and not text[start].isspace():
            start += 1
    start = _skip_space(text, start, a)
    return start if start < previous_end and b - start <= max_chars else a


# ---- Markdown
def chunk_markdown(text: str, *, max_chars: int = DEFAULT_MAX_CHARS, overlap: int = DEFAULT_OVERLAP) -> list[TextChunk]:
    """Markdown cut at its headings, then each section like plain text; every chunk starts with
    its section's heading path and a blank line."""
    check_sizes(max_chars, overlap)
    text = _normalise(text)
    chunks: list[TextChunk] = []
    for heading, start, end in _sections(text):
        prefix = f"{heading}\n\n" if heading else ""
        room = max(max_chars - len(prefix), 20)
        room_overlap = min(overlap, room // 2 - 1)
        units = list(_units(text, start, end, room, room - room_overlap))
        for a, b in _pack(text, units, room, room_overlap):
            chunks.append(TextChunk(len(chunks), prefix + text[a:b], a, b, heading))
    return chunks


def _sections(text: str) -> Iterator[tuple[str, int, int]]:
    """(heading path, body start, body end) of each section, in order; the text before the first
    heading is a section with the path ""."""
    path: list[tuple[int, str]] = []  # (level, title) of the open headings
    heading, body_start, position = "", 0, 0
    fenced: str | None = None
    for line in text.splitlines(keepends=True):
        fence = _FENCE.match(line)
        if fence:
            fenced = None if fenced == fence.group(1) else (fenced or fence.group(1))
        match = _HEADING.match(line.rstrip("\n")) if fenced is None else None
        if match:
            yield heading, body_start, position
            level = len(match.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, match.group(2).strip())]
            heading = " > ".join(title for _, title in path)
            body_start = position + len(line)
        position += len(line)
    yield heading, body_start, len(text)


# ---- PDF
def extract_pdf_text(data: bytes, name: str = "document.pdf") -> str:
    """The text layer of a PDF, pages separated by blank lines. `InvalidInput` for a file pypdf
    cannot read, an encrypted one, or one without text (a scan: OCR is not done here)."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidInput(f"{name}: the PDF is encrypted", field="file")
        pages = [page.extract_text() or "" for page in reader.pages]
    except InvalidInput:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:  # pypdf's errors on damaged files
        raise InvalidInput(f"{name}: not a readable PDF ({exc})", field="file") from exc
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise InvalidInput(f"{name}: the PDF has no text layer (scanned pages are not read)", field="file")
    return text


# ---- documents
def document_text(name: str, data: bytes) -> tuple[str, str]:
    """(kind, text) of a document named `name`: kind is text, markdown or pdf, from the suffix."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in PDF_SUFFIXES:
        return "pdf", extract_pdf_text(data, name)
    if suffix not in TEXT_SUFFIXES + MARKDOWN_SUFFIXES:
        raise InvalidInput(f"{name}: a document name ends in {', '.join(SUFFIXES)}", field="filename")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name}: not UTF-8 text (byte {exc.start})", field="file") from None
    return ("markdown" if suffix in MARKDOWN_SUFFIXES else "text"), text


@dataclass(frozen=True)
class ChunkedDocument:
    kind: str  # text | markdown | pdf
    chunks: list[TextChunk]


def chunk_document(
    name: str, data: bytes, *, max_chars: int = DEFAULT_MAX_CHARS, overlap: int = DEFAULT_OVERLAP
) -> ChunkedDocument:
    """A document's chunks, read as its suffix says (`SUFFIXES`); `InvalidInput` when it has no text."""
    kind, text = document_text(name, data)
    chunker = chunk_markdown if kind == "markdown" else chunk_text
    chunks = chunker(text, max_chars=max_chars, overlap=overlap)
    if not chunks:
        raise InvalidInput(f"{name}: the document has no text", field="file")
    return ChunkedDocument(kind, chunks)
