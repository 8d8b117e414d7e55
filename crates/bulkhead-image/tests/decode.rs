//! Decoding against PIL (`transformers.image_utils.load_image`): exact for lossless formats, within a stated
//! tolerance for JPEG and lossy WebP; every EXIF orientation; and the refusals of bad input.

mod common;

use bulkhead_image::{decode, ImageError, ImageFormat, Limits, RgbImage};
use common::{byte_diff, image, read, reference, sha256};

const LOSSY: [&str; 2] = [".jpg", ".webp"];

fn is_lossy(name: &str) -> bool {
    LOSSY.iter().any(|s| name.ends_with(s)) && name != "exif_6.webp"
}

/// The pixels of `image` inside a `width` x `height` window at (x, y).
fn window(image: &RgbImage, x: u32, y: u32, width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for row in y..y + height {
        for col in x..x + width {
            out.extend_from_slice(&image.pixel(col, row).expect("window inside the image"));
        }
    }
    out
}

#[test]
fn lossless_images_decode_exactly_as_pil_and_lossy_ones_closely() {
    let reference = reference();
    let images = reference["images"].as_object().unwrap();
    println!("| image | size | exact | max diff | mean diff | differing |");
    println!("|---|---|---|---|---|---|");
    for (name, expected) in images {
        let decoded = image(name);
        let size = (u64::from(decoded.width()), u64::from(decoded.height()));
        assert_eq!(size, (expected["width"].as_u64().unwrap(), expected["height"].as_u64().unwrap()), "{name}");
        let exact = sha256(decoded.as_raw()) == expected["rgb_sha256"].as_str().unwrap();
        // Measured where the fixture keeps PIL's pixels (small images, a crop of photo.jpg/webp).
        let mut diff = None;
        if let Some(png) = expected["decoded_png"].as_str() {
            let pil = image(png);
            let (x, y) = match expected.get("decoded_crop") {
                Some(crop) => (crop["x"].as_u64().unwrap() as u32, crop["y"].as_u64().unwrap() as u32),
                None => (0, 0),
            };
            let ours = window(&decoded, x, y, pil.width(), pil.height());
            diff = Some(byte_diff(&ours, pil.as_raw()));
        }
        let (max, mean, share) = diff.unwrap_or((0, 0.0, 0.0));
        let shown = match diff {
            Some(_) => format!("{max} | {mean:.3} | {:.2}%", share * 100.0),
            None => "not stored | | ".to_string(),
        };
        println!("| {name} | {}x{} | {exact} | {shown} |", size.0, size.1);
        if !is_lossy(name) {
            assert!(exact, "{name}: a lossless image must decode exactly as PIL does");
        } else if diff.is_some() {
            // Different IDCT and chroma upsampling than libjpeg-turbo: small, sparse differences. (JPEGs whose
            // pixels are not stored are compared through the processors' outputs in tests/preprocess.rs.)
            assert!(max <= 24 && mean < 1.0, "{name}: max {max}, mean {mean}");
        }
    }
}

#[test]
fn every_exif_orientation_gives_the_upright_image() {
    // The upright pattern: red top-left, green top-right, blue bottom-left, white bottom-right, 48x32.
    let quadrant = [(12u32, 12u32), (36, 12), (12, 24), (36, 24)];
    let colours = [[220u8, 30, 30], [30, 200, 30], [30, 30, 220], [240, 240, 240]];
    let names: Vec<String> =
        (1..=8).map(|o| format!("exif_{o}.jpg")).chain(["exif_6.png".into(), "exif_6.webp".into()]).collect();
    for name in &names {
        let decoded = decode(&read(name), Limits::default()).unwrap();
        let expected_orientation = name[5..6].parse::<u8>().unwrap();
        assert_eq!(decoded.orientation, expected_orientation, "{name}");
        let img = &decoded.image;
        assert_eq!((img.width(), img.height()), (48, 32), "{name}");
        for (&(x, y), colour) in quadrant.iter().zip(colours) {
            let got = img.pixel(x, y).unwrap();
            let far = got.iter().zip(colour).any(|(&g, c)| g.abs_diff(c) > 12);
            assert!(!far, "{name}: pixel ({x}, {y}) is {got:?}, expected about {colour:?}");
        }
        // The black marker stays in the top-left corner.
        assert!(img.pixel(2, 1).unwrap().iter().all(|&v| v < 40), "{name}: marker not top-left");
        let pil = image(&format!("decoded/{name}.png"));
        let (max, _, _) = byte_diff(img.as_raw(), pil.as_raw());
        assert!(max <= 16, "{name}: {max} levels from PIL");
    }
}

