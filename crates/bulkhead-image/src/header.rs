//! Format sniffing and header-only size reading, done before any decoder runs.
//!
//! The declared width and height are read straight from the header bytes (PNG IHDR, JPEG SOFn, WebP
//! VP8/VP8L/VP8X, GIF logical screen, BMP info header), so a decompression bomb is refused without allocating
//! anything proportional to its declared size.

/// An image format recognised from the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// PNG.
    Png,
    /// JPEG (JFIF/EXIF).
    Jpeg,
    /// WebP (lossy, lossless or extended).
    WebP,
    /// GIF (the first frame is decoded).
    Gif,
    /// Windows BMP.
    Bmp,
}

impl ImageFormat {
    /// The format's usual name.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Png => "PNG",
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::WebP => "WebP",
            ImageFormat::Gif => "GIF",
            ImageFormat::Bmp => "BMP",
        }
    }
}

/// What the first bytes are.
pub(crate) enum Sniffed {
    /// A format decoded here.
    Supported(ImageFormat),
    /// A recognised image format that is not decoded here.
    Unsupported(&'static str),
    /// Something else, described for the error message.
    Other(String),
}

/// Recognises the format from the magic bytes (never from a file name).
pub(crate) fn sniff(bytes: &[u8]) -> Sniffed {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Sniffed::Supported(ImageFormat::Png);
    }
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Sniffed::Supported(ImageFormat::Jpeg);
    }
    // A RIFF file cut before its form type may still be a WebP; the header reader then reports the truncation.
    if starts(b"RIFF") && bytes.len() >= 8 && b"WEBP".starts_with(&bytes[8..bytes.len().min(12)]) {
        return Sniffed::Supported(ImageFormat::WebP);
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Sniffed::Supported(ImageFormat::Gif);
    }
    if starts(b"BM") && bytes.len() >= 26 {
        return Sniffed::Supported(ImageFormat::Bmp);
    }
    if starts(b"II*\0") || starts(b"MM\0*") {
        return Sniffed::Unsupported("TIFF");
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        let brand = &bytes[8..12];
        if brand == b"avif" || brand == b"avis" {
            return Sniffed::Unsupported("AVIF");
        }
        if [&b"heic"[..], b"heix", b"mif1", b"msf1", b"hevc"].contains(&brand) {
            return Sniffed::Unsupported("HEIC/HEIF");
        }
    }
    if starts(&[0xFF, 0x0A]) || starts(b"\0\0\0\x0cJXL \r\n\x87\n") {
        return Sniffed::Unsupported("JPEG XL");
    }
    if starts(b"8BPS") {
        return Sniffed::Unsupported("Photoshop (PSD)");
    }
    if starts(&[0, 0, 1, 0]) {
        return Sniffed::Unsupported("ICO");
    }
    Sniffed::Other(describe(bytes))
}

/// A short description of non-image bytes for the error message.
fn describe(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(16)];
    let text = String::from_utf8_lossy(head);
    let trimmed = text.trim_start();
    let kind = if trimmed.starts_with("<svg") || trimmed.starts_with("<?xml") {
        Some("SVG/XML text (vector images are not decoded; rasterise it to PNG)")
    } else if trimmed.starts_with('<') {
        Some("HTML or XML text")
    } else if trimmed.starts_with('{') || trimmed.starts_with('[') {
        Some("JSON text")
    } else if bytes.starts_with(b"%PDF") {
        Some("a PDF document")
    } else if bytes.starts_with(b"data:") {
        Some("a data URL (send the decoded bytes, or the part after the comma as base64)")
    } else {
        None
    };
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    match kind {
        Some(kind) => format!("{} bytes that look like {kind}", bytes.len()),
        None => format!("{} bytes starting with {}", bytes.len(), hex.join(" ")),
    }
}

