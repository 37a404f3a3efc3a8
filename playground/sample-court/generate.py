#!/usr/bin/env python3
"""Deterministic generator for the "sample court" (folder-based upstream court source).

Standard library only (Python 3.11). Re-running it produces byte-identical files:
all randomness comes from fixed seeds, all dates are fixed, and nothing depends on
the clock, the locale or the directory listing order.

Layout produced next to this script:

    <CNJ number>/process.json
    <CNJ number>/files/<document id>.<ext>

plus README.md (the table of processes is generated, do not edit it by hand).

Usage:  python3 generate.py            # (re)generate everything in place
        python3 check.py               # verify sizes / sha256 against process.json
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
import struct
import sys
import unicodedata
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# Anything larger than this is "large" for the service (8 MiB).
LARGE_THRESHOLD = 8 * 1024 * 1024
FOLDER_LIMIT = 15 * 1024 * 1024


# --------------------------------------------------------------------------------------
# CNJ numbers (Resolução CNJ 65/2008): NNNNNNN-DD.AAAA.J.TR.OOOO, DD = ISO 7064 mod 97-10
# --------------------------------------------------------------------------------------

def cnj_number(seq: int, year: int, j: int, tr: int, origin: int) -> str:
    base = f"{seq:07d}{year:04d}{j:01d}{tr:02d}{origin:04d}"
    dd = 98 - int(base + "00") % 97
    number = f"{seq:07d}-{dd:02d}.{year:04d}.{j:01d}.{tr:02d}.{origin:04d}"
    assert cnj_is_valid(number), number
    return number


def cnj_is_valid(number: str) -> bool:
    m = re.fullmatch(r"(\d{7})-(\d{2})\.(\d{4})\.(\d)\.(\d{2})\.(\d{4})", number)
    if not m:
        return False
    n, dd, a, j, tr, o = m.groups()
    return int(n + a + j + tr + o + dd) % 97 == 1


# --------------------------------------------------------------------------------------
# Minimal PDF 1.4 writer (Type1 standard fonts, WinAnsiEncoding, FlateDecode streams)
# --------------------------------------------------------------------------------------

# Helvetica advance widths (AFM, 1/1000 em) for ASCII 32..126.
_HELV = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,  # sp..'/'
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,  # 0..?
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,  # @..O
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,  # P.._
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,  # `..o
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,  # p..~
]
_HELV_EXTRA = {"–": 556, "—": 1000, "“": 333, "”": 333, "‘": 222, "’": 222, "§": 556,
               "º": 365, "ª": 370, "°": 400, "•": 350, "€": 556, "…": 1000}

FONT_REGULAR, FONT_BOLD, FONT_MONO = "F1", "F2", "F3"


def char_width(ch: str, font: str) -> float:
    if font == FONT_MONO:
        return 600.0
    o = ord(ch)
    if 32 <= o <= 126:
        w = _HELV[o - 32]
    elif ch in _HELV_EXTRA:
        w = _HELV_EXTRA[ch]
    else:
        base = unicodedata.normalize("NFD", ch)[0]
        w = _HELV[ord(base) - 32] if 32 <= ord(base) <= 126 else 556
    if font == FONT_BOLD:
        w *= 1.06  # Helvetica-Bold is slightly wider; good enough for line breaking
    return float(w)


def text_width(s: str, font: str, size: float) -> float:
    return sum(char_width(c, font) for c in s) * size / 1000.0


def pdf_string(s: str) -> str:
    """A PDF literal string in WinAnsiEncoding, non-ASCII bytes escaped as octal."""
    out = []
    for b in s.encode("cp1252"):
        if b in (0x28, 0x29, 0x5C):
            out.append("\\" + chr(b))
        elif b < 0x20 or b > 0x7E:
            out.append("\\%03o" % b)
        else:
            out.append(chr(b))
    return "(" + "".join(out) + ")"


def pdf_text_string(s: str) -> str:
    """A PDF text string (for the Info dictionary): UTF-16BE with BOM, as hex."""
    return "<FEFF" + s.encode("utf-16-be").hex().upper() + ">"


class PdfWriter:
    def __init__(self) -> None:
        self.objects: list[bytes | None] = []

    def reserve(self) -> int:
        self.objects.append(None)
        return len(self.objects)

    def set(self, num: int, body: bytes | str) -> None:
        if isinstance(body, str):
            body = body.encode("latin-1")
        self.objects[num - 1] = body

    def add(self, body: bytes | str) -> int:
        num = self.reserve()
        self.set(num, body)
        return num

    def add_stream(self, dictionary: str, data: bytes, compress: bool = True) -> int:
        if compress:
            data = zlib.compress(data, 9)
            dictionary = dictionary + " /Filter /FlateDecode"
        head = f"<< {dictionary.strip()} /Length {len(data)} >>\nstream\n".encode("latin-1")
        return self.add(head + data + b"\nendstream")

    def serialize(self, root: int, info: int, file_id: bytes) -> bytes:
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for i, body in enumerate(self.objects, start=1):
            assert body is not None, f"object {i} reserved but never set"
            offsets.append(len(out))
            out += f"{i} 0 obj\n".encode("latin-1") + body + b"\nendobj\n"
        xref = len(out)
        out += f"xref\n0 {len(self.objects) + 1}\n".encode("latin-1")
        out += b"0000000000 65535 f \n"
        for off in offsets:
            out += f"{off:010d} 00000 n \n".encode("latin-1")
        hexid = file_id.hex().upper()
        out += (f"trailer\n<< /Size {len(self.objects) + 1} /Root {root} 0 R /Info {info} 0 R "
                f"/ID [<{hexid}> <{hexid}>] >>\nstartxref\n{xref}\n%%EOF\n").encode("latin-1")
        return bytes(out)


# Page geometry (A4, points)
PAGE_W, PAGE_H = 595, 842
MARGIN_L, MARGIN_R = 72, 72
BODY_W = PAGE_W - MARGIN_L - MARGIN_R
BODY_TOP = PAGE_H - 150   # below the page header
BODY_BOTTOM = 80          # above the footer


class Image:
    """A raster image to be placed on a page as an XObject."""

    def __init__(self, width: int, height: int, colorspace: str, data: bytes) -> None:
        assert len(data) == width * height * (3 if colorspace == "DeviceRGB" else 1)
        self.width, self.height, self.colorspace, self.data = width, height, colorspace, data


class Page:
    def __init__(self) -> None:
        self.ops: list[str] = []
        self.images: list[tuple[str, Image]] = []

    def text(self, x: float, y: float, s: str, font: str = FONT_REGULAR, size: float = 11,
             word_spacing: float = 0.0) -> None:
        tw = f"{word_spacing:.3f} Tw " if word_spacing else "0 Tw "
        self.ops.append(f"BT /{font} {size:g} Tf {tw}1 0 0 1 {x:.2f} {y:.2f} Tm "
                        f"{pdf_string(s)} Tj ET")

    def centered(self, y: float, s: str, font: str = FONT_REGULAR, size: float = 11) -> None:
        self.text((PAGE_W - text_width(s, font, size)) / 2, y, s, font, size)

    def right(self, y: float, s: str, font: str = FONT_REGULAR, size: float = 11) -> None:
        self.text(PAGE_W - MARGIN_R - text_width(s, font, size), y, s, font, size)

    def line(self, x1: float, y1: float, x2: float, y2: float, width: float = 0.6) -> None:
        self.ops.append(f"{width:g} w {x1:.2f} {y1:.2f} m {x2:.2f} {y2:.2f} l S")

    def rect(self, x: float, y: float, w: float, h: float, width: float = 0.6) -> None:
        self.ops.append(f"{width:g} w {x:.2f} {y:.2f} {w:.2f} {h:.2f} re S")

    def image(self, img: Image, x: float, y: float, w: float, h: float) -> None:
        name = f"Im{len(self.images) + 1}"
        self.images.append((name, img))
        self.ops.append(f"q {w:.2f} 0 0 {h:.2f} {x:.2f} {y:.2f} cm /{name} Do Q")


def wrap(text: str, font: str, size: float, width: float, indent: float = 0.0) -> list[str]:
    words = text.split()
    lines: list[str] = []
    cur = ""
    avail = width - indent
    for w in words:
        cand = w if not cur else cur + " " + w
        if text_width(cand, font, size) <= avail or not cur:
            cur = cand
        else:
            lines.append(cur)
            cur = w
            avail = width
    if cur:
        lines.append(cur)
    return lines


class Layout:
    """Flows blocks of text onto pages; header and footer are added at the end."""

    def __init__(self, ctx: dict, doc_title: str, date: str) -> None:
        self.ctx, self.doc_title, self.date = ctx, doc_title, date
        self.pages: list[Page] = []
        self.y = 0.0
        self.new_page()

    def new_page(self) -> None:
        self.pages.append(Page())
        self.y = BODY_TOP

    @property
    def page(self) -> Page:
        return self.pages[-1]

    def need(self, h: float) -> None:
        if self.y - h < BODY_BOTTOM:
            self.new_page()

    def space(self, h: float) -> None:
        self.y -= h

    def title(self, s: str, size: float = 13) -> None:
        self.need(size * 2.2)
        self.y -= size * 1.2
        self.page.centered(self.y, s, FONT_BOLD, size)
        self.y -= size * 0.9

    def heading(self, s: str) -> None:
        self.need(34)
        self.y -= 16
        self.page.text(MARGIN_L, self.y, s, FONT_BOLD, 11)
        self.y -= 6

    def para(self, s: str, size: float = 11, indent: float = 36, leading: float = 15.5,
             font: str = FONT_REGULAR, justify: bool = True, left: float = 0.0) -> None:
        width = BODY_W - left
        lines = wrap(s, font, size, width, indent)
        for i, ln in enumerate(lines):
            self.need(leading)
            self.y -= leading
            x = MARGIN_L + left + (indent if i == 0 else 0)
            avail = width - (indent if i == 0 else 0)
            tw = 0.0
            if justify and i < len(lines) - 1 and " " in ln:
                tw = (avail - text_width(ln, font, size)) / ln.count(" ")
                tw = min(tw, 6.0)
            self.page.text(x, self.y, ln, font, size, tw)
        self.y -= leading * 0.45

    def labelled(self, label: str, value: str, size: float = 10.5) -> None:
        self.need(15)
        self.y -= 15
        self.page.text(MARGIN_L, self.y, label, FONT_BOLD, size)
        x = MARGIN_L + text_width(label + " ", FONT_BOLD, size)
        for i, ln in enumerate(wrap(value, FONT_REGULAR, size, PAGE_W - MARGIN_R - x)):
            if i:
                self.need(14)
                self.y -= 14
            self.page.text(x, self.y, ln, FONT_REGULAR, size)

    def mono(self, lines: list[str], size: float = 8.5, leading: float = 11.5) -> None:
        for ln in lines:
            self.need(leading)
            self.y -= leading
            self.page.text(MARGIN_L, self.y, ln, FONT_MONO, size)

    def signature(self, place_date: str, name: str, role: str) -> None:
        self.need(110)
        self.y -= 24
        self.page.right(self.y, place_date, FONT_REGULAR, 11)
        self.y -= 52
        x1, x2 = PAGE_W / 2 - 120, PAGE_W / 2 + 120
        self.page.line(x1, self.y, x2, self.y, 0.5)
        self.y -= 14
        self.page.centered(self.y, name, FONT_BOLD, 11)
        self.y -= 14
        self.page.centered(self.y, role, FONT_REGULAR, 10)
        self.y -= 10

    def full_page_image(self, img: Image, caption: str) -> None:
        if self.y < BODY_TOP:
            self.new_page()
        avail_h = BODY_TOP - BODY_BOTTOM - 30
        scale = min(BODY_W / img.width, avail_h / img.height)
        w, h = img.width * scale, img.height * scale
        x = (PAGE_W - w) / 2
        y = BODY_TOP - h
        self.page.image(img, x, y, w, h)
        self.page.rect(x, y, w, h, 0.4)
        self.page.centered(y - 16, caption, FONT_REGULAR, 9)
        self.y = BODY_BOTTOM  # image pages are full

    def finish(self, doc_id: str) -> bytes:
        ctx = self.ctx
        n = len(self.pages)
        code = hashlib.sha256(f"{ctx['number']}/{doc_id}".encode()).hexdigest()[:16].upper()
        code = "-".join(code[i:i + 4] for i in range(0, 16, 4))
        for i, p in enumerate(self.pages, start=1):
            # header
            p.centered(PAGE_H - 50, "PODER JUDICIÁRIO", FONT_BOLD, 10)
            p.centered(PAGE_H - 64, ctx["court_name"], FONT_BOLD, 10)
            p.centered(PAGE_H - 78, ctx["unit"], FONT_REGULAR, 10)
            p.line(MARGIN_L, PAGE_H - 88, PAGE_W - MARGIN_R, PAGE_H - 88, 0.8)
            p.text(MARGIN_L, PAGE_H - 104, f"Processo nº {ctx['number']}", FONT_BOLD, 9.5)
            p.right(PAGE_H - 104, ctx["class"], FONT_REGULAR, 9.5)
            if i == 1:
                p.text(MARGIN_L, PAGE_H - 118, f"{ctx['active_label']}: {ctx['active']}",
                       FONT_REGULAR, 9)
                p.text(MARGIN_L, PAGE_H - 130, f"{ctx['passive_label']}: {ctx['passive']}",
                       FONT_REGULAR, 9)
            p.line(MARGIN_L, PAGE_H - 138, PAGE_W - MARGIN_R, PAGE_H - 138, 0.3)
            # footer
            p.line(MARGIN_L, 58, PAGE_W - MARGIN_R, 58, 0.3)
            p.text(MARGIN_L, 46, "Documento assinado digitalmente nos termos da Lei nº 11.419/2006 "
                   f"e da MP nº 2.200-2/2001. Código de verificação: {code}.", FONT_REGULAR, 7)
            p.text(MARGIN_L, 36, f"{self.doc_title} – {self.date}", FONT_REGULAR, 7)
            p.right(36, f"Página {i} de {n}", FONT_REGULAR, 7)
        return render_pdf(self.pages, title=self.doc_title, author=ctx["court_name"],
                          subject=f"Processo {ctx['number']}", date=pdf_date(self.date),
                          seed=f"{ctx['number']}/{doc_id}")


_MONTHS = ["janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto",
           "setembro", "outubro", "novembro", "dezembro"]


def pdf_date(date: str) -> str:
    """'15 de março de 2017' -> '20170315103000-03'00'' (fixed time of day)."""
    m = re.fullmatch(r"(\d{1,2})º? de (\w+) de (\d{4})", date)
    assert m, date
    day, month, year = int(m.group(1)), _MONTHS.index(m.group(2)) + 1, int(m.group(3))
    return f"{year:04d}{month:02d}{day:02d}103000-03'00'"


def render_pdf(pages: list[Page], title: str, author: str, subject: str, date: str,
               seed: str) -> bytes:
    w = PdfWriter()
    catalog = w.reserve()
    pages_obj = w.reserve()
    f1 = w.add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    f2 = w.add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold "
               "/Encoding /WinAnsiEncoding >>")
    f3 = w.add("<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>")
    info = w.add(f"<< /Title {pdf_text_string(title)} /Author {pdf_text_string(author)} "
                 f"/Subject {pdf_text_string(subject)} "
                 f"/Creator (autos sample-court generator) /Producer (generate.py) "
                 f"/CreationDate (D:{date}) /ModDate (D:{date}) >>")
    kids = []
    for p in pages:
        xobjs = []
        for name, img in p.images:
            num = w.add_stream(f"/Type /XObject /Subtype /Image /Width {img.width} "
                               f"/Height {img.height} /ColorSpace /{img.colorspace} "
                               f"/BitsPerComponent 8", img.data)
            xobjs.append(f"/{name} {num} 0 R")
        content = w.add_stream("", ("\n".join(p.ops) + "\n").encode("latin-1"))
        res = f"/Font << /F1 {f1} 0 R /F2 {f2} 0 R /F3 {f3} 0 R >>"
        if xobjs:
            res += " /XObject << " + " ".join(xobjs) + " >> /ProcSet [/PDF /Text /ImageB /ImageC]"
        else:
            res += " /ProcSet [/PDF /Text]"
        kids.append(w.add(f"<< /Type /Page /Parent {pages_obj} 0 R /MediaBox [0 0 {PAGE_W} "
                          f"{PAGE_H}] /Resources << {res} >> /Contents {content} 0 R >>"))
    w.set(pages_obj, "<< /Type /Pages /Kids [" + " ".join(f"{k} 0 R" for k in kids)
          + f"] /Count {len(kids)} >>")
    w.set(catalog, f"<< /Type /Catalog /Pages {pages_obj} 0 R >>")
    return w.serialize(catalog, info, hashlib.md5(seed.encode()).digest())


# --------------------------------------------------------------------------------------
# Raster helpers (pure Python, fast enough thanks to bytearray slicing / big-int masks)
# --------------------------------------------------------------------------------------

def add_noise(data: bytes, rng: random.Random, bits: int) -> bytes:
    """Add uniform noise of `bits` bits to every byte (scanner/sensor noise).

    The image is first scaled into 0..255-amp with a translate table, so adding the
    noise bytes as one big integer never carries from one byte into the next.
    """
    if bits <= 0:
        return bytes(data)
    amp = (1 << bits) - 1
    n = len(data)
    table = bytes(v * (255 - amp) // 255 for v in range(256))
    scaled = int.from_bytes(bytes(data).translate(table), "big")
    noise = int.from_bytes(rng.randbytes(n), "big") & int.from_bytes(bytes([amp]) * n, "big")
    return (scaled + noise).to_bytes(n, "big")


class Canvas:
    """A tiny raster canvas (gray: 1 byte/pixel, rgb: 3 bytes/pixel)."""

    def __init__(self, w: int, h: int, channels: int, fill: tuple[int, ...]) -> None:
        self.w, self.h, self.c = w, h, channels
        self.buf = bytearray(bytes(fill) * (w * h))

    def fill_rect(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, ...]) -> None:
        x0, x1 = max(0, x0), min(self.w, x1)
        y0, y1 = max(0, y0), min(self.h, y1)
        if x0 >= x1:
            return
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            o = (y * self.w + x0) * self.c
            self.buf[o:o + len(row)] = row

    def vgradient(self, y0: int, y1: int, top: tuple[int, ...], bottom: tuple[int, ...]) -> None:
        for y in range(max(0, y0), min(self.h, y1)):
            t = (y - y0) / max(1, (y1 - y0 - 1))
            color = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom))
            self.fill_rect(0, y, self.w, y + 1, color)

    def disc(self, cx: int, cy: int, r: int, color: tuple[int, ...], ring: int = 0) -> None:
        for y in range(cy - r, cy + r + 1):
            dy = y - cy
            half = int(math.sqrt(max(0, r * r - dy * dy)))
            if ring:
                inner = r - ring
                if abs(dy) < inner:
                    ih = int(math.sqrt(inner * inner - dy * dy))
                    self.fill_rect(cx - half, y, cx - ih, y + 1, color)
                    self.fill_rect(cx + ih, y, cx + half + 1, y + 1, color)
                    continue
            self.fill_rect(cx - half, y, cx + half + 1, y + 1, color)

    def triangle_up(self, cx: int, top: int, base_y: int, half_w: int,
                    color: tuple[int, ...]) -> None:
        for y in range(top, base_y):
            hw = int(half_w * (y - top) / max(1, base_y - top))
            self.fill_rect(cx - hw, y, cx + hw + 1, y + 1, color)

    def text_lines(self, x0: int, y0: int, x1: int, y1: int, rng: random.Random,
                   color: tuple[int, ...], line_h: int = 14, bar_h: int = 5) -> None:
        """Fake lines of printed text: runs of short dark bars ("words")."""
        y = y0
        while y + bar_h < y1:
            x = x0 + (rng.randrange(0, 30) if rng.random() < 0.2 else 0)
            end = x1 - (rng.randrange(40, 200) if rng.random() < 0.25 else 0)
            while x < end:
                wlen = rng.randrange(12, 60)
                self.fill_rect(x, y, min(x + wlen, end), y + bar_h, color)
                x += wlen + rng.randrange(5, 9)
            y += line_h

    def scribble(self, x0: int, y0: int, length: int, amp: int, color: tuple[int, ...],
                 seed: float) -> None:
        """A handwritten-looking signature: a thick wobbly curve."""
        for i in range(length):
            x = x0 + i
            y = y0 + int(amp * math.sin(i / 9.0 + seed) * math.cos(i / 23.0 + 2 * seed))
            self.fill_rect(x, y - 1, x + 2, y + 2, color)

    def bytes(self) -> bytes:
        return bytes(self.buf)


def scanned_page(seed: int, w: int, h: int, noise_bits: int, stamp: bool = True) -> Image:
    """A grayscale 'scanned' document page: text lines, a stamp and a signature."""
    rng = random.Random(seed)
    c = Canvas(w, h, 1, (236,))
    m = w // 12
    c.fill_rect(m, m, w - m, m + h // 40, (70,))                   # letterhead bar
    c.text_lines(m, m + h // 20, w - m, h * 2 // 3, rng, (60,), line_h=max(10, h // 55),
                 bar_h=max(3, h // 200))
    for k in range(4):                                             # a small form/table
        y = h * 2 // 3 + 10 + k * (h // 30)
        c.fill_rect(m, y, w - m, y + 2, (90,))
    if stamp:
        c.disc(w * 3 // 4, h * 5 // 6, w // 10, (110,), ring=max(3, w // 120))
    c.scribble(m + 20, h * 6 // 7, w // 3, max(6, h // 60), (40,), seed % 7)
    return Image(w, h, "DeviceGray", add_noise(c.bytes(), rng, noise_bits))


def site_photo(seed: int, w: int, h: int, noise_bits: int) -> Image:
    """An RGB 'photograph' of a damaged wall: sky, wall with bricks and a crack."""
    rng = random.Random(seed)
    c = Canvas(w, h, 3, (0, 0, 0))
    horizon = h // 3 + rng.randrange(-h // 10, h // 10)
    c.vgradient(0, horizon, (120, 165, 215), (205, 220, 235))            # sky
    c.vgradient(horizon, h, (178, 120, 92), (120, 80, 62))               # wall
    bh, bw = max(8, h // 30), max(20, w // 14)
    for row, y in enumerate(range(horizon, h, bh)):                      # mortar lines
        c.fill_rect(0, y, w, y + 2, (205, 200, 190))
        off = (row % 2) * bw // 2
        for x in range(-off, w, bw):
            c.fill_rect(x, y, x + 2, y + bh, (205, 200, 190))
    x = w // 2 + rng.randrange(-w // 6, w // 6)                         # the crack
    for y in range(horizon, h):
        x += rng.choice((-2, -1, 0, 0, 1, 2))
        c.fill_rect(x - 2, y, x + 3, y + 1, (35, 28, 25))
    c.fill_rect(w // 20, h - h // 8, w // 20 + w // 5, h - h // 8 + h // 40, (240, 230, 60))  # scale
    return Image(w, h, "DeviceRGB", add_noise(c.bytes(), rng, noise_bits))


# --------------------------------------------------------------------------------------
# PNG and baseline JPEG encoders
# --------------------------------------------------------------------------------------

def png_encode(w: int, h: int, channels: int, data: bytes) -> bytes:
    color_type = {1: 0, 3: 2}[channels]
    stride = w * channels
    raw = b"".join(b"\x00" + data[y * stride:(y + 1) * stride] for y in range(h))

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + tag + payload
                + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
            + chunk(b"pHYs", struct.pack(">IIB", 11811, 11811, 1))  # 300 dpi
            + chunk(b"tEXt", b"Software\x00autos sample-court generate.py")
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


_ZIGZAG = sorted(range(64), key=lambda i: ((i // 8) + (i % 8),
                                           (i % 8) if ((i // 8) + (i % 8)) % 2 == 0 else (i // 8)))
_QBASE = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
          14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
          18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
          49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_DC_BITS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
_DC_VALS = list(range(12))
_AC_BITS = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D]
_AC_VALS = bytes.fromhex(
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f0"
    "2433627282090a161718191a25262728292a3435363738393a43444546474849"
    "4a535455565758595a636465666768696a737475767778797a83848586878889"
    "8a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5"
    "c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8"
    "f9fa")
assert len(_AC_VALS) == sum(_AC_BITS) == 162 and len(_DC_VALS) == sum(_DC_BITS)
assert _ZIGZAG[:10] == [0, 1, 8, 16, 9, 2, 3, 10, 17, 24] and _ZIGZAG[-3:] == [55, 62, 63]


def _huff_codes(bits: list[int], vals) -> dict[int, tuple[int, int]]:
    codes, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            codes[vals[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return codes


def jpeg_encode_gray(w: int, h: int, data: bytes, quality: int = 85) -> bytes:
    """Baseline (SOF0) grayscale JPEG with the standard Annex K Huffman tables."""
    assert w % 8 == 0 and h % 8 == 0
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    q = [min(255, max(1, (v * scale + 50) // 100)) for v in _QBASE]
    dc_codes, ac_codes = _huff_codes(_DC_BITS, _DC_VALS), _huff_codes(_AC_BITS, _AC_VALS)
    cos_t = [[(math.sqrt(0.125) if u == 0 else 0.5) * math.cos((2 * x + 1) * u * math.pi / 16)
              for x in range(8)] for u in range(8)]

    out = bytearray()
    acc, nacc = 0, 0

    def put(code: int, length: int) -> None:
        nonlocal acc, nacc
        acc = (acc << length) | code
        nacc += length
        while nacc >= 8:
            nacc -= 8
            b = (acc >> nacc) & 0xFF
            out.append(b)
            if b == 0xFF:
                out.append(0)
        acc &= (1 << nacc) - 1

    def magnitude(v: int) -> tuple[int, int]:
        s = abs(v).bit_length()
        return s, (v if v >= 0 else v + (1 << s) - 1)

    prev_dc = 0
    for by in range(0, h, 8):
        for bx in range(0, w, 8):
            blk = [[data[(by + y) * w + bx + x] - 128 for x in range(8)] for y in range(8)]
            rows = [[sum(cos_t[u][x] * r[x] for x in range(8)) for u in range(8)] for r in blk]
            coef = [0.0] * 64
            for v in range(8):
                cv = cos_t[v]
                for u in range(8):
                    coef[v * 8 + u] = sum(cv[y] * rows[y][u] for y in range(8))
            zz = [int(round(coef[i] / q[i])) for i in _ZIGZAG]
            diff = zz[0] - prev_dc
            prev_dc = zz[0]
            s, bits = magnitude(diff)
            put(*dc_codes[s])
            if s:
                put(bits, s)
            run = 0
            for k in range(1, 64):
                v = max(-1023, min(1023, zz[k]))
                if v == 0:
                    run += 1
                    continue
                while run > 15:
                    put(*ac_codes[0xF0])
                    run -= 16
                s, bits = magnitude(v)
                put(*ac_codes[(run << 4) | s])
                put(bits, s)
                run = 0
            if run:
                put(*ac_codes[0x00])
    if nacc:
        put((1 << (8 - nacc)) - 1, 8 - nacc)

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">HH", marker, len(payload) + 2) + payload

    return (b"\xff\xd8"
            + segment(0xFFE0, b"JFIF\x00\x01\x01\x01\x00\x48\x00\x48\x00\x00")
            + segment(0xFFFE, b"autos sample-court generate.py")
            + segment(0xFFDB, b"\x00" + bytes(q[i] for i in _ZIGZAG))
            + segment(0xFFC0, struct.pack(">BHHB", 8, h, w, 1) + b"\x01\x11\x00")
            + segment(0xFFC4, b"\x00" + bytes(_DC_BITS) + bytes(_DC_VALS))
            + segment(0xFFC4, b"\x10" + bytes(_AC_BITS) + _AC_VALS)
            + segment(0xFFDA, b"\x01\x01\x00\x00\x3f\x00")
            + bytes(out) + b"\xff\xd9")


# --------------------------------------------------------------------------------------
# Text content
# --------------------------------------------------------------------------------------

FILLER_PARTY = [
    "Nos termos do artigo 319 do Código de Processo Civil, a presente peça expõe os fatos e os "
    "fundamentos jurídicos do pedido, com suas especificações, indicando as provas com que se "
    "pretende demonstrar a verdade dos fatos alegados.",
    "Cumpre destacar que a documentação acostada aos autos é suficiente para demonstrar a "
    "verossimilhança das alegações, não havendo qualquer elemento capaz de infirmar a narrativa "
    "aqui apresentada, conforme se verifica das fotografias, recibos e declarações juntados.",
    "A jurisprudência do Superior Tribunal de Justiça é firme no sentido de que o dano moral "
    "decorrente de situações como a narrada prescinde de prova do prejuízo concreto, bastando a "
    "demonstração do fato ofensivo e do nexo de causalidade com a conduta do agente.",
    "Não se trata de mero aborrecimento cotidiano. A situação vivenciada ultrapassou, em muito, "
    "os dissabores comuns da vida em sociedade, atingindo a esfera de dignidade, tranquilidade e "
    "segurança da parte, que se viu privada do uso regular de sua residência por várias semanas.",
    "Quanto ao valor da indenização, deve o julgador observar os princípios da razoabilidade e da "
    "proporcionalidade, considerando a extensão do dano, a capacidade econômica das partes e o "
    "caráter pedagógico da condenação, de modo a desestimular a reiteração da conduta.",
    "Registre-se, ainda, que as tentativas de composição extrajudicial restaram infrutíferas, "
    "tendo a parte contrária se limitado a respostas evasivas, sem apresentar qualquer proposta "
    "concreta de reparação, o que tornou inevitável o ajuizamento da demanda.",
    "Ressalte-se que o artigo 186 do Código Civil estabelece que aquele que, por ação ou omissão "
    "voluntária, negligência ou imprudência, violar direito e causar dano a outrem, ainda que "
    "exclusivamente moral, comete ato ilícito, sujeitando-se à reparação prevista no artigo 927.",
    "A prova pericial, por sua vez, revela-se imprescindível para a exata apuração da extensão dos "
    "danos e de sua origem, razão pela qual se requer desde já a sua produção, com a indicação "
    "de assistente técnico e apresentação de quesitos no momento oportuno.",
    "Por fim, cabe lembrar que o ônus da prova incumbe ao réu quanto à existência de fato "
    "impeditivo, modificativo ou extintivo do direito do autor, nos exatos termos do artigo 373, "
    "inciso II, do Código de Processo Civil, ônus do qual não se desincumbiu.",
    "Os recibos de pagamento de hospedagem, transporte e alimentação juntados sob os números 7 a "
    "12 comprovam os gastos extraordinários suportados no período, que somam R$ 8.742,35 (oito "
    "mil, setecentos e quarenta e dois reais e trinta e cinco centavos).",
    "Importa observar que a boa-fé objetiva, prevista no artigo 422 do Código Civil, impõe às "
    "partes deveres anexos de cooperação, informação e lealdade, os quais foram manifestamente "
    "desrespeitados no caso concreto, agravando a situação experimentada.",
    "Eventual alegação de caso fortuito ou força maior não encontra respaldo nos autos, uma vez "
    "que o evento decorreu de risco inerente à própria atividade desenvolvida, caracterizando o "
    "chamado fortuito interno, que não exclui a responsabilidade.",
]

FILLER_COURT = [
    "Presentes os pressupostos processuais e as condições da ação, passo ao exame do mérito, "
    "observando que as partes tiveram ampla oportunidade de manifestação, em respeito ao "
    "contraditório e à ampla defesa assegurados pelo artigo 5º, inciso LV, da Constituição Federal.",
    "A controvérsia cinge-se à verificação da responsabilidade pelos danos descritos na petição "
    "inicial e, em caso positivo, à quantificação da indenização devida, tendo em vista as provas "
    "documental e pericial produzidas sob o crivo do contraditório.",
    "O laudo pericial foi elaborado por profissional equidistante das partes, de confiança do "
    "juízo, e respondeu de forma clara e fundamentada a todos os quesitos formulados, não tendo "
    "as impugnações apresentadas o condão de infirmar suas conclusões.",
    "Nesse contexto, restou demonstrado o nexo de causalidade entre a conduta descrita e os "
    "prejuízos experimentados, o que impõe o dever de indenizar, nos termos dos artigos 186 e 927 "
    "do Código Civil.",
    "No tocante ao dano moral, a situação narrada extrapolou o mero dissabor, ensejando angústia e "
    "sensação de insegurança que justificam a reparação, cujo valor deve atender ao caráter "
    "compensatório e pedagógico, sem implicar enriquecimento sem causa.",
    "Sobre os valores da condenação incidirão correção monetária pela Tabela Prática do Tribunal "
    "de Justiça a partir do arbitramento (Súmula 362 do STJ) e juros de mora de 1% ao mês desde o "
    "evento danoso (Súmula 54 do STJ).",
    "Ficam as partes advertidas de que a oposição de embargos de declaração manifestamente "
    "protelatórios ensejará a aplicação da multa prevista no artigo 1.026, § 2º, do Código de "
    "Processo Civil.",
    "Intimem-se as partes para que, no prazo comum de 15 (quinze) dias, especifiquem as provas "
    "que pretendem produzir, justificando sua pertinência e necessidade, sob pena de preclusão.",
    "Os documentos juntados pelas partes foram submetidos ao contraditório, não tendo sido "
    "arguida sua falsidade, razão pela qual são admitidos como meio de prova, nos termos do "
    "artigo 411 do Código de Processo Civil.",
    "Verifica-se, ademais, que a matéria de direito já se encontra pacificada na jurisprudência "
    "deste Tribunal, o que recomenda a adoção do mesmo entendimento, em homenagem à segurança "
    "jurídica e à isonomia.",
]

FILLER_SOCIAL = [
    "O requerente reside com a esposa e dois netos menores em imóvel de madeira com dois cômodos, "
    "cedido por familiares, sem rede de esgoto e com abastecimento de água intermitente.",
    "A renda familiar declarada provém exclusivamente de trabalhos eventuais da esposa como "
    "diarista, no valor aproximado de R$ 350,00 mensais, acrescida do benefício do Programa Bolsa "
    "Família, de caráter assistencial.",
    "Durante a visita foi constatado que o requerente faz uso contínuo de medicamentos para "
    "hipertensão e diabetes, nem sempre disponíveis na unidade básica de saúde do município.",
    "O mobiliário é escasso e em mau estado de conservação, composto por uma cama de casal, um "
    "fogão a gás de quatro bocas, uma geladeira antiga e uma mesa com duas cadeiras.",
    "Conclui-se que o grupo familiar se encontra em situação de vulnerabilidade social, com renda "
    "per capita inferior a um quarto do salário mínimo vigente, nos termos do artigo 20, § 3º, da "
    "Lei nº 8.742/1993.",
]

FILLER_INSS = [
    "O benefício assistencial de prestação continuada exige a comprovação cumulativa da idade "
    "mínima de 65 anos e da miserabilidade do grupo familiar, não bastando a mera alegação de "
    "dificuldades financeiras, nos termos do artigo 20 da Lei nº 8.742/1993.",
    "Consta do Cadastro Único que o grupo familiar declarou renda mensal de R$ 1.250,00, composta "
    "por rendimentos de atividade pesqueira e comércio informal, o que resulta em renda per capita "
    "superior ao limite legal.",
    "Ademais, o Supremo Tribunal Federal, ao julgar o RE 567.985, não afastou a necessidade de "
    "análise concreta da situação de vulnerabilidade, cabendo à parte autora o ônus de demonstrá-la "
    "(art. 373, I, do CPC).",
    "Em caso de procedência, requer-se a observância da prescrição quinquenal, a fixação da data "
    "de início do benefício na data da juntada do laudo e a aplicação do artigo 1º-F da Lei nº "
    "9.494/1997 quanto aos consectários.",
]

FILLER_LABOUR = [
    "A reclamante foi admitida em 3 de fevereiro de 2019 para exercer a função de operadora de "
    "caixa, com salário mensal de R$ 1.812,00, tendo sido dispensada sem justa causa em 14 de "
    "março de 2023, sem o pagamento integral das verbas rescisórias.",
    "Durante todo o contrato, a reclamante cumpria jornada das 8h às 19h, de segunda a sábado, com "
    "apenas 30 minutos de intervalo intrajornada, sem o correspondente pagamento das horas "
    "extraordinárias e dos reflexos legais.",
    "Nos termos do artigo 71 da Consolidação das Leis do Trabalho, a concessão parcial do intervalo "
    "para repouso e alimentação implica o pagamento, de natureza indenizatória, apenas do período "
    "suprimido, com acréscimo de 50% sobre o valor da remuneração da hora normal de trabalho.",
    "Os cartões de ponto apresentados pela reclamada contêm horários de entrada e saída "
    "invariáveis, os chamados registros britânicos, sendo inválidos como meio de prova, conforme "
    "entendimento consolidado na Súmula 338, item III, do Tribunal Superior do Trabalho.",
    "A reclamada impugna especificamente as alegações da inicial, sustentando que a jornada era "
    "corretamente registrada e que eventuais horas extras foram compensadas por meio de banco de "
    "horas instituído por acordo coletivo.",
    "Requer-se, ainda, a condenação da reclamada ao pagamento de honorários advocatícios "
    "sucumbenciais, no percentual de 15% sobre o valor que resultar da liquidação da sentença, "
    "nos termos do artigo 791-A da CLT.",
]


def pick(rng: random.Random, pool: list[str], k: int) -> list[str]:
    k = min(k, len(pool))
    return rng.sample(pool, k)


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------

def ctx_tjsp() -> dict:
    return {
        "number": cnj_number(1500345, 2017, 8, 26, 248),
        "court": "TJSP",
        "court_name": "TRIBUNAL DE JUSTIÇA DO ESTADO DE SÃO PAULO",
        "unit": "Comarca de Indaiatuba – Foro de Indaiatuba – 2ª Vara Cível",
        "city": "Indaiatuba",
        "class": "Procedimento Comum Cível",
        "subject": "Indenização por Dano Moral",
        "active_label": "Requerente", "active": "Mariana Albuquerque Tavares",
        "active_id": "CPF nº 318.452.907-16",
        "passive_label": "Requerida", "passive": "Transportadora Rápido Sul Ltda.",
        "passive_id": "CNPJ nº 14.582.306/0001-71",
        "address_a": "Rua das Paineiras, nº 481, Jardim Esplanada, Indaiatuba-SP, CEP 13331-120",
        "address_p": "Rodovia Santos Dumont, km 56, Galpão 3, Indaiatuba-SP, CEP 13339-000",
        "office": "Avenida Presidente Vargas, nº 1.022, sala 54, Centro, Indaiatuba-SP",
        "lawyer_a": "Rodrigo Menezes Faria", "oab_a": "OAB/SP 187.342",
        "lawyer_p": "Beatriz Camargo Lins", "oab_p": "OAB/SP 256.901",
        "judge": "Henrique Vasconcelos Prado",
        "expert": "Eng. Paulo Sérgio Nogueira",
        "addressee": "EXCELENTÍSSIMO SENHOR DOUTOR JUIZ DE DIREITO DA 2ª VARA CÍVEL DA COMARCA "
                     "DE INDAIATUBA – ESTADO DE SÃO PAULO",
    }


def ctx_trf1() -> dict:
    return {
        "number": cnj_number(832, 2018, 4, 1, 3202),
        "court": "TRF1",
        "court_name": "JUSTIÇA FEDERAL – TRIBUNAL REGIONAL FEDERAL DA 1ª REGIÃO",
        "unit": "Subseção Judiciária de Tabatinga-AM – Vara Federal Cível e Criminal",
        "city": "Tabatinga",
        "class": "Procedimento Comum",
        "subject": "Benefício Assistencial (Art. 203,V CF/88)",
        "active_label": "Autor", "active": "José Raimundo da Silva Batista",
        "active_id": "CPF nº 702.118.452-30",
        "passive_label": "Réu", "passive": "Instituto Nacional do Seguro Social – INSS",
        "passive_id": "autarquia federal",
        "address_a": "Rua Marechal Mallet, s/nº, bairro Santa Rosa, Tabatinga-AM, CEP 69640-000",
        "address_p": "Avenida da Amizade, nº 2.150, Centro, Tabatinga-AM, CEP 69640-000",
        "office": "Rua Pedro Teixeira, nº 310, sala 2, Centro, Tabatinga-AM",
        "lawyer_a": "Francisco Ypiranga Neto", "oab_a": "OAB/AM 9.876",
        "lawyer_p": "Marcos Antônio Queiroz", "oab_p": "Procurador Federal, matrícula 1.456.223",
        "judge": "Luíza Helena Carvalho Ramos",
        "expert": "Dr. Igor Tavares Menezes",
        "addressee": "EXCELENTÍSSIMO(A) SENHOR(A) JUIZ(A) FEDERAL DA VARA FEDERAL CÍVEL E "
                     "CRIMINAL DA SUBSEÇÃO JUDICIÁRIA DE TABATINGA – AMAZONAS",
    }


def ctx_trt2() -> dict:
    return {
        "number": cnj_number(1000123, 2023, 5, 2, 11),
        "court": "TRT2",
        "court_name": "JUSTIÇA DO TRABALHO – TRIBUNAL REGIONAL DO TRABALHO DA 2ª REGIÃO",
        "unit": "11ª Vara do Trabalho de São Paulo",
        "city": "São Paulo",
        "class": "Ação Trabalhista - Rito Ordinário",
        "subject": "Horas Extras",
        "active_label": "Reclamante", "active": "Ana Cláudia Ferreira dos Santos",
        "active_id": "CPF nº 245.671.398-02",
        "passive_label": "Reclamada", "passive": "Comercial Paulista de Alimentos Ltda.",
        "passive_id": "CNPJ nº 03.927.114/0001-58",
        "address_a": "Rua Francisco de Paula Vicente de Azevedo, nº 77, apto. 12, Jabaquara, "
                     "São Paulo-SP, CEP 04342-010",
        "address_p": "Avenida Cupecê, nº 4.800, Jardim Prudência, São Paulo-SP, CEP 04366-001",
        "office": "Rua Líbero Badaró, nº 425, conjunto 81, Centro, São Paulo-SP",
        "lawyer_a": "Thiago Araújo Benício", "oab_a": "OAB/SP 402.115",
        "lawyer_p": "Cecília Monteiro Ávila", "oab_p": "OAB/SP 311.870",
        "judge": "Renata Oliveira Guimarães",
        "expert": "Contadora Sônia Regina Lopes",
        "addressee": "EXCELENTÍSSIMO(A) SENHOR(A) JUIZ(A) DA 11ª VARA DO TRABALHO DE SÃO PAULO "
                     "– SP",
    }


def ctx_tjmg() -> dict:
    return {
        "number": cnj_number(5001234, 2022, 8, 13, 24),
        "court": "TJMG",
        "class": "Procedimento Comum Cível",
        "subject": "Cobrança de Aluguéis - Sem despejo",
    }


def parties_intro(ctx: dict) -> str:
    return (f"{ctx['active'].upper()}, {ctx['active_id']}, por seu advogado que esta subscreve "
            f"({ctx['lawyer_a']}, {ctx['oab_a']}), vem, respeitosamente, à presença de Vossa "
            f"Excelência, em face de {ctx['passive'].upper()}, {ctx['passive_id']}, expor e "
            "requerer o quanto segue.")


# A document spec: (id, name, kind or None, builder(ctx, rng, doc) -> (bytes, ext, mime))

def doc_petition(title: str, date: str, paras: int, *, opening: list[str] | None = None,
                 requests: list[str] | None = None, side: str = "a",
                 pool: list[str] = FILLER_PARTY, sections: tuple[str, ...] = ()):
    def build(ctx, rng, doc_id):
        lay = Layout(ctx, title, date)
        lay.para(ctx["addressee"], indent=0, font=FONT_BOLD, justify=False)
        lay.space(8)
        lay.para(parties_intro(ctx) if side == "a" else
                 f"{ctx['passive'].upper()}, já qualificada nos autos da ação movida por "
                 f"{ctx['active']}, por seu(sua) representante ({ctx['lawyer_p']}, {ctx['oab_p']}), vem "
                 "apresentar a presente manifestação, pelas razões de fato e de direito a seguir.")
        lay.title(title.upper())
        for p in opening or []:
            lay.para(p)
        body = pick(rng, pool, paras)
        secs = sections or ("I – DOS FATOS", "II – DO DIREITO", "III – DAS PROVAS")
        per = max(1, math.ceil(len(body) / len(secs)))
        for i, p in enumerate(body):
            if i % per == 0 and i // per < len(secs):
                lay.heading(secs[i // per])
            lay.para(p)
        if requests:
            lay.heading("DOS PEDIDOS")
            lay.para("Ante o exposto, requer-se:")
            for j, r in enumerate(requests):
                lay.para(f"{chr(ord('a') + j)}) {r}", indent=18, left=18)
        lay.para("Termos em que, pede deferimento.", indent=36)
        lawyer, oab = (ctx["lawyer_a"], ctx["oab_a"]) if side == "a" else \
            (ctx["lawyer_p"], ctx["oab_p"])
        lay.signature(f"{ctx['city']}, {date}.", lawyer, f"Advogado(a) – {oab}")
        return lay.finish(doc_id), "pdf", "application/pdf"
    return build


def doc_court(title: str, date: str, paras: int, *, opening: list[str] | None = None,
              dispositive: list[str] | None = None, pool: list[str] = FILLER_COURT,
              signer: str | None = None, role: str = "Juiz(a) de Direito",
              closing: str | None = "Publique-se. Registre-se. Intimem-se."):
    def build(ctx, rng, doc_id):
        lay = Layout(ctx, title, date)
        lay.title(title.upper())
        lay.space(6)
        for p in opening or []:
            lay.para(p)
        for p in pick(rng, pool, paras):
            lay.para(p)
        if dispositive:
            lay.heading("DISPOSITIVO")
            for p in dispositive:
                lay.para(p)
        if closing:
            lay.para(closing, indent=36)
        lay.signature(f"{ctx['city']}, {date}.", signer or ctx["judge"], role)
        return lay.finish(doc_id), "pdf", "application/pdf"
    return build


def doc_short(title: str, date: str, lines: list[str], signer_key: str = "clerk",
              role: str = "Escrevente Técnico Judiciário"):
    def build(ctx, rng, doc_id):
        lay = Layout(ctx, title, date)
        lay.title(title.upper())
        lay.space(6)
        for p in lines:
            lay.para(p.format(**ctx))
        signer = ctx.get(signer_key, "Carla Regina Sampaio")
        lay.signature(f"{ctx['city']}, {date}.", signer, role)
        return lay.finish(doc_id), "pdf", "application/pdf"
    return build


def doc_power_of_attorney(date: str, side: str = "a"):
    def build(ctx, rng, doc_id):
        lay = Layout(ctx, "Procuração ad judicia", date)
        lay.title("PROCURAÇÃO AD JUDICIA ET EXTRA")
        grantor = ctx["active"] if side == "a" else ctx["passive"]
        grantor_id = ctx["active_id"] if side == "a" else ctx["passive_id"]
        lawyer, oab = (ctx["lawyer_a"], ctx["oab_a"]) if side == "a" else \
            (ctx["lawyer_p"], ctx["oab_p"])
        address = ctx["address_a"] if side == "a" else ctx["address_p"]
        lay.labelled("OUTORGANTE:", f"{grantor}, {grantor_id}, com endereço na {address}.")
        lay.labelled("OUTORGADO(A):", f"{lawyer}, advogado(a) inscrito(a) na {oab}, com "
                     f"escritório na {ctx['office']}.")
        lay.space(10)
        lay.para("PODERES: pelo presente instrumento particular de mandato, o(a) outorgante "
                 "nomeia e constitui seu(sua) bastante procurador(a) o(a) outorgado(a), a quem "
                 "confere os poderes da cláusula ad judicia et extra, para o foro em geral, em "
                 "qualquer juízo, instância ou tribunal, podendo propor contra quem de direito as "
                 "ações competentes e defendê-lo(a) nas contrárias, seguindo umas e outras até "
                 "final decisão, usando os recursos legais e acompanhando-os.")
        lay.para("Confere-lhe, ainda, poderes especiais para confessar, reconhecer a procedência "
                 "do pedido, transigir, desistir, renunciar ao direito sobre o qual se funda a "
                 "ação, receber, dar quitação, firmar compromisso e assinar declaração de "
                 "hipossuficiência econômica, nos termos do artigo 105 do Código de Processo Civil.")
        lay.signature(f"{ctx['city']}, {date}.", grantor, "Outorgante")
        return lay.finish(doc_id), "pdf", "application/pdf"
    return build


def doc_scanned(title: str, date: str, pages: list[tuple[int, int, int]], intro: str):
    """A PDF made of scanned pages. pages: (width, height, noise_bits) per page."""
    def build(ctx, rng, doc_id):
        lay = Layout(ctx, title, date)
        lay.title(title.upper())
        lay.para(intro)
        lay.para(f"Total de folhas digitalizadas: {len(pages)}. Digitalização em escala de cinza, "
                 "300 dpi, conferida com o original pelo(a) advogado(a) subscritor(a), nos termos "
                 "do artigo 425, inciso VI, do Código de Processo Civil.")
        seed0 = int(hashlib.sha256(f"{ctx['number']}/{doc_id}".encode()).hexdigest()[:8], 16)
        for k, (w, h, nb) in enumerate(pages, start=1):
            lay.new_page()
            lay.full_page_image(scanned_page(seed0 + k, w, h, nb),
                                f"Folha {k} de {len(pages)} – {title}")
        return lay.finish(doc_id), "pdf", "application/pdf"
    return build


def doc_expert_report(date: str):
    """The large document: a forensic engineering report with a photo annex (> 8 MiB)."""
    title = "Laudo pericial com anexos"

    def build(ctx, rng, doc_id):
        lay = Layout(ctx, title, date)
        lay.title("LAUDO PERICIAL DE ENGENHARIA")
        lay.para(f"{ctx['expert']}, perito judicial nomeado por este D. Juízo, tendo concluído os "
                 "trabalhos periciais, vem apresentar o respectivo LAUDO, acompanhado de anexo "
                 "fotográfico, para os devidos fins.")
        sections = [
            ("1. OBJETO DA PERÍCIA",
             ["A perícia tem por objeto a verificação dos danos no imóvel situado na Rua das "
              "Paineiras, nº 481, Jardim Esplanada, decorrentes da colisão de veículo de carga "
              "contra o muro frontal e a fachada da residência, ocorrida em 22 de janeiro de 2017."]),
            ("2. DILIGÊNCIAS",
             ["A vistoria foi realizada em 9 de outubro de 2017, às 9h30, com a presença da "
              "requerente, de seu advogado e da assistente técnica indicada pela requerida, "
              "tendo sido examinados o muro frontal, a fachada, a garagem e a sala de estar.",
              "Foram efetuadas medições com trena a laser, registro fotográfico georreferenciado "
              "e verificação do prumo das alvenarias com nível de bolha e fio de prumo."]),
            ("3. CONSTATAÇÕES",
             ["Constatou-se fissura inclinada a 45 graus no painel de alvenaria da fachada, com "
              "abertura máxima de 4,5 mm, típica de esforço cortante, além de deslocamento de "
              "aproximadamente 12 cm no topo do muro frontal em relação ao prumo.",
              "Não foram encontrados indícios de recalque de fundação ou de patologias "
              "preexistentes que pudessem explicar, isoladamente, os danos observados."]),
            ("4. RESPOSTAS AOS QUESITOS",
             ["Quesito 1 da requerente – Os danos são compatíveis com impacto de veículo? "
              "Resposta: Sim. A configuração das fissuras e o deslocamento do muro são "
              "compatíveis com impacto horizontal de grande energia na altura de 0,8 m a 1,2 m.",
              "Quesito 2 da requerida – Havia danos anteriores ao evento? Resposta: Não foram "
              "identificados danos anteriores; a pintura e o reboco eram recentes e homogêneos.",
              "Quesito 3 do Juízo – Qual o custo de reparo? Resposta: O custo estimado, com base "
              "na tabela SINAPI de setembro de 2017, é de R$ 27.480,00 (vinte e sete mil, "
              "quatrocentos e oitenta reais), incluídos materiais, mão de obra e BDI de 22%."]),
            ("5. CONCLUSÃO",
             ["Os danos constatados no imóvel decorrem do impacto do veículo de propriedade da "
              "requerida, sendo necessária a demolição e reconstrução do muro frontal e o "
              "tratamento das fissuras da fachada, com prazo estimado de 30 dias de obra."]),
        ]
        for head, paras in sections:
            lay.heading(head)
            for p in paras:
                lay.para(p)
        lay.signature(f"{ctx['city']}, {date}.", ctx["expert"], "Perito Judicial – CREA-SP 5060412387")
        lay.new_page()
        lay.title("ANEXO I – REGISTRO FOTOGRÁFICO")
        lay.para("As fotografias a seguir foram obtidas durante a vistoria, com câmera digital de "
                 "alta resolução, sem qualquer tratamento de imagem, e integram o presente laudo.")
        captions = ["Foto 1 – Vista geral do muro frontal", "Foto 2 – Fissura na fachada",
                    "Foto 3 – Detalhe do deslocamento do muro", "Foto 4 – Garagem, parede lateral"]
        for k, cap in enumerate(captions, start=1):
            lay.new_page()
            lay.full_page_image(site_photo(7000 + k, 1100, 820, 6), cap)
        return lay.finish(doc_id), "pdf", "application/pdf"
    return build


def doc_png_photo(seed: int):
    """A phone photo of a paper document lying on a wooden table (PNG, RGB)."""
    def build(ctx, rng, doc_id):
        r = random.Random(seed)
        w, h = 720, 960
        c = Canvas(w, h, 3, (0, 0, 0))
        c.vgradient(0, h, (150, 104, 64), (112, 74, 42))                 # table
        for y in range(0, h, 23):                                          # wood grain
            c.fill_rect(0, y, w, y + 2, (128, 86, 50))
        px0, py0, px1, py1 = 80, 70, w - 70, h - 90
        c.fill_rect(px0 + 10, py0 + 12, px1 + 10, py1 + 12, (70, 48, 30))  # shadow
        c.fill_rect(px0, py0, px1, py1, (246, 244, 236))                   # paper
        c.fill_rect(px0 + 40, py0 + 40, px1 - 40, py0 + 62, (40, 60, 120))  # letterhead
        c.text_lines(px0 + 40, py0 + 90, px1 - 40, py1 - 220, r, (45, 45, 50), 17, 6)
        c.disc(px1 - 120, py1 - 120, 60, (40, 70, 170), ring=6)            # blue stamp
        c.disc(px1 - 120, py1 - 120, 28, (40, 70, 170), ring=4)
        c.scribble(px0 + 60, py1 - 110, 240, 14, (20, 30, 90), 1.3)       # signature
        data = add_noise(c.bytes(), r, 1)
        return png_encode(w, h, 3, data), "png", "image/png"
    return build


def doc_jpeg_house(seed: int):
    """Grayscale photo of the claimant's house (baseline JPEG)."""
    def build(ctx, rng, doc_id):
        r = random.Random(seed)
        w, h = 640, 480
        c = Canvas(w, h, 1, (0,))
        c.vgradient(0, 300, (200,), (235,))                                # sky
        c.vgradient(300, h, (120,), (80,))                                 # ground
        for t in range(0, w, 37):                                          # trees
            c.disc(t + r.randrange(0, 20), 290 - r.randrange(0, 30), 26 + r.randrange(0, 14), (70,))
        c.fill_rect(180, 200, 470, 360, (165,))                            # wall (wood)
        for x in range(180, 470, 14):
            c.fill_rect(x, 200, x + 2, 360, (130,))
        c.triangle_up(325, 120, 200, 175, (60,))                           # roof
        c.fill_rect(300, 270, 350, 360, (55,))                             # door
        c.fill_rect(210, 240, 270, 290, (95,))                             # windows
        c.fill_rect(380, 240, 440, 290, (95,))
        c.fill_rect(150, 355, 500, 368, (140,))                            # stilts / deck
        data = add_noise(c.bytes(), r, 3)
        return jpeg_encode_gray(w, h, data, 85), "jpg", "image/jpeg"
    return build