#[test]
fn formats_are_sniffed_from_bytes() {
    for (name, format) in
        [("photo.png", ImageFormat::Png), ("photo.jpg", ImageFormat::Jpeg), ("photo.webp", ImageFormat::WebP)]
    {
        assert_eq!(decode(&read(name), Limits::default()).unwrap().format, format, "{name}");
    }
    let tiny = image("tiny.png");
    assert_eq!((tiny.width(), tiny.height(), tiny.pixel(0, 0)), (1, 1, Some([12, 200, 99])));
}

fn error(bytes: &[u8]) -> ImageError {
    match decode(bytes, Limits::default()) {
        Ok(decoded) => panic!("bad input decoded to a {}x{} image", decoded.image.width(), decoded.image.height()),
        Err(e) => e,
    }
}

/// A PNG signature + IHDR chunk (valid CRC) declaring `width` x `height` RGB, then a tiny IDAT and IEND.
pub fn png_header(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // zlib stream of a few zero bytes: a bomb's IDAT is tiny and would inflate to width*height*3.
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn bad_input_gets_a_typed_error_naming_the_problem() {
    assert_eq!(error(b""), ImageError::Empty);

    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    assert!(matches!(error(&random), ImageError::NotAnImage { .. }));
    let svg = error(b"<svg xmlns='http://www.w3.org/2000/svg'/>");
    assert!(svg.to_string().contains("SVG"), "{svg}");
    assert!(matches!(error(b"II*\0\x08\0\0\0"), ImageError::UnsupportedFormat { format: "TIFF" }));

    for name in ["photo.png", "photo.jpg", "photo.webp", "large.jpg"] {
        let bytes = read(name);
        // Cut inside the pixel data or the header. (A PNG cut inside its final IEND chunk still holds every
        // pixel and decodes, as it does with PIL.)
        for cut in [bytes.len() / 2, bytes.len() * 9 / 10, 40, 9] {
            let err = error(&bytes[..cut]);
            assert!(
                matches!(err, ImageError::Truncated { .. } | ImageError::Corrupt { .. }),
                "{name} cut at {cut}: {err:?}"
            );
            if cut == bytes.len() / 2 {
                assert!(matches!(err, ImageError::Truncated { .. }), "{name} cut in half: {err:?}");
            }
        }
    }

    let bomb = error(&png_header(50_000, 50_000));
    assert!(matches!(bomb, ImageError::TooManyPixels { width: 50_000, height: 50_000, .. }), "{bomb:?}");
    assert!(bomb.to_string().contains("--max-image-pixels"), "{bomb}");
    assert!(matches!(error(&png_header(0, 10)), ImageError::ZeroSize { .. }));

    // A JPEG whose frame header declares 65500x65500.
    let mut jpeg = read("photo.jpg");
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline JPEG");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xDC, 0xFF, 0xDC]);
    assert!(matches!(error(&jpeg), ImageError::TooManyPixels { width: 65500, height: 65500, .. }));

    let limits = Limits { max_pixels: 100_000, ..Limits::default() };
    let refused = decode(&read("photo.png"), limits).unwrap_err();
    assert!(matches!(refused, ImageError::TooManyPixels { width: 333, height: 517, max_pixels: 100_000, .. }));
    let small = Limits { max_bytes: 1000, ..Limits::default() };
    assert!(matches!(decode(&read("photo.png"), small), Err(ImageError::TooManyBytes { max_bytes: 1000, .. })));
}

#[test]
fn damaged_bytes_never_panic() {
    // Deterministic corruption of every format: flipped bytes and cut-offs must give Ok or a typed error.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for name in ["photo.png", "photo.jpg", "photo.webp", "palette.png", "rgb16.png", "exif_6.jpg", "exif_6.webp"] {
        let bytes = read(name);
        for _ in 0..60 {
            let mut damaged = bytes.clone();
            for _ in 0..1 + next() % 8 {
                let at = (next() % damaged.len() as u64) as usize;
                damaged[at] ^= (next() % 255 + 1) as u8;
            }
            let cut = (next() % damaged.len() as u64) as usize + 1;
            let _ = decode(&damaged, Limits::default());
            let _ = decode(&damaged[..cut], Limits::default());
        }
    }
}
