"""Streaming readers for the files a dataset is pushed from: JSONL, CSV, Parquet and a Hugging Face
`datasets` folder (as written by `Dataset.save_to_disk`).

Each reader yields Arrow record batches of bounded size, so memory stays flat whatever the file
size. Arrow's parsers are fast but vague about where a file breaks; when one fails, a slow
line-by-line pass over the file finds the exact row and reason for the error message.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from deepext.errors import DatasetFormatError

BLOCK_BYTES = 8 << 20
PARQUET_BATCH_ROWS = 65_536
_SCAN_CHUNK = 8 << 20
_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}

Progress = Callable[[int], None]


def _no_progress(_bytes: int) -> None:
    pass


@dataclass(frozen=True)
class SourceScan:
    """What one pass over a source's bytes found: its hash and size (checked to be UTF-8 text)."""

    sha256: str
    size: int


def detect_source_format(path: Path) -> str:
    """`jsonl`, `csv`, `parquet` or `hf` (a datasets folder), from the name or folder contents."""
    if path.is_dir():
        if (path / "dataset_dict.json").exists():
            splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
            raise DatasetFormatError(
                str(path),
                None,
                f"a DatasetDict with splits {splits}: push one split's folder, e.g. {path}/train",
            )
        if (path / "state.json").exists() and (path / "dataset_info.json").exists():
            return "hf"
        raise DatasetFormatError(str(path), None, "a folder that is not a Hugging Face datasets folder")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise DatasetFormatError(str(path), None, f"unknown file type {suffix!r}: use .jsonl, .csv or .parquet")


def scan_source(path: Path, source_format: str, progress: Progress = _no_progress) -> SourceScan:
    """Hash the source's bytes in one pass; text sources must be UTF-8 (row of the first bad byte)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    total = 0
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        text = source_format in ("jsonl", "csv")
        decoder = codecs.getincrementaldecoder("utf-8")()
        line = 1
        with open(file, "rb") as handle:
            first = True
            while chunk := handle.read(_SCAN_CHUNK):
                if first and text:
                    _check_bom(path, chunk)
                first = False
                digest.update(chunk)
                total += len(chunk)
                progress(len(chunk))
                if text and not chunk.isascii():
                    try:
                        decoder.decode(chunk)
                    except UnicodeDecodeError as exc:
                        row = line + chunk.count(b"\n", 0, exc.start)
                        raise DatasetFormatError(str(path), row, "not valid UTF-8 text") from exc
                if text:
                    line += chunk.count(b"\n")
            if text:
                try:
                    decoder.decode(b"", final=True)
                except UnicodeDecodeError as exc:
                    raise DatasetFormatError(str(path), line, "not valid UTF-8 text (ends mid-character)") from exc
    if total == 0:
        raise DatasetFormatError(str(path), None, "the file is empty")
    return SourceScan(digest.hexdigest(), total)


def _check_bom(path: Path, head: bytes) -> None:
    for bom, name in _BOMS.items():
        if head.startswith(bom):
            raise DatasetFormatError(str(path), None, f"encoded as {name}; deepext reads UTF-8 text")


def read_batches(path: Path, source_format: str, progress: Progress = _no_progress) -> Iterator[pa.RecordBatch]:
    """The source's rows as record batches; DatasetFormatError names the row where parsing fails.

    `progress` is told how many bytes of a text source were consumed.
    """
    if source_format == "jsonl":
        return _jsonl_batches(path, progress)
    if source_format == "csv":
        return _csv_batches(path, progress)
    if source_format == "parquet":
        return _parquet_batches(path)
    return _hf_batches(path)


class _CountingReader:
    """A binary file that tells `progress` how many bytes Arrow's parser has read."""

    def __init__(self, path: Path, progress: Progress) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close(), called by Arrow
        self._progress = progress
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._progress(len(data))
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._file.close()
        self.closed = True