def doc_text(title: str, lines: list[str]):
    def build(ctx, rng, doc_id):
        body = "\n".join(l.format(**ctx) for l in lines) + "\n"
        return body.encode("utf-8"), "txt", "text/plain; charset=utf-8"
    return build


def doc_calc(date: str):
    """Labour 'cálculos de liquidação': text + monospaced tables."""
    def build(ctx, rng, doc_id):
        lay = Layout(ctx, "Cálculos de liquidação", date)
        lay.title("CÁLCULOS DE LIQUIDAÇÃO")
        lay.para(f"{ctx['expert']}, nomeada perita contábil, apresenta os cálculos de liquidação "
                 "da sentença, atualizados até 31/10/2023, observados os parâmetros fixados no "
                 "título executivo, a Súmula 381 do TST e o IPCA-E na fase pré-judicial e a taxa "
                 "SELIC a partir do ajuizamento (ADC 58 do STF).")
        r = random.Random(4242)
        header = "Competência  Salário base  H.extras  Valor HE    Reflexos   Total devido"
        lay.heading("TABELA 1 – HORAS EXTRAS E REFLEXOS")
        rows = [header, "-" * len(header)]
        total = 0.0
        months = [(y, m) for y in (2021, 2022, 2023) for m in range(1, 13)][2:27]
        for y, m in months:
            sal = 1812.00 if y < 2022 else (1930.00 if y == 2022 else 2050.00)
            he = r.randrange(38, 66)
            val = round(sal / 220 * 1.5 * he, 2)
            refl = round(val * 0.2833, 2)
            tot = val + refl
            total += tot
            rows.append(f"{m:02d}/{y}     {brl(sal):>12}  {he:>8}  {brl(val):>10}  "
                        f"{brl(refl):>9}  {brl(tot):>12}")
        rows.append("-" * len(header))
        rows.append(f"{'TOTAL':<60}{brl(total):>13}")
        lay.mono(rows)
        lay.heading("TABELA 2 – RESUMO DA LIQUIDAÇÃO")
        fgts = round(total * 0.08, 2)
        inss = round(total * 0.09, 2)
        fees = round((total + fgts) * 0.15, 2)
        lay.mono([
            f"{'Principal (horas extras e reflexos)':<48}{brl(total):>16}",
            f"{'FGTS (8%) sobre as parcelas salariais':<48}{brl(fgts):>16}",
            f"{'(-) Contribuição previdenciária do empregado':<48}{brl(-inss):>16}",
            f"{'Honorários sucumbenciais (15%)':<48}{brl(fees):>16}",
            "-" * 64,
            f"{'TOTAL BRUTO DEVIDO PELA RECLAMADA':<48}{brl(total + fgts + fees):>16}",
        ])
        lay.para("Os cálculos detalhados mês a mês, com a evolução dos índices de correção, "
                 "encontram-se disponíveis em planilha eletrônica depositada em secretaria.")
        lay.signature(f"{ctx['city']}, {date}.", ctx["expert"], "Perita Contábil – CRC 1SP 218.540/O-3")
        return lay.finish(doc_id), "pdf", "application/pdf"
    return build


