"""Chunking: boundaries checked by hand on small texts, then the rules on a long one; Markdown
sections and heading paths; documents by suffix; PDF text extraction from PDFs built here."""

from __future__ import annotations

import itertools

import pytest

from deepext.errors import InvalidInput
from deepext.knowledge.chunking import (
    chunk_document,
    chunk_markdown,
    chunk_text,
    document_text,
    extract_pdf_text,
)

THREE_PARAGRAPHS = "aaaa bbbb.\n\ncccc dddd.\n\neeee ffff."  # paragraphs at [0,10) [12,22) [24,34)


def _texts(chunks) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.text for c in chunks]


def test_paragraphs_are_packed_while_they_fit() -> None:
    chunks = chunk_text(THREE_PARAGRAPHS, max_chars=22, overlap=0)
    assert _texts(chunks) == ["aaaa bbbb.\n\ncccc dddd.", "eeee ffff."]
    assert [(c.index, c.start, c.end) for c in chunks] == [(0, 0, 22), (1, 24, 34)]
    assert _texts(chunk_text(THREE_PARAGRAPHS, max_chars=34, overlap=0)) == [THREE_PARAGRAPHS]


def test_overlap_repeats_the_previous_chunks_tail_from_a_word_start() -> None:
    # 6 characters back from the end of chunk 0 (22) is 16, the space before "dddd.": the next
    # chunk starts at the word, and with "eeee ffff." it is 17 characters, within 22.
    chunks = chunk_text(THREE_PARAGRAPHS, max_chars=22, overlap=6)
    assert _texts(chunks) == ["aaaa bbbb.\n\ncccc dddd.", "dddd.\n\neeee ffff."]
    assert chunks[1].start == 17
    # An overlap that would not fit beside the next unit is left out: 9 back from 15 is inside
    # "bbbb", the next word starts at 10, and "cccc.\n\ndddd eeee ffff." would be 22 > 20.
    two = "aaaa bbbb cccc.\n\ndddd eeee ffff."
    assert _texts(chunk_text(two, max_chars=20, overlap=9)) == ["aaaa bbbb cccc.", "dddd eeee ffff."]


def test_a_long_paragraph_is_cut_between_sentences() -> None:
    text = "One two three. Four five six. Seven eight nine."
    assert _texts(chunk_text(text, max_chars=30, overlap=0)) == ["One two three. Four five six.", "Seven eight nine."]


def test_a_long_sentence_is_cut_at_a_space_and_a_long_word_hard() -> None:
    assert _texts(chunk_text("abcdefghij klmnopqrst uvwxyz", max_chars=20, overlap=0)) == [
        "abcdefghij",
        "klmnopqrst uvwxyz",
    ]
    assert _texts(chunk_text("x" * 50, max_chars=20, overlap=0)) == ["x" * 20, "x" * 20, "x" * 10]
    # With an overlap, pieces leave room for it (20 - 5 = 15); an overlap never starts mid-word.
    assert _texts(chunk_text("x" * 40, max_chars=20, overlap=5)) == ["x" * 15, "x" * 15, "x" * 10]


def test_every_chunk_fits_and_together_they_cover_the_text() -> None:
    words = [f"word{i}" for i in range(3000)]
    sentences = [" ".join(words[i : i + 9]) + "." for i in range(0, len(words), 9)]
    text = "\n\n".join(" ".join(sentences[i : i + 7]) for i in range(0, len(sentences), 7))
    chunks = chunk_text(text, max_chars=300, overlap=50)
    assert all(len(c.text) <= 300 for c in chunks)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    assert all(b.start < a.end for a, b in itertools.pairwise(chunks))  # they overlap
    seen = set(" ".join(_texts(chunks)).split())
    assert {w.rstrip(".") for w in seen} >= set(words)


def test_windows_newlines_and_blank_text() -> None:
    assert _texts(chunk_text("a b.\r\n\r\nc d.", max_chars=20, overlap=0)) == ["a b.\n\nc d."]
    assert chunk_text(" \n\n \t", max_chars=20, overlap=0) == []


def test_sizes_are_checked() -> None:
    with pytest.raises(InvalidInput, match="max_chars"):
        chunk_text("x", max_chars=10)
    with pytest.raises(InvalidInput, match="overlap"):
        chunk_text("x", max_chars=100, overlap=50)


MARKDOWN = """Intro line.

# Install

Run pip.

## Linux

Use apt.

```bash
# not a heading
```

# Usage ##

Call it.
"""


def test_markdown_is_cut_at_headings_and_chunks_carry_the_heading_path() -> None:
    chunks = chunk_markdown(MARKDOWN, max_chars=200, overlap=0)
    assert [(c.heading, c.text) for c in chunks] == [
        ("", "Intro line."),
        ("Install", "Install\n\nRun pip."),
        ("Install > Linux", "Install > Linux\n\nUse apt.\n\n```bash\n# not a heading\n```"),
        ("Usage", "Usage\n\nCall it."),
    ]
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    assert MARKDOWN[chunks[1].start : chunks[1].end] == "Run pip."


def test_a_long_markdown_section_leaves_room_for_its_heading() -> None:
    body = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_markdown(f"# Title\n\n{body}\n", max_chars=100, overlap=10)
    assert len(chunks) > 3
    assert all(c.text.startswith("Title\n\n") and len(c.text) <= 100 for c in chunks)


def test_documents_are_read_by_suffix() -> None:
    assert document_text("a.md", b"# x") == ("markdown", "# x")
    assert document_text("A.TXT", "\ufeffcaf\u00e9".encode()) == ("text", "caf\u00e9")  # BOM dropped
    assert chunk_document("notes.markdown", MARKDOWN.encode()).kind == "markdown"
    with pytest.raises(InvalidInput, match=r"\.txt, \.text, \.md") as bad_suffix:
        document_text("a.docx", b"x")
    assert bad_suffix.value.field == "filename"
    with pytest.raises(InvalidInput, match="not UTF-8"):
        document_text("a.txt", b"\xff\xfe\x00")
    with pytest.raises(InvalidInput, match="no text"):
        chunk_document("a.txt", b"  \n ")


def make_pdf(pages: list[str]) -> bytes:
    """A minimal PDF, written by hand: one Helvetica text line per page."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for text in pages:
        page_id, content_id = len(objects) + 1, len(objects) + 2
        kids.append(f"{page_id} 0 R")
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_id} 0 R "
            "/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_pdf_text_is_extracted_page_by_page() -> None:
    data = make_pdf(["Tokens expire after sixty minutes.", "Rotate them with deepext login."])
    assert extract_pdf_text(data) == "Tokens expire after sixty minutes.\n\nRotate them with deepext login."
    document = chunk_document("guide.pdf", data)
    assert document.kind == "pdf"
    assert [c.text for c in document.chunks] == [
        "Tokens expire after sixty minutes.\n\nRotate them with deepext login."
    ]


def test_a_pdf_built_by_pypdf_without_text_and_a_broken_one_are_refused() -> None:
    import io

    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    blank = io.BytesIO()
    writer.write(blank)
    with pytest.raises(InvalidInput, match="no text layer"):
        extract_pdf_text(blank.getvalue(), "scan.pdf")
    with pytest.raises(InvalidInput, match=r"broken\.pdf: not a readable PDF"):
        extract_pdf_text(b"%PDF-1.4\nthis is not a pdf", "broken.pdf")
