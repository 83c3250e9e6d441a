//! `[preprocess] image`: JPEG / PNG / WebP bytes become the model's image tensor,
//! as PIL + numpy would make it: `Image.open(…).convert("RGB")` (then
//! `.convert("L")` for gray), the resize (`Image.BILINEAR`), then
//! `(pixels * scale - mean) / std` in float32, channels and layout as configured.
//!
//! Decompression bombs: the header's width × height is checked against
//! `max_pixels` before anything is decoded, and the decoder itself runs under the
//! `image` crate's `Limits` (sides and allocation), so a header that lies cannot
//! make it allocate more.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{GrayImage, ImageFormat, ImageReader, Limits, RgbImage};

use super::PreprocessError;
use crate::model_config::{ChannelOrder, ImageConfig, ImageDtype, ImageLayout, ResizeMode};
use crate::tensor::{Tensor, TensorData};

/// Decoded pixels of one image at the model's size: `channels` interleaved bytes
/// per pixel, row by row (`height` × `width` × `channels`).
struct Pixels {
    data: Vec<u8>,
    channels: usize,
    /// The columns the image fills, from the left; the others are padding that is
    /// 0 in the tensor (`resize = "fit_height"`). `width` for the other modes.
    filled_width: usize,
}

/// The images of one request (BYTES, one encoded image per element) as the
/// model's tensor: `[n, c, h, w]` or `[n, h, w, c]`.
/// Most bytes the images of one request may decode to, all together (the tensor the
/// model gets).
pub const MAX_DECODED_BYTES: usize = 1 << 30;

pub fn images_to_tensor(
    input: &str,
    images: &[Vec<u8>],
    config: &ImageConfig,
) -> Result<Tensor, PreprocessError> {
    let (w, h) = (config.width as usize, config.height as usize);
    let c = config.channels.count();
    let per_image = w * h * c;
    let shape = match config.layout {
        ImageLayout::Nchw => vec![images.len(), c, h, w],
        ImageLayout::Nhwc => vec![images.len(), h, w, c],
    };
    // Tiny images (a 1 x 1 PNG is 67 bytes) each become the model's size: what
    // they decode to is bounded before any is decoded.
    let element = match config.dtype {
        ImageDtype::Uint8 => 1,
        ImageDtype::Fp32 => 4,
    };
    let decoded = images
        .len()
        .saturating_mul(per_image)
        .saturating_mul(element);
    if decoded > MAX_DECODED_BYTES {
        return Err(PreprocessError::TooLarge(format!(
            "input {input:?}: {} images of {w} x {h} x {c} would decode to {decoded} bytes, more \
             than the {} MiB one request may take; send them in smaller requests",
            images.len(),
            MAX_DECODED_BYTES >> 20
        )));
    }
    let mut floats: Vec<f32> = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    for (i, encoded) in images.iter().enumerate() {
        if let Some(stop) = super::stopped() {
            return Err(stop);
        }
        let pixels = decode_and_resize(encoded, config).map_err(|m| {
            PreprocessError::InvalidInput(format!("input {input:?} image {i}: {m}"))
        })?;
        let ordered = in_layout(&pixels, config);
        match config.dtype {
            ImageDtype::Uint8 => bytes.extend_from_slice(&ordered),
            ImageDtype::Fp32 => {
                floats.reserve(per_image);
                normalize_into(&ordered, pixels.filled_width, config, &mut floats);
            }
        }
    }
    let data = match config.dtype {
        ImageDtype::Uint8 => TensorData::U8(bytes),
        ImageDtype::Fp32 => TensorData::F32(floats),
    };
    Tensor::new(shape, data).map_err(|e| PreprocessError::Internal(e.to_string()))
}

/// What walking a JPEG's segments found: how many bytes of entropy-coded data its
/// scans hold, and whether they are Huffman coded (baseline, extended, progressive).
#[derive(Debug, PartialEq)]
struct JpegScans {
    bytes: usize,
    huffman: bool,
}