def doc_hearing(title: str, date: str):
    def build(ctx, rng, doc_id):
        lay = Layout(ctx, title, date)
        lay.title("ATA DE AUDIÊNCIA – 1ª SESSÃO")
        lay.para(f"Aos {date}, às 13h40, na sala de audiências da {ctx['unit']}, sob a presidência "
                 f"da MM. Juíza do Trabalho Dra. {ctx['judge']}, foram apregoados os litigantes: "
                 f"{ctx['active']}, reclamante, e {ctx['passive']}, reclamada.")
        lay.para(f"Presente a reclamante, acompanhada de seu advogado, Dr. {ctx['lawyer_a']} "
                 f"({ctx['oab_a']}). Presente a preposta da reclamada, Sra. Helena Duarte Vieira, "
                 f"acompanhada de sua advogada, Dra. {ctx['lawyer_p']} ({ctx['oab_p']}).")
        lay.heading("CONCILIAÇÃO")
        lay.para("Proposta a conciliação, esta foi rejeitada. A reclamada apresentou contestação "
                 "escrita com documentos, da qual teve vista o patrono da reclamante.")
        lay.heading("DEPOIMENTOS")
        lay.para("Depoimento pessoal da reclamante: \"que trabalhava das 8h às 19h; que tinha cerca "
                 "de 30 minutos de intervalo; que não conseguia registrar o horário real no ponto; "
                 "que aos sábados saía às 15h\". Nada mais.")
        lay.para("Depoimento da preposta da reclamada: \"que a jornada da reclamante era das 9h às "
                 "18h; que havia uma hora de intervalo; que o banco de horas era informado no "
                 "contracheque\". Nada mais.")
        lay.heading("ENCERRAMENTO")
        lay.para("Adiada a audiência para o dia 12/09/2023, às 14h20, para oitiva das testemunhas, "
                 "que comparecerão independentemente de intimação, sob pena de preclusão. Cientes "
                 "as partes. Nada mais.")
        lay.signature(f"{ctx['city']}, {date}.", ctx["judge"], "Juíza do Trabalho")
        return lay.finish(doc_id), "pdf", "application/pdf"
    return build