/// The header could not be read (too short or malformed).
pub(crate) enum HeaderError {
    /// The data ends inside the header.
    Truncated(&'static str),
    /// The header is malformed.
    Malformed(&'static str),
}

/// The declared (width, height) from the header alone, before EXIF orientation.
pub(crate) fn dimensions(format: ImageFormat, b: &[u8]) -> Result<(u32, u32), HeaderError> {
    match format {
        ImageFormat::Png => {
            let ihdr = b.get(8..24).ok_or(HeaderError::Truncated("the data ends inside the PNG header"))?;
            if &ihdr[4..8] != b"IHDR" {
                return Err(HeaderError::Malformed("the first PNG chunk is not IHDR"));
            }
            Ok((be32(&ihdr[8..12]), be32(&ihdr[12..16])))
        }
        ImageFormat::Gif => {
            let s = b.get(6..10).ok_or(HeaderError::Truncated("the data ends inside the GIF header"))?;
            Ok((u32::from(le16(&s[0..2])), u32::from(le16(&s[2..4]))))
        }
        ImageFormat::Bmp => bmp_dimensions(b),
        ImageFormat::WebP => webp_dimensions(b),
        ImageFormat::Jpeg => jpeg_dimensions(b),
    }
}

fn bmp_dimensions(b: &[u8]) -> Result<(u32, u32), HeaderError> {
    let header_size = b.get(14..18).map(le32).ok_or(HeaderError::Truncated("the data ends inside the BMP header"))?;
    if header_size == 12 {
        let s = b.get(18..22).ok_or(HeaderError::Truncated("the data ends inside the BMP header"))?;
        return Ok((u32::from(le16(&s[0..2])), u32::from(le16(&s[2..4]))));
    }
    let s = b.get(18..26).ok_or(HeaderError::Truncated("the data ends inside the BMP header"))?;
    let width = le32(&s[0..4]) as i32;
    let height = le32(&s[4..8]) as i32;
    if width < 0 {
        return Err(HeaderError::Malformed("the BMP width is negative"));
    }
    // A negative height marks a top-down bitmap; the size is its magnitude.
    Ok((width.unsigned_abs(), height.unsigned_abs()))
}

fn webp_dimensions(b: &[u8]) -> Result<(u32, u32), HeaderError> {
    let truncated = HeaderError::Truncated("the data ends inside the WebP header");
    let chunk = b.get(12..16).ok_or(HeaderError::Truncated("the data ends inside the WebP header"))?;
    match chunk {
        b"VP8X" => {
            let s = b.get(24..30).ok_or(truncated)?;
            let w = u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16;
            let h = u32::from(s[3]) | u32::from(s[4]) << 8 | u32::from(s[5]) << 16;
            Ok((w + 1, h + 1))
        }
        b"VP8L" => {
            let s = b.get(20..25).ok_or(truncated)?;
            if s[0] != 0x2F {
                return Err(HeaderError::Malformed("the WebP lossless signature is missing"));
            }
            let bits = le32(&s[1..5]);
            Ok(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        b"VP8 " => {
            let s = b.get(20..30).ok_or(truncated)?;
            if s[3..6] != [0x9D, 0x01, 0x2A] {
                return Err(HeaderError::Malformed("the WebP lossy start code is missing"));
            }
            Ok((u32::from(le16(&s[6..8]) & 0x3FFF), u32::from(le16(&s[8..10]) & 0x3FFF)))
        }
        _ => Err(HeaderError::Malformed("the first WebP chunk is none of VP8, VP8L, VP8X")),
    }
}

fn jpeg_dimensions(b: &[u8]) -> Result<(u32, u32), HeaderError> {
    let truncated = || HeaderError::Truncated("the data ends before the JPEG frame header");
    let mut i = 2;
    loop {
        // Markers may be preceded by fill bytes 0xFF.
        while b.get(i) == Some(&0xFF) && b.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (&ff, &marker) = (b.get(i).ok_or_else(truncated)?, b.get(i + 1).ok_or_else(truncated)?);
        if ff != 0xFF {
            return Err(HeaderError::Malformed("a JPEG marker was expected"));
        }
        i += 2;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            0xD9 | 0xDA => return Err(HeaderError::Malformed("the JPEG has no frame header before its scan")),
            _ => {}
        }
        let len = usize::from(b.get(i..i + 2).map(|s| u16::from_be_bytes([s[0], s[1]])).ok_or_else(truncated)?);
        if len < 2 {
            return Err(HeaderError::Malformed("a JPEG segment length is below 2"));
        }
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            let s = b.get(i + 3..i + 7).ok_or_else(truncated)?;
            let height = u32::from(u16::from_be_bytes([s[0], s[1]]));
            let width = u32::from(u16::from_be_bytes([s[2], s[3]]));
            return Ok((width, height));
        }
        i += len;
    }
}

fn be32(s: &[u8]) -> u32 {
    u32::from_be_bytes([s[0], s[1], s[2], s[3]])
}

fn le32(s: &[u8]) -> u32 {
    u32::from_le_bytes([s[0], s[1], s[2], s[3]])
}

fn le16(s: &[u8]) -> u16 {
    u16::from_le_bytes([s[0], s[1]])
}

/// Whether a JPEG's last scan is followed by its end-of-image marker. Decoders fill a cut-off scan with grey
/// instead of failing; PIL refuses such files ("image file is truncated"), and so does this crate. Markers cannot
/// occur inside entropy-coded data (0xFF is stuffed as FF 00), so the last SOS (FF DA) starts the last scan even
/// when an embedded EXIF thumbnail has its own markers earlier in the file.
pub(crate) fn jpeg_has_end_marker(b: &[u8]) -> bool {
    let last_sos = b.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(at) => b[at + 2..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// Whether a WebP file is shorter than its RIFF header says (decoders report a cut-off file as a corrupt
/// bitstream; the length check names the real problem).
pub(crate) fn webp_is_truncated(b: &[u8]) -> bool {
    b.get(4..8).is_some_and(|s| (le32(s) as usize).saturating_add(8) > b.len())
}

/// How transformers' processors treat a "transparent colour" that PIL keeps after `convert("RGB")`.
///
/// PIL records a PNG `tRNS` key (grey or RGB at 8 bits, or a palette whose `tRNS` makes exactly one index fully
/// transparent and every other fully opaque) and a GIF transparency index as `info["transparency"]`;
/// `convert("RGB")` keeps it as a colour, and transformers' `convert_to_rgb` then composites the image on white,
/// turning every pixel of that colour white. A real alpha channel is simply dropped by `convert("RGB")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransparentKey {
    /// No transparent colour: alpha, if any, is dropped.
    None,
    /// A key colour: the colour of the fully transparent pixels; every pixel of that colour becomes white.
    ColourOfTransparentPixels,
    /// GIF: the transparent pixels become white (the decoder does not say which colour the index had).
    TransparentPixels,
}

/// The transparent-colour rule of an image (see [`TransparentKey`]).
pub(crate) fn transparent_key(format: ImageFormat, b: &[u8]) -> TransparentKey {
    match format {
        ImageFormat::Gif => TransparentKey::TransparentPixels,
        ImageFormat::Png => png_transparent_key(b),
        _ => TransparentKey::None,
    }
}

fn png_transparent_key(b: &[u8]) -> TransparentKey {
    let (Some(&depth), Some(&colour_type)) = (b.get(24), b.get(25)) else {
        return TransparentKey::None;
    };
    let mut at = 8usize;
    while let Some(head) = b.get(at..at + 8) {
        let len = be32(&head[0..4]) as usize;
        let kind = &head[4..8];
        if kind == b"IDAT" || kind == b"IEND" {
            break;
        }
        if kind == b"tRNS" {
            let Some(data) = b.get(at + 8..at + 8 + len) else { break };
            let simple_palette =
                data.iter().filter(|&&a| a == 0).count() == 1 && data.iter().all(|&a| a == 0 || a == 255);
            return match (colour_type, depth) {
                (0 | 2, 8) => TransparentKey::ColourOfTransparentPixels,
                (3, _) if simple_palette => TransparentKey::ColourOfTransparentPixels,
                _ => TransparentKey::None,
            };
        }
        at = at.saturating_add(12).saturating_add(len);
    }
    TransparentKey::None
}