/// Walks JPEG bytes segment by segment, and through the entropy-coded data of
/// every scan, to the end-of-image marker (FFD9). `None` when the data ends before
/// it: the file is truncated. libjpeg (so PIL) refuses those too, even when only
/// the marker is missing; bytes after the marker are ignored, as PIL ignores them.
fn jpeg_scans(data: &[u8]) -> Option<JpegScans> {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    if data.len() < 2 || data[0] != 0xFF || data[1] != SOI {
        return None;
    }
    let mut scans = JpegScans {
        bytes: 0,
        huffman: false,
    };
    let mut at = 2;
    loop {
        // A marker: 0xFF, any number of 0xFF fill bytes, then its code. Stray
        // bytes where a marker should be are skipped, as libjpeg skips them.
        at += data[at..].iter().position(|&b| b == 0xFF)?;
        while data.get(at) == Some(&0xFF) {
            at += 1;
        }
        let code = *data.get(at)?;
        at += 1;
        match code {
            EOI => return Some(scans),
            // Markers without a length: TEM and the restart markers.
            0x01 | 0xD0..=0xD7 => continue,
            // Start of frame, Huffman coded: baseline, extended, progressive.
            0xC0..=0xC2 => scans.huffman = true,
            _ => {}
        }
        let length = data.get(at..at + 2)?;
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        if length < 2 || at + length > data.len() {
            return None;
        }
        at += length;
        if code == SOS {
            // Entropy-coded data: it runs to the next 0xFF that is neither a
            // stuffed 0xFF00 nor a restart marker (or fill bytes before one).
            let scan_start = at;
            loop {
                at += data[at..].iter().position(|&b| b == 0xFF)?;
                let mut next = at + 1;
                while data.get(next) == Some(&0xFF) {
                    next += 1;
                }
                match data.get(next)? {
                    0x00 | 0xD0..=0xD7 => at = next + 1,
                    _ => break,
                }
            }
            scans.bytes += at - scan_start;
        }
    }
}

/// The fewest bytes of Huffman-coded scan data a JPEG of `pixels` pixels may have:
/// every 8 x 8 block of its full-resolution component costs at least one bit (its
/// DC code), so `pixels / 512` bytes; a quarter of that leaves room for padding
/// and odd encoders. A file with less (a few hundred bytes whose header claims
/// 5000 x 5000) is data that ends early: the decoder would make up the rest.
fn jpeg_min_scan_bytes(pixels: u64) -> u64 {
    pixels / 2048
}

/// Decodes one image and brings it to the model's size and channels.
fn decode_and_resize(encoded: &[u8], config: &ImageConfig) -> Result<Pixels, String> {
    let reader = |limits: Option<Limits>| -> Result<ImageReader<Cursor<&[u8]>>, String> {
        let mut reader = ImageReader::new(Cursor::new(encoded))
            .with_guessed_format()
            .map_err(|e| e.to_string())?;
        match reader.format() {
            Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) => {}
            _ => {
                return Err(format!(
                    "{} bytes that are not a JPEG, PNG or WebP image",
                    encoded.len()
                ))
            }
        }
        if let Some(limits) = limits {
            reader.limits(limits);
        }
        Ok(reader)
    };
    let max_pixels = config.max_pixels();
    let (width, height) = reader(None)?
        .into_dimensions()
        .map_err(|e| format!("cannot read the image header: {e}"))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(format!(
            "the image is {width} x {height} = {pixels} pixels, more than the {max_pixels} \
             this model takes (preprocess.image.max_pixels)"
        ));
    }
    if config.resize == ResizeMode::Crop {
        // Crop scales the whole image until its short side fits: a thin image
        // (1 x 1,000,000) would become 32 x 32,000,000 pixels before its centre is
        // cut out. That image is held to max_pixels too.
        let (nw, nh) = crop_scaled_size(config, f64::from(width), f64::from(height));
        let scaled = u64::from(nw) * u64::from(nh);
        if scaled > max_pixels {
            return Err(format!(
                "the image is {width} x {height}: scaled for resize = \"crop\" it would be \
                 {nw} x {nh} = {scaled} pixels, more than the {max_pixels} this model takes \
                 (preprocess.image.max_pixels); its sides are too far from the model's \
                 proportions"
            ));
        }
    }
    if reader(None)?.format() == Some(ImageFormat::Jpeg) {
        // zune-jpeg (in the `image` crate's lenient mode) fills what is missing
        // with grey and calls it an image; PIL refuses a file cut short ("image
        // file is truncated"). Checked before decoding, so a short file whose
        // header claims a large image costs no decoding either.
        let Some(scans) = jpeg_scans(encoded) else {
            return Err(
                "cannot decode the image: truncated (the JPEG data ends before \
                        its end-of-image marker)"
                    .into(),
            );
        };
        let least = jpeg_min_scan_bytes(pixels);
        if scans.huffman && (scans.bytes as u64) < least {
            return Err(format!(
                "cannot decode the image: truncated (its {} bytes of JPEG scan data \
                 cannot hold a {width} x {height} image, which takes at least {least})",
                scans.bytes
            ));
        }
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // RGBA of 16-bit channels is the largest buffer a decoder makes, plus room
    // for its own working memory.
    limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    let decoded = reader(Some(limits))?
        .decode()
        .map_err(|e| format!("cannot decode the image: {e}"))?;
    let rgb: RgbImage = decoded.to_rgb8();
    drop(decoded);
    match config.channels {
        ChannelOrder::Gray => {
            let gray = GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
                let [r, g, b] = rgb.get_pixel(x, y).0;
                // PIL's RGB to L (Convert.c): ITU-R 601-2 luma in 16-bit fixed point.
                let l =
                    (u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000)
                        >> 16;
                image::Luma([l as u8])
            });
            let (fitted, filled_width) = fit(&gray, config);
            Ok(Pixels {
                data: fitted.into_raw(),
                channels: 1,
                filled_width,
            })
        }
        ChannelOrder::Rgb | ChannelOrder::Bgr => {
            let (fitted, filled_width) = fit(&rgb, config);
            Ok(Pixels {
                data: fitted.into_raw(),
                channels: 3,
                filled_width,
            })
        }
    }
}