def brl(v: float) -> str:
    s = f"{abs(v):,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")
    return ("-" if v < 0 else "") + s


# ---- process definitions ------------------------------------------------------------

def process_tjsp():
    ctx = ctx_tjsp()
    ctx["clerk"] = "Carla Regina Sampaio"
    docs = [
        ("d1", "Petição inicial.pdf", "Petição Inicial", doc_petition(
            "Petição inicial", "15 de março de 2017", 12,
            opening=["Em 22 de janeiro de 2017, por volta das 23h15, um caminhão de propriedade da "
                     "requerida, conduzido por seu preposto, perdeu o controle na Rua das "
                     "Paineiras e colidiu violentamente contra o muro e a fachada da residência "
                     "da requerente, que dormia com os filhos no imóvel."],
            requests=["a citação da requerida para, querendo, apresentar contestação;",
                      "a concessão dos benefícios da justiça gratuita;",
                      "a condenação da requerida ao pagamento de indenização por danos morais no "
                      "valor de R$ 40.000,00 e por danos materiais a serem apurados em perícia;",
                      "a produção de todas as provas em direito admitidas, especialmente pericial;",
                      "a condenação da requerida nas custas e honorários advocatícios."])),
        ("d2", "Procuração.pdf", "Procuração", doc_power_of_attorney("10 de março de 2017")),
        ("d3", "Documentos pessoais da requerente.pdf", "Documento de Identificação", doc_scanned(
            "Documentos pessoais", "15 de março de 2017", [(600, 840, 3), (600, 840, 3)],
            "Seguem anexas as cópias digitalizadas do documento de identidade (RG) e do cadastro "
            "de pessoa física (CPF) da requerente.")),
        ("d4", "Comprovante de residência.pdf", "Documento Diverso", doc_scanned(
            "Comprovante de residência", "15 de março de 2017", [(560, 790, 2)],
            "Segue anexa a fatura de energia elétrica referente ao mês de fevereiro de 2017, em "
            "nome da requerente, comprovando o endereço do imóvel atingido.")),
        ("d5", "Declaração de hipossuficiência.pdf", "Declaração", doc_short(
            "Declaração de hipossuficiência", "10 de março de 2017",
            ["Eu, {active}, {active_id}, declaro, para os fins do artigo 99 do Código de "
             "Processo Civil, que não tenho condições de arcar com as custas do processo e os "
             "honorários advocatícios sem prejuízo do sustento próprio e de minha família.",
             "Declaro, ainda, estar ciente de que a falsidade desta declaração sujeita o "
             "declarante às sanções civis, administrativas e criminais previstas em lei."],
            signer_key="active", role="Declarante")),
        ("d6", "Decisão – tutela de urgência.pdf", "Decisão", doc_court(
            "Decisão", "20 de março de 2017", 3,
            opening=["Trata-se de ação de indenização com pedido de tutela de urgência para que a "
                     "requerida providencie a escoração do muro atingido, sob pena de multa "
                     "diária. Os documentos juntados demonstram o risco de desabamento."],
            dispositive=["Defiro a tutela de urgência para determinar que a requerida, no prazo "
                         "de 5 (cinco) dias, providencie a escoração do muro, sob pena de multa "
                         "diária de R$ 500,00, limitada a R$ 20.000,00. Defiro a gratuidade. "
                         "Cite-se."])),
        ("d7", "Mandado de citação.pdf", "Mandado", doc_short(
            "Mandado de citação e intimação", "22 de março de 2017",
            ["O(A) Doutor(a) {judge}, Juiz(a) de Direito, na forma da lei, MANDA a qualquer "
             "Oficial de Justiça deste Juízo que, em cumprimento ao presente, CITE a requerida "
             "{passive}, {passive_id}, para os termos da ação em epígrafe, ficando ciente de que "
             "terá o prazo de 15 (quinze) dias úteis para oferecer contestação.",
             "INTIME-SE, ainda, a requerida da decisão que deferiu a tutela de urgência, cuja "
             "cópia segue anexa, para cumprimento no prazo de 5 (cinco) dias.",
             "CUMPRA-SE, na forma e sob as penas da lei."])),
        ("d8", "Certidão do oficial de justiça.pdf", "Certidão", doc_short(
            "Certidão", "3 de abril de 2017",
            ["CERTIFICO E DOU FÉ que, em cumprimento ao mandado expedido nos autos em epígrafe, "
             "dirigi-me ao endereço indicado e, aí sendo, CITEI e INTIMEI a requerida {passive}, "
             "na pessoa de seu representante legal, Sr. Jorge Luiz Pacheco, que exarou sua nota "
             "de ciente e aceitou a contrafé que lhe ofereci.",
             "O referido é verdade e dou fé."],
            signer_key="bailiff", role="Oficial de Justiça")),
        ("d9", "Contestação.pdf", "Contestação", doc_petition(
            "Contestação", "26 de abril de 2017", 10, side="p",
            sections=("I – SÍNTESE DA INICIAL", "II – PRELIMINARMENTE", "III – DO MÉRITO",
                      "IV – DO QUANTUM INDENIZATÓRIO"),
            opening=["A requerida nega a existência de culpa de seu preposto, sustentando que o "
                     "acidente decorreu da presença de óleo na pista, fato imprevisível."],
            requests=["o acolhimento da preliminar de ilegitimidade passiva;",
                      "no mérito, a total improcedência dos pedidos;",
                      "subsidiariamente, a fixação de indenização em patamar módico."])),
        ("d10", "Procuração e atos constitutivos da ré.pdf", "Procuração", doc_scanned(
            "Procuração e contrato social", "26 de abril de 2017",
            [(620, 880, 3), (620, 880, 3), (620, 880, 2)],
            "Seguem anexos o instrumento de mandato outorgado pela requerida e a última "
            "alteração consolidada de seu contrato social.")),
        ("d11", "Réplica.pdf", "Réplica", doc_petition(
            "Réplica", "18 de maio de 2017", 7,
            sections=("I – DA PRELIMINAR", "II – DO MÉRITO"),
            requests=["a rejeição da preliminar arguida;",
                      "a procedência integral dos pedidos iniciais."])),
        ("d12", "Despacho – especificação de provas.pdf", "Despacho", doc_court(
            "Despacho", "1º de junho de 2017", 0,
            opening=["Vistos. Manifeste-se a parte autora sobre a contestação e documentos, no "
                     "prazo de 15 (quinze) dias (arts. 350 e 351 do CPC). Sem prejuízo, intimem-se "
                     "as partes para que, no prazo comum de 15 (quinze) dias, especifiquem as "
                     "provas que pretendem produzir, justificando sua pertinência e necessidade, "
                     "sob pena de preclusão.",
                     "Havendo requerimento de prova pericial, deverão as partes desde logo "
                     "apresentar quesitos e indicar assistentes técnicos."],
            closing="Intimem-se.")),
        ("d13", "Petição – especificação de provas.pdf", "Petição", doc_petition(
            "Especificação de provas", "12 de junho de 2017", 2, sections=("DAS PROVAS",),
            requests=["a produção de prova pericial de engenharia;",
                      "a oitiva de duas testemunhas, cujo rol segue anexo."])),
        ("d14", "Decisão saneadora.pdf", "Decisão", doc_court(
            "Decisão saneadora", "4 de julho de 2017", 4,
            dispositive=["Rejeito a preliminar de ilegitimidade passiva. Fixo como pontos "
                         "controvertidos a dinâmica do acidente e a extensão dos danos. Defiro a "
                         "prova pericial e nomeio o Eng. Paulo Sérgio Nogueira, que deverá "
                         "apresentar o laudo em 60 (sessenta) dias."])),
        ("d15", "Laudo pericial com anexos.pdf", "Laudo Pericial",
         doc_expert_report("30 de outubro de 2017")),
        ("d16", "Manifestação sobre o laudo.pdf", "Petição", doc_petition(
            "Manifestação sobre o laudo pericial", "21 de novembro de 2017", 3,
            sections=("DO LAUDO PERICIAL",),
            requests=["a homologação do laudo pericial;",
                      "o prosseguimento do feito com a designação de audiência."])),
        ("d17", "Termo de audiência.pdf", "Termo de Audiência", doc_short(
            "Termo de audiência de instrução e julgamento", "6 de fevereiro de 2018",
            ["Aberta a audiência, presentes a requerente {active}, acompanhada de seu advogado "
             "Dr. {lawyer_a}, e a requerida, representada por seu preposto, acompanhado da "
             "advogada Dra. {lawyer_p}. Tentada a conciliação, esta restou infrutífera.",
             "Foram ouvidas as testemunhas Sandra Lúcia Ribeiro e Otávio Henrique Matos, cujos "
             "depoimentos foram gravados em mídia audiovisual. Encerrada a instrução, as partes "
             "apresentarão alegações finais escritas no prazo sucessivo de 15 dias."],
            signer_key="judge", role="Juiz de Direito")),
        ("d18", "Fotografia do aviso de recebimento.png", "Documento Diverso", doc_png_photo(1818)),
        ("d19", "Alegações finais.pdf", "Alegações Finais", doc_petition(
            "Alegações finais", "27 de fevereiro de 2018", 6,
            sections=("I – DA PROVA PRODUZIDA", "II – CONCLUSÃO"),
            requests=["a procedência integral dos pedidos formulados na inicial."])),
        ("d20", "Sentença.pdf", "Sentença", doc_court(
            "Sentença", "9 de abril de 2018", 8,
            opening=["Vistos. MARIANA ALBUQUERQUE TAVARES ajuizou ação de indenização em face de "
                     "TRANSPORTADORA RÁPIDO SUL LTDA., alegando, em síntese, que veículo da ré "
                     "colidiu contra sua residência, causando-lhe danos materiais e morais. "
                     "Citada, a ré contestou. Houve réplica. Realizou-se perícia. É o relatório. "
                     "Fundamento e decido."],
            dispositive=["Ante o exposto, JULGO PROCEDENTE o pedido, com resolução do mérito, "
                         "nos termos do artigo 487, I, do CPC, para condenar a requerida a pagar "
                         "à requerente R$ 27.480,00 a título de danos materiais e R$ 20.000,00 "
                         "a título de danos morais, com correção e juros na forma da "
                         "fundamentação. Condeno a requerida nas custas e em honorários de 15% "
                         "do valor da condenação."])),
        ("d21", "Certidão de publicação.txt", "Certidão", doc_text("Certidão de publicação", [
            "TRIBUNAL DE JUSTIÇA DO ESTADO DE SÃO PAULO",
            "Comarca de Indaiatuba – 2ª Vara Cível",
            "",
            "Processo nº {number}",
            "Classe: {class} – Assunto: {subject}",
            "",
            "CERTIDÃO DE PUBLICAÇÃO",
            "",
            "Certifico e dou fé que a r. sentença de fls. 512/519 foi disponibilizada no Diário "
            "da Justiça Eletrônico em 11/04/2018, considerando-se publicada no primeiro dia útil "
            "subsequente (12/04/2018), nos termos do art. 4º, § 3º, da Lei nº 11.419/2006.",
            "",
            "Advogados intimados: {lawyer_a} ({oab_a}); {lawyer_p} ({oab_p}).",
            "Prazo para recurso: 15 dias úteis, com início em 13/04/2018.",
            "",
            "Indaiatuba, 12 de abril de 2018.",
            "{clerk} – Escrevente Técnico Judiciário",
        ])),
        ("d22", "Apelação.pdf", "Apelação", doc_petition(
            "Razões de apelação", "3 de maio de 2018", 9, side="p",
            sections=("I – TEMPESTIVIDADE E PREPARO", "II – SÍNTESE DO PROCESSO",
                      "III – RAZÕES PARA A REFORMA"),
            requests=["o conhecimento e provimento do recurso para julgar improcedente a ação;",
                      "subsidiariamente, a redução do valor fixado a título de danos morais."])),
        ("d23", "Contrarrazões de apelação.pdf", "Contrarrazões", doc_petition(
            "Contrarrazões de apelação", "28 de maio de 2018", 6,
            sections=("I – DO CABIMENTO", "II – DA MANUTENÇÃO DA SENTENÇA"),
            requests=["o desprovimento do recurso, mantendo-se a r. sentença por seus próprios "
                      "fundamentos, com majoração dos honorários (art. 85, § 11, do CPC)."])),
        ("d24", "Acórdão.pdf", "Acórdão", doc_court(
            "Acórdão", "14 de novembro de 2018", 7,
            opening=["ACORDAM, em sessão permanente e virtual da 31ª Câmara de Direito Privado "
                     "do Tribunal de Justiça de São Paulo, proferir a seguinte decisão: Negaram "
                     "provimento ao recurso. V. U., de conformidade com o voto do relator, que "
                     "integra este acórdão.",
                     "EMENTA: RESPONSABILIDADE CIVIL – ACIDENTE DE TRÂNSITO – COLISÃO DE VEÍCULO "
                     "CONTRA IMÓVEL – DANOS MATERIAIS COMPROVADOS POR PERÍCIA – DANO MORAL "
                     "CONFIGURADO – QUANTUM RAZOÁVEL – SENTENÇA MANTIDA – RECURSO DESPROVIDO."],
            dispositive=["Pelo exposto, nega-se provimento ao recurso, majorando-se os honorários "
                         "advocatícios para 17% do valor da condenação."],
            signer="Des. Augusto Ferraz Monteiro", role="Relator")),
    ]
    ctx["bailiff"] = "Wagner Luís Cardoso"
    return ctx, docs


