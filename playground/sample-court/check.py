#!/usr/bin/env python3
"""Checks the sample court folder (standard library only).

For every process folder: the folder name is a valid CNJ number equal to `number`,
document ids are unique, every `url` stays inside the process folder and exists,
`size` and `sha256` (when present) match the file, and the files are structurally
sound (PDF xref offsets, PNG chunk CRCs, JPEG markers, UTF-8 text).

Exit status 0 when everything is fine; prints one line per problem otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CNJ = re.compile(r"(\d{7})-(\d{2})\.(\d{4})\.(\d)\.(\d{2})\.(\d{4})")
ALLOWED = {"id", "name", "kind", "url", "size", "sha256", "mimeType"}


def cnj_ok(number: str) -> bool:
    m = CNJ.fullmatch(number)
    if not m:
        return False
    n, dd, a, j, tr, o = m.groups()
    return int(n + a + j + tr + o + dd) % 97 == 1


def pdf_problems(data: bytes) -> list[str]:
    out = []
    if not data.startswith(b"%PDF-1."):
        return ["no %PDF header"]
    if not data.rstrip().endswith(b"%%EOF"):
        out.append("no %%EOF")
    m = re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data)
    if not m:
        return out + ["no startxref"]
    xref = int(m.group(1))
    if data[xref:xref + 4] != b"xref":
        return out + [f"startxref {xref} does not point at 'xref'"]
    hm = re.match(rb"xref\s+0 (\d+)\s+", data[xref:])
    if not hm:
        return out + ["bad xref subsection header"]
    count, pos = int(hm.group(1)), xref + hm.end()
    for i in range(count):
        entry = data[pos + 20 * i: pos + 20 * i + 20]
        if len(entry) != 20 or entry[-2:] not in (b" \n", b"\r\n"):
            out.append(f"xref entry {i} is not 20 bytes")
            break
        if i and entry[17:18] == b"n":
            off = int(entry[:10])
            if not data.startswith(f"{i} 0 obj".encode(), off):
                out.append(f"object {i}: offset {off} is wrong")
    if b"trailer" not in data[xref:]:
        out.append("no trailer")
    return out


def png_problems(data: bytes) -> list[str]:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ["no PNG signature"]
    pos, tags = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        crc = int.from_bytes(data[pos + 8 + length:pos + 12 + length], "big")
        if zlib.crc32(tag + body) & 0xFFFFFFFF != crc:
            return [f"bad CRC in {tag!r}"]
        tags.append(tag)
        pos += 12 + length
    if tags[0] != b"IHDR" or tags[-1] != b"IEND" or b"IDAT" not in tags:
        return ["bad chunk order"]
    return []


def jpeg_problems(data: bytes) -> list[str]:
    if not data.startswith(b"\xff\xd8") or not data.endswith(b"\xff\xd9"):
        return ["missing SOI/EOI"]
    return []


def check_process(pdir: Path) -> tuple[list[str], int, int]:
    problems: list[str] = []
    where = pdir.name
    if not cnj_ok(pdir.name):
        problems.append(f"{where}: folder name is not a valid CNJ number")
    meta = json.loads((pdir / "process.json").read_text(encoding="utf-8"))
    if meta.get("number") != pdir.name:
        problems.append(f"{where}: number {meta.get('number')!r} != folder name")
    docs = meta.get("documents")
    if not isinstance(docs, list):
        return problems + [f"{where}: documents is not a list"], 0, 0
    ids = [d.get("id") for d in docs]
    if len(set(ids)) != len(ids):
        problems.append(f"{where}: duplicate document ids")
    total = 0
    for d in docs:
        tag = f"{where}/{d.get('id')}"
        if not d.get("id") or not d.get("name") or not d.get("url"):
            problems.append(f"{tag}: id, name and url are required")
            continue
        if set(d) - ALLOWED:
            problems.append(f"{tag}: unknown fields {sorted(set(d) - ALLOWED)}")
        path = (pdir / d["url"]).resolve()
        if pdir.resolve() not in path.parents:
            problems.append(f"{tag}: url escapes the process folder")
            continue
        if not path.is_file():
            problems.append(f"{tag}: {d['url']} does not exist")
            continue
        data = path.read_bytes()
        total += len(data)
        if "size" in d and d["size"] != len(data):
            problems.append(f"{tag}: size {d['size']} != {len(data)}")
        if "sha256" in d:
            if not re.fullmatch(r"[0-9a-f]{64}", d["sha256"]):
                problems.append(f"{tag}: sha256 is not lowercase hex")
            elif d["sha256"] != hashlib.sha256(data).hexdigest():
                problems.append(f"{tag}: sha256 mismatch")
        suffix = path.suffix.lower()
        if suffix == ".pdf":
            problems += [f"{tag}: {p}" for p in pdf_problems(data)]
        elif suffix == ".png":
            problems += [f"{tag}: {p}" for p in png_problems(data)]
        elif suffix in (".jpg", ".jpeg"):
            problems += [f"{tag}: {p}" for p in jpeg_problems(data)]
        elif suffix == ".txt":
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"{tag}: not UTF-8")
    return problems, len(docs), total


def main() -> int:
    problems: list[str] = []
    for pdir in sorted(p for p in ROOT.iterdir() if p.is_dir() and CNJ.fullmatch(p.name)):
        probs, n, total = check_process(pdir)
        problems += probs
        print(f"{pdir.name}: {n} documents, {total:,} bytes" + ("" if probs else ", ok"))
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