/// The size `resize = "crop"` scales an image of `sw` x `sh` to before it cuts out
/// the model's size from the centre: the short side (relative to the model's
/// proportions) fits.
fn crop_scaled_size(config: &ImageConfig, sw: f64, sh: f64) -> (u32, u32) {
    let (w, h) = (config.width, config.height);
    let s = (f64::from(w) / sw).max(f64::from(h) / sh);
    (round_half_up(sw * s).max(w), round_half_up(sh * s).max(h))
}

/// `floor(x + 0.5)`: the rounding the reference script uses too.
fn round_half_up(x: f64) -> u32 {
    (x + 0.5).floor().max(1.0) as u32
}

/// Resizes (bilinear) to the model's size as `config.resize` says; also gives the
/// columns the image fills from the left (see [`Pixels::filled_width`]).
fn fit<P>(
    img: &image::ImageBuffer<P, Vec<u8>>,
    config: &ImageConfig,
) -> (image::ImageBuffer<P, Vec<u8>>, usize)
where
    P: image::Pixel<Subpixel = u8> + 'static,
{
    let (w, h) = (config.width, config.height);
    let (sw, sh) = (f64::from(img.width()), f64::from(img.height()));
    match config.resize {
        ResizeMode::Stretch => (
            image::imageops::resize(img, w, h, FilterType::Triangle),
            w as usize,
        ),
        ResizeMode::FitPad => {
            let s = (f64::from(w) / sw).min(f64::from(h) / sh);
            let (nw, nh) = (round_half_up(sw * s).min(w), round_half_up(sh * s).min(h));
            let resized = image::imageops::resize(img, nw, nh, FilterType::Triangle);
            let mut canvas = image::ImageBuffer::<P, Vec<u8>>::new(w, h);
            image::imageops::replace(
                &mut canvas,
                &resized,
                i64::from((w - nw) / 2),
                i64::from((h - nh) / 2),
            );
            (canvas, w as usize)
        }
        ResizeMode::Crop => {
            let (nw, nh) = crop_scaled_size(config, sw, sh);
            let resized = image::imageops::resize(img, nw, nh, FilterType::Triangle);
            let cropped =
                image::imageops::crop_imm(&resized, (nw - w) / 2, (nh - h) / 2, w, h).to_image();
            (cropped, w as usize)
        }
        ResizeMode::FitHeight => {
            // rapidocr: `min(ceil(h * w0 / h0), w)`, computed as Python does, in f64.
            let nw = (f64::from(h) * (sw / sh)).ceil().clamp(1.0, f64::from(w)) as u32;
            let resized = image::imageops::resize(img, nw, h, FilterType::Triangle);
            let mut canvas = image::ImageBuffer::<P, Vec<u8>>::new(w, h);
            image::imageops::replace(&mut canvas, &resized, 0, 0);
            (canvas, nw as usize)
        }
    }
}

/// The pixels in the tensor's channel order and layout (still bytes).
fn in_layout(pixels: &Pixels, config: &ImageConfig) -> Vec<u8> {
    let c = pixels.channels;
    let hw = pixels.data.len() / c;
    let channel = |k: usize| match config.channels {
        ChannelOrder::Bgr => c - 1 - k,
        ChannelOrder::Rgb | ChannelOrder::Gray => k,
    };
    let mut out = Vec::with_capacity(pixels.data.len());
    match config.layout {
        ImageLayout::Nhwc => {
            for p in pixels.data.chunks_exact(c) {
                out.extend((0..c).map(|k| p[channel(k)]));
            }
        }
        ImageLayout::Nchw => {
            for k in 0..c {
                let src = channel(k);
                out.extend((0..hw).map(|i| pixels.data[i * c + src]));
            }
        }
    }
    out
}