def process_trf1():
    ctx = ctx_trf1()
    docs = [
        ("d1", "Petição inicial.pdf", "Petição Inicial", doc_petition(
            "Petição inicial", "14 de agosto de 2018", 4, pool=FILLER_SOCIAL,
            sections=("I – DOS FATOS", "II – DA MISERABILIDADE"),
            opening=["O autor, com 67 anos de idade, não possui meios de prover a própria "
                     "manutenção nem de tê-la provida por sua família, tendo o pedido "
                     "administrativo de benefício de prestação continuada (NB 703.412.998-1) "
                     "sido indeferido pelo réu sob o fundamento de renda per capita superior ao "
                     "limite legal."],
            requests=["a concessão do benefício assistencial de prestação continuada ao idoso, "
                      "previsto no art. 203, V, da Constituição Federal, desde a DER;",
                      "a realização de estudo socioeconômico;",
                      "a concessão da gratuidade da justiça."])),
        ("d2", "Laudo socioeconômico.pdf", "Laudo Pericial", doc_court(
            "Laudo socioeconômico", "2 de outubro de 2018", 5, pool=FILLER_SOCIAL,
            opening=["Em cumprimento à determinação judicial, foi realizada visita domiciliar à "
                     "residência do autor, situada na Rua Marechal Mallet, s/nº, bairro Santa "
                     "Rosa, em Tabatinga-AM, em 25 de setembro de 2018."],
            signer="Raimunda Nonata Cordeiro", role="Assistente Social – CRESS 15ª Região nº 2.231",
            closing="É o laudo.")),
        ("d3", "Foto da residência.jpg", "Documento Diverso", doc_jpeg_house(333)),
        ("d4", "Contestação do INSS.pdf", "Contestação", doc_petition(
            "Contestação", "19 de outubro de 2018", 4, side="p", pool=FILLER_INSS,
            sections=("I – DO MÉRITO",),
            opening=["O INSS sustenta que a renda do grupo familiar ultrapassa o limite previsto "
                     "no art. 20, § 3º, da Lei nº 8.742/1993, considerando a renda declarada no "
                     "Cadastro Único."],
            requests=["a improcedência do pedido;",
                      "subsidiariamente, a fixação da DIB na data do laudo socioeconômico."])),
        ("d5", "Laudo médico pericial.pdf", "Laudo Pericial", doc_scanned(
            "Laudo médico pericial", "5 de novembro de 2018",
            [(640, 900, 2), (640, 900, 2), (640, 900, 2)],
            "Segue o laudo médico pericial digitalizado, com respostas aos quesitos do juízo e "
            "das partes, elaborado pelo perito Dr. Igor Tavares Menezes, CRM-AM 7.123.")),
        ("d6", "Sentença.pdf", "Sentença", doc_court(
            "Sentença", "11 de dezembro de 2018", 2, pool=FILLER_SOCIAL,
            opening=["Vistos etc. Trata-se de ação proposta por JOSÉ RAIMUNDO DA SILVA BATISTA em "
                     "face do INSTITUTO NACIONAL DO SEGURO SOCIAL – INSS, objetivando a concessão "
                     "de benefício assistencial ao idoso. Dispensado o relatório (art. 38 da Lei "
                     "nº 9.099/1995 c/c art. 1º da Lei nº 10.259/2001). Decido."],
            dispositive=["JULGO PROCEDENTE o pedido para condenar o INSS a implantar o benefício "
                         "assistencial ao idoso em favor do autor, com DIB na DER (02/03/2018), "
                         "e a pagar as parcelas vencidas, corrigidas pelo IPCA-E e acrescidas de "
                         "juros de mora nos termos do art. 1º-F da Lei nº 9.494/1997. Antecipo "
                         "os efeitos da tutela para implantação em 30 dias."],
            role="Juíza Federal")),
    ]
    omit = {"d4": ("sha256", "size"), "d5": ("kind", "mimeType")}
    return ctx, docs, omit