def _jsonl_batches(path: Path, progress: Progress) -> Iterator[pa.RecordBatch]:
    options = pajson.ReadOptions(block_size=BLOCK_BYTES, use_threads=True)
    source = _CountingReader(path, progress)
    try:
        yield from pajson.open_json(source, read_options=options)
    except pa.ArrowInvalid as exc:
        if "Empty JSON stream" in str(exc):
            raise DatasetFormatError(str(path), None, "no rows") from exc
        row, reason = locate_jsonl_problem(path)
        raise DatasetFormatError(str(path), row, reason or str(exc)) from exc
    finally:
        source.close()


def locate_jsonl_problem(path: Path) -> tuple[int | None, str | None]:
    """The first line that is not a JSON object consistent with the lines before it (slow path)."""
    kinds: dict[str, str] = {}
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                return number, f"malformed JSON ({exc.msg} at column {exc.colno})"
            if not isinstance(record, dict):
                return number, f"expected a JSON object, found {type(record).__name__}"
            for key, value in record.items():
                if value is None:
                    continue
                kind = _json_kind(value)
                previous = kinds.setdefault(key, kind)
                if previous != kind:
                    return number, f"field {key!r} is {kind} here but {previous} in earlier rows"
    return None, None


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "an object"


def jsonl_line_of_record(path: Path, record_index: int) -> int:
    """The 1-based line of the `record_index`-th (0-based) record, skipping blank lines."""
    seen = -1
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                seen += 1
                if seen == record_index:
                    return number
    return record_index + 1


def _csv_batches(path: Path, progress: Progress) -> Iterator[pa.RecordBatch]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle, delimiter=delimiter), None)
    if not header:
        raise DatasetFormatError(str(path), None, "the file is empty")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates or any(not name.strip() for name in header):
        raise DatasetFormatError(str(path), 1, f"bad header: duplicate or empty column names {duplicates}")
    # All columns are read as text: no type guess from the first block can break on a later one.
    convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in header}, strings_can_be_null=False)
    parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    source = _CountingReader(path, progress)
    try:
        yield from pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=parse,
            convert_options=convert,
        )
    except pa.ArrowInvalid as exc:
        row, reason = locate_csv_problem(path, delimiter, len(header))
        raise DatasetFormatError(str(path), row, reason or str(exc)) from exc
    finally:
        source.close()


def locate_csv_problem(path: Path, delimiter: str, width: int) -> tuple[int | None, str | None]:
    """The first CSV line whose field count differs from the header's (slow path)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader, None)
        for fields in reader:
            if fields and len(fields) != width:
                return reader.line_num, f"expected {width} fields as in the header, found {len(fields)}"
    return None, None


def csv_line_of_record(path: Path, record_index: int) -> int:
    """The 1-based line where the `record_index`-th (0-based) data record starts."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader, None)
        start = reader.line_num + 1
        for index, _fields in enumerate(reader):
            if index == record_index:
                return start
            start = reader.line_num + 1
    return record_index + 2


def _parquet_batches(path: Path) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetFormatError(str(path), None, f"not a readable Parquet file ({exc})") from exc
    yield from parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS)


def _hf_batches(path: Path) -> Iterator[pa.RecordBatch]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DatasetFormatError(str(path), None, f"not a loadable datasets folder ({exc})") from exc
    if isinstance(dataset, datasets.DatasetDict):
        raise DatasetFormatError(str(path), None, f"a DatasetDict with splits {list(dataset)}: push one split")
    for table in dataset.with_format("arrow").iter(batch_size=PARQUET_BATCH_ROWS):
        yield from table.to_batches()


def line_of_record(path: Path, source_format: str, record_index: int) -> int:
    """Where a user finds record `record_index` (0-based) of the source: its line, or row number."""
    if source_format == "jsonl":
        return jsonl_line_of_record(path, record_index)
    if source_format == "csv":
        return csv_line_of_record(path, record_index)
    return record_index + 1