/// `(pixel * scale - mean[c]) / std[c]` in float32, in numpy's order of operations;
/// columns from `filled_width` on (padding) are 0.
fn normalize_into(ordered: &[u8], filled_width: usize, config: &ImageConfig, out: &mut Vec<f32>) {
    let c = config.channels.count();
    let width = config.width as usize;
    let scale = config.scale();
    let mean = |k: usize| config.mean.get(k).copied().unwrap_or(0.0);
    let std = |k: usize| config.std.get(k).copied().unwrap_or(1.0);
    let hw = ordered.len() / c;
    for (i, &p) in ordered.iter().enumerate() {
        let (k, x) = match config.layout {
            ImageLayout::Nchw => (i / hw, (i % hw) % width),
            ImageLayout::Nhwc => (i % c, (i / c) % width),
        };
        out.push(if x < filled_width {
            (f32::from(p) * scale - mean(k)) / std(k)
        } else {
            0.0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(resize: &str) -> ImageConfig {
        toml::from_str(&format!(
            "width = 32\nheight = 24\nchannels = \"gray\"\nresize = \"{resize}\"\n"
        ))
        .unwrap()
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = GrayImage::from_pixel(width, height, image::Luma([128]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// A cut JPEG was decoded with grey where its data was missing (a 600-byte
    /// file whose header claims 5000 x 5000 took 13 s); PIL refuses it as
    /// truncated, and so does this now, before decoding.
    #[test]
    fn a_truncated_jpeg_is_refused() {
        let photo = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/preprocess/images/photo.jpg"
        ))
        .unwrap();
        let config = config("stretch");
        for cut in [photo.len() / 2, photo.len() * 9 / 10, photo.len() - 2] {
            let e = decode_and_resize(&photo[..cut], &config).err().unwrap();
            assert!(
                e.contains("cannot decode the image: truncated"),
                "{cut}: {e}"
            );
        }
        // A short file whose header claims 5000 x 5000 is refused before decoding,
        // cut or whole (its scans then end at its end-of-image marker, but hold
        // 3 KB where 5000 x 5000 takes 48 KB at the very least).
        let mut bomb = photo.clone();
        let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        bomb[sof + 5..sof + 9].copy_from_slice(&[0x13, 0x88, 0x13, 0x88]);
        for bomb in [&bomb[..bomb.len() / 2], &bomb[..]] {
            let started = std::time::Instant::now();
            let e = decode_and_resize(bomb, &config).err().unwrap();
            assert!(e.contains("cannot decode the image: truncated"), "{e}");
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
        let e = decode_and_resize(&bomb, &config).err().unwrap();
        assert!(e.contains("cannot hold a 5000 x 5000 image"), "{e}");
        // Every fixture JPEG holds far more than the least.
        for name in ["photo.jpg", "tall.jpg"] {
            let path = format!(
                "{}/tests/fixtures/preprocess/images/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let jpeg = std::fs::read(path).unwrap();
            let scans = jpeg_scans(&jpeg).unwrap();
            let (w, h) = ImageReader::new(Cursor::new(&jpeg))
                .with_guessed_format()
                .unwrap()
                .into_dimensions()
                .unwrap();
            let least = jpeg_min_scan_bytes(u64::from(w) * u64::from(h));
            assert!(
                scans.huffman && scans.bytes as u64 > 8 * least,
                "{name}: {scans:?}"
            );
        }
        // Whole, and with bytes after its end (PIL ignores them), it decodes.
        decode_and_resize(&photo, &config).unwrap();
        let mut trailing = photo.clone();
        trailing.extend_from_slice(b"trailing bytes");
        decode_and_resize(&trailing, &config).unwrap();
    }

    /// The scan walk of a progressive-like layout: several scans, stuffed 0xFF00,
    /// restart markers, fill bytes and stray bytes between segments.
    #[test]
    fn jpeg_end_of_image_is_found_through_every_scan() {
        let segment = |code: u8, body: &[u8]| {
            let mut s = vec![0xFF, code];
            s.extend_from_slice(&(body.len() as u16 + 2).to_be_bytes());
            s.extend_from_slice(body);
            s
        };
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend(segment(0xDB, &[0; 65]));
        jpeg.extend(segment(0xC2, &[8, 0, 16, 0, 16, 1, 1, 0x11, 0]));
        jpeg.extend(segment(0xDA, &[1, 1, 0, 0, 0, 0]));
        jpeg.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56]);
        jpeg.extend(segment(0xC4, &[0; 17]));
        jpeg.extend([0x00, 0x00]); // stray bytes between segments
        jpeg.extend(segment(0xDA, &[1, 1, 0, 1, 63, 0]));
        jpeg.extend([0x78, 0xFF, 0xFF, 0xD1, 0x9A]);
        let scans_end = jpeg.len();
        jpeg.extend([0xFF, 0xFF, 0xD9]);
        assert_eq!(
            jpeg_scans(&jpeg),
            Some(JpegScans {
                bytes: 12,
                huffman: true
            })
        );
        for cut in 0..jpeg.len() {
            assert_eq!(jpeg_scans(&jpeg[..cut]), None, "cut at {cut}");
        }
        // An end-of-image code inside the scan data, stuffed, is not the end.
        let mut stuffed = jpeg[..scans_end].to_vec();
        stuffed.extend([0xFF, 0x00, 0xD9]);
        assert_eq!(jpeg_scans(&stuffed), None);
    }

    /// A 1 x 1,000,000 PNG (2 KB, under max_pixels) took 214 s and 1.3 GB to crop:
    /// scaled whole to 32 x 32,000,000 first. It is refused from its header now.
    #[test]
    fn crop_refuses_an_image_it_would_scale_past_max_pixels() {
        let started = std::time::Instant::now();
        let e = decode_and_resize(&png(1, 1_000_000), &config("crop"))
            .err()
            .unwrap();
        assert!(e.contains("32 x 32000000"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // The other modes bring it down to the model's size, as before.
        for mode in ["stretch", "fit_pad"] {
            let pixels = decode_and_resize(&png(1, 1_000_000), &config(mode)).unwrap();
            assert_eq!(pixels.data.len(), 32 * 24, "{mode}");
        }
        // An image of ordinary proportions is cropped.
        let pixels = decode_and_resize(&png(400, 100), &config("crop")).unwrap();
        assert_eq!(pixels.data.len(), 32 * 24);
    }

    /// Tiny images that each become the model's size: what they would decode to
    /// is refused (413) before any is decoded.
    #[test]
    fn images_that_would_decode_past_the_limit_are_refused_first() {
        let mut big = config("stretch");
        (big.width, big.height) = (8192, 8192);
        let tiny = png(1, 1);
        let e = images_to_tensor("image", &vec![tiny.clone(); 17], &big).unwrap_err();
        let PreprocessError::TooLarge(m) = e else {
            panic!("{e:?}")
        };
        assert!(
            m.contains("17 images of 8192 x 8192 x 1 would decode to"),
            "{m}"
        );
        // Under it, they are decoded (smaller, to be quick).
        (big.width, big.height) = (512, 512);
        big.dtype = ImageDtype::Uint8;
        assert_eq!(
            images_to_tensor("image", &vec![tiny; 3], &big)
                .unwrap()
                .shape(),
            &[3, 1, 512, 512]
        );
    }

    /// Images are decoded one after another; once nobody waits (the deadline
    /// passed, or the client left) the rest are not (a request of 20 large images
    /// kept a core busy for a minute after its 504).
    #[test]
    fn decoding_stops_once_nobody_waits() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let images = vec![png(64, 64); 3];
        let config = config("stretch");
        let past = crate::preprocess::Stop {
            deadline: Some(std::time::Instant::now()),
            abandoned: Arc::default(),
        };
        let e = crate::preprocess::with_stop(past, || images_to_tensor("image", &images, &config))
            .unwrap_err();
        assert!(matches!(e, PreprocessError::Stopped(_)), "{e:?}");
        let gone = crate::preprocess::Stop {
            deadline: None,
            abandoned: Arc::new(AtomicBool::new(false)),
        };
        let flag = gone.abandoned.clone();
        let ok = crate::preprocess::with_stop(gone.clone(), || {
            images_to_tensor("image", &images, &config)
        });
        assert_eq!(ok.unwrap().shape(), &[3, 1, 24, 32]);
        flag.store(true, Ordering::Relaxed);
        let e = crate::preprocess::with_stop(gone, || images_to_tensor("image", &images, &config))
            .unwrap_err();
        assert!(matches!(e, PreprocessError::Stopped(_)), "{e:?}");
        // Outside a request nothing stops it.
        assert!(images_to_tensor("image", &images, &config).is_ok());
    }
}