def process_trt2():
    ctx = ctx_trt2()
    docs = [
        ("d1", "Reclamação trabalhista – versão final.pdf", "Petição Inicial", doc_petition(
            "Reclamação trabalhista", "20 de abril de 2023", 4, pool=FILLER_LABOUR,
            sections=("I – DO CONTRATO DE TRABALHO", "II – DA JORNADA E DAS HORAS EXTRAS"),
            requests=["o pagamento de horas extras excedentes da 8ª diária e 44ª semanal, com "
                      "adicional de 50% e reflexos;",
                      "o pagamento do intervalo intrajornada suprimido (art. 71, § 4º, CLT);",
                      "a concessão dos benefícios da justiça gratuita;",
                      "honorários advocatícios sucumbenciais de 15%."])),
        ("d2", "Procuração e declaração de pobreza.pdf", "Procuração",
         doc_power_of_attorney("18 de abril de 2023")),
        ("d3", "Ata de audiência 1ª sessão.pdf", "Ata da Audiência",
         doc_hearing("Ata de audiência", "13 de junho de 2023")),
        ("d4", "Contestação – Comercial Paulista.pdf", "Contestação", doc_petition(
            "Contestação", "13 de junho de 2023", 3, side="p", pool=FILLER_LABOUR,
            sections=("I – DA JORNADA DE TRABALHO", "II – DO BANCO DE HORAS"),
            requests=["a total improcedência dos pedidos;",
                      "a condenação da reclamante em honorários sucumbenciais."])),
        ("d5", "Cálculos de liquidação.pdf", "Cálculos", doc_calc("7 de novembro de 2023")),
    ]
    return ctx, docs


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------

