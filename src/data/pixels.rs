//! Encoded images decoded to 8-bit pixels as OpenCV's `imread` gives them to Caffe: interleaved rows,
//! BGR for colour, one channel for grey. JPEGs go through libjpeg-turbo (the decoder OpenCV bundles, so
//! the pixels are the same); PNGs through the `png` crate, 16-bit samples keeping their high byte and
//! colour reduced to grey with libpng's `rgb_to_gray` weights that OpenCV sets (0.299, 0.587).

use ndarray::Array3;

/// Colour handling: as stored, or forced (`force_color` / `force_gray`, ImageData's `is_color`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    /// As stored: grey images stay one channel, colour ones are BGR.
    Native,
    Color,
    Gray,
}

/// A decoded image: `height` × `width` × `channels` bytes, row-major, BGR for colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Pixels {
    /// Decodes a JPEG or PNG.
    pub fn decode(bytes: &[u8], mode: ColorMode) -> Result<Self, String> {
        let (_, _, native_channels) = super::image::header_size(bytes)?;
        let gray = match mode {
            ColorMode::Gray => true,
            ColorMode::Color => false,
            ColorMode::Native => native_channels == 1,
        };
        if bytes.starts_with(&[0xff, 0xd8]) {
            jpeg(bytes, gray)
        } else {
            png(bytes, gray)
        }
    }

    /// Resized as `cv::resize(…, INTER_LINEAR)` does (unchanged when the size is the same).
    pub fn resized(self, height: usize, width: usize) -> Self {
        let data = super::resize::resize_linear(
            &self.data,
            (self.height, self.width, self.channels),
            (height, width),
        );
        Self {
            height,
            width,
            data,
            ..self
        }
    }

    /// As f32 in Caffe's C×H×W order.
    pub fn to_chw(&self) -> Array3<f32> {
        let (h, w, c) = (self.height, self.width, self.channels);
        Array3::from_shape_fn((c, h, w), |(ch, y, x)| {
            f32::from(self.data[(y * w + x) * c + ch])
        })
    }
}

fn jpeg(bytes: &[u8], gray: bool) -> Result<Pixels, String> {
    let format = if gray {
        turbojpeg::PixelFormat::GRAY
    } else {
        turbojpeg::PixelFormat::BGR
    };
    let img: turbojpeg::Image<Vec<u8>> =
        turbojpeg::decompress(bytes, format).map_err(|e| format!("JPEG decoding failed: {e}"))?;
    let c = if gray { 1 } else { 3 };
    let mut data = Vec::with_capacity(img.height * img.width * c);
    for row in img.pixels.chunks(img.pitch.max(1)).take(img.height) {
        data.extend_from_slice(&row[..img.width * c]);
    }
    Ok(Pixels {
        height: img.height,
        width: img.width,
        channels: c,
        data,
    })
}

fn png(bytes: &[u8], gray: bool) -> Result<Pixels, String> {
    let fail = |e: png::DecodingError| format!("PNG decoding failed: {e}");
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    // Palettes and low bit depths expanded to 8-bit samples, 16-bit samples to their high byte.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(fail)?;
    let size = reader
        .output_buffer_size()
        .ok_or("PNG image too large to decode")?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(fail)?;
    let (h, w) = (info.height as usize, info.width as usize);
    let step = info.color_type.samples();
    let pixels = buf[..info.buffer_size()]
        .chunks(info.line_size)
        .flat_map(|row| row[..w * step].chunks(step));
    let mut data = Vec::with_capacity(h * w * if gray { 1 } else { 3 });
    for px in pixels {
        // Alpha is dropped, as imread without IMREAD_UNCHANGED does.
        let (r, g, b) = if step >= 3 {
            (px[0], px[1], px[2])
        } else {
            (px[0], px[0], px[0])
        };
        if gray {
            data.push(if step >= 3 { rgb_to_gray(r, g, b) } else { r });
        } else {
            data.extend_from_slice(&[b, g, r]);
        }
    }
    Ok(Pixels {
        height: h,
        width: w,
        channels: if gray { 1 } else { 3 },
        data,
    })
}

/// libpng's 8-bit `rgb_to_gray` with OpenCV's coefficients: 0.299 and 0.587 in 1/32768 units, blue
/// taking the remainder, rounded.
fn rgb_to_gray(r: u8, g: u8, b: u8) -> u8 {
    const RED: u32 = 9798;
    const GREEN: u32 = 19235;
    const BLUE: u32 = 32768 - RED - GREEN;
    ((u32::from(r) * RED + u32::from(g) * GREEN + u32::from(b) * BLUE + 16384) >> 15) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_png(w: u32, h: u32, color: png::ColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn png_colour_comes_out_bgr_and_grey_by_libpng_weights() {
        // 2×1 RGBA: a red and a blue pixel.
        let bytes = encode_png(2, 1, png::ColorType::Rgba, &[255, 0, 0, 255, 0, 0, 200, 10]);
        let color = Pixels::decode(&bytes, ColorMode::Native).unwrap();
        assert_eq!((color.height, color.width, color.channels), (1, 2, 3));
        assert_eq!(color.data, vec![0, 0, 255, 200, 0, 0]);
        let gray = Pixels::decode(&bytes, ColorMode::Gray).unwrap();
        // 255·9798/32768 = 76.2 → 76; 200·3735/32768 = 22.8 → 23.
        assert_eq!(gray.data, vec![76, 23]);
    }

    #[test]
    fn grey_png_is_one_channel_unless_colour_is_forced() {
        let bytes = encode_png(3, 1, png::ColorType::Grayscale, &[0, 128, 255]);
        assert_eq!(
            Pixels::decode(&bytes, ColorMode::Native).unwrap().channels,
            1
        );
        let forced = Pixels::decode(&bytes, ColorMode::Color).unwrap();
        assert_eq!(forced.data, vec![0, 0, 0, 128, 128, 128, 255, 255, 255]);
    }

    #[test]
    fn chw_order_puts_each_channel_in_its_own_plane() {
        let p = Pixels {
            height: 1,
            width: 2,
            channels: 3,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        assert_eq!(
            p.to_chw().into_raw_vec_and_offset().0,
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