CNJ_DIR = re.compile(r"^\d{7}-\d{2}\.\d{4}\.\d\.\d{2}\.\d{4}$")


def write_process(ctx: dict, docs, omit: dict | None = None) -> dict:
    omit = omit or {}
    pdir = ROOT / ctx["number"]
    if pdir.exists():
        shutil.rmtree(pdir)
    (pdir / "files").mkdir(parents=True)
    entries = []
    seen = set()
    for doc_id, name, kind, build in docs:
        assert doc_id not in seen, doc_id
        seen.add(doc_id)
        rng = random.Random(f"{ctx['number']}/{doc_id}")
        data, ext, mime = build(ctx, rng, doc_id)
        rel = f"files/{doc_id}.{ext}"
        (pdir / rel).write_bytes(data)
        entry = {"id": doc_id, "name": name, "kind": kind, "url": rel, "size": len(data),
                 "sha256": hashlib.sha256(data).hexdigest(), "mimeType": mime}
        for field in omit.get(doc_id, ()):
            del entry[field]
        entries.append(entry)
    meta = {"number": ctx["number"], "court": ctx["court"], "class": ctx["class"],
            "subject": ctx["subject"], "documents": entries}
    (pdir / "process.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n",
                                       encoding="utf-8")
    return meta


def human(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.2f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} B"


def file_size(number: str, doc: dict) -> int:
    return (ROOT / number / doc["url"]).stat().st_size


def write_readme(metas: list[dict], omit_notes: list[str]) -> None:
    rows = []
    grand = 0
    for m in metas:
        sizes = [file_size(m["number"], d) for d in m["documents"]]
        grand += sum(sizes)
        largest = max(sizes) if sizes else 0
        rows.append(f"| `{m['number']}` | {m['court']} | {m['class']} | {m['subject']} | "
                    f"{len(sizes)} | {sum(sizes):,} ({human(sum(sizes))}) | "
                    f"{human(largest) if sizes else '–'} |")
    large = [(m["number"], d) for m in metas for d in m["documents"]
             if file_size(m["number"], d) > LARGE_THRESHOLD]
    large_txt = "; ".join(f"`{n}` {d['id']} “{d['name']}” ({file_size(n, d):,} bytes)"
                          for n, d in large)
    text = f"""# Sample court

A folder-based upstream court source for local development and tests of the
`autos` service. Everything here is **generated** by `generate.py`
(Python 3.11, standard library only, deterministic: fixed seeds and dates, so
re-running it rewrites byte-identical files). All names, documents and ID
numbers are fictional; the CNJ numbers have valid check digits.

## Format

One sub-folder per process, named by its formatted CNJ number, holding
`process.json` and the document files under `files/`:

```
<NNNNNNN-DD.AAAA.J.TR.OOOO>/process.json
<NNNNNNN-DD.AAAA.J.TR.OOOO>/files/d1.pdf ...
```

`process.json` has `number`, `court`, `class`, `subject` and `documents`; each
document has `id` (unique within the process), `name` (human download name,
Portuguese, may differ from the file on disk), `kind`, `url` (relative to the
process folder), `size` (bytes), `sha256` (lowercase hex) and `mimeType`.
`court`, `class`, `subject`, `kind`, `size`, `sha256` and `mimeType` are optional.

## Processes

| CNJ number | Court | Class | Subject | Documents | Total bytes | Largest |
| --- | --- | --- | --- | ---: | ---: | ---: |
{chr(10).join(rows)}

Total: {grand:,} bytes ({human(grand)}).

Edge cases worth knowing:

- Larger than 8 MiB: {large_txt}.
{chr(10).join('- ' + n for n in omit_notes)}
- Non-PDF documents: a PNG photo (TJSP d18), a plain UTF-8 text file (TJSP d21),
  a baseline grayscale JPEG (TRF1 d3).
- Names with accents, spaces, `ª` and an en dash (TRT2 d1, d3, d5; TJSP d6, d12).
- The TJMG process has `"documents": []`.

PDFs are PDF 1.4 with the standard Helvetica/Courier fonts in WinAnsiEncoding
(Portuguese accents render), FlateDecode content streams and, for the
scanned documents and photos, Flate-compressed image XObjects.

## Regenerate / check

```
python3 playground/sample-court/generate.py   # rewrites the process folders and this README
python3 playground/sample-court/check.py      # sizes, sha256, ids, CNJ check digits
```
"""
    (ROOT / "README.md").write_text(text, encoding="utf-8")


def main() -> int:
    tjsp_ctx, tjsp_docs = process_tjsp()
    trf1_ctx, trf1_docs, trf1_omit = process_trf1()
    trt2_ctx, trt2_docs = process_trt2()
    tjmg_ctx = ctx_tjmg()
    wanted = {c["number"] for c in (tjsp_ctx, trf1_ctx, trt2_ctx, tjmg_ctx)}
    # remove stale process folders from earlier versions of this script
    for p in sorted(ROOT.iterdir()):
        if p.is_dir() and CNJ_DIR.match(p.name) and p.name not in wanted:
            shutil.rmtree(p)
    metas = [
        write_process(tjsp_ctx, tjsp_docs),
        write_process(trf1_ctx, trf1_docs, trf1_omit),
        write_process(trt2_ctx, trt2_docs),
        write_process(tjmg_ctx, []),
    ]
    omit_notes = [f"TRF1 {d}: omits {' and '.join('`%s`' % f for f in fields)}."
                  for d, fields in trf1_omit.items()]
    write_readme(metas, omit_notes)

    # sanity checks
    big = [(m["number"], d["id"], file_size(m["number"], d)) for m in metas
           for d in m["documents"] if file_size(m["number"], d) > LARGE_THRESHOLD]
    assert len(big) == 1, big
    assert big[0][2] < 10 * 1024 * 1024, big
    total = sum(f.stat().st_size for f in ROOT.rglob("*") if f.is_file())
    assert total < FOLDER_LIMIT, total
    for m in metas:
        n = len(m["documents"])
        s = sum(file_size(m["number"], d) for d in m["documents"])
        print(f"{m['number']}  {m.get('court', '-'):5}  {n:2} documents  {s:>10,} bytes")
    print(f"large document: {big[0]}; folder total {total:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
