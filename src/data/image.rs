//! Image sizes from file headers (JPEG SOF, PNG IHDR), so shapes are known without decoding pixels.

/// (height, width, channels) of a JPEG or PNG image.
pub fn header_size(bytes: &[u8]) -> Result<(usize, usize, usize), String> {
    if bytes.starts_with(&[0xff, 0xd8]) {
        jpeg_size(bytes)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        png_size(bytes)
    } else {
        Err("not a JPEG or PNG image".into())
    }
}

fn jpeg_size(b: &[u8]) -> Result<(usize, usize, usize), String> {
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xff {
            return Err(format!("JPEG marker expected at byte {i}"));
        }
        let marker = b[i + 1];
        if marker == 0xff {
            i += 1;
            continue;
        }
        if (0xd0..=0xd9).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        // Start-of-frame markers (baseline, progressive, ...), excluding DHT, JPG and DAC.
        if (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
            let f = b.get(i + 4..i + 10).ok_or("truncated JPEG frame header")?;
            let h = usize::from(u16::from_be_bytes([f[1], f[2]]));
            let w = usize::from(u16::from_be_bytes([f[3], f[4]]));
            let channels = match f[5] {
                1 => 1,
                _ => 3,
            };
            return Ok((h, w, channels));
        }
        i += 2 + len;
    }
    Err("no JPEG frame header found".into())
}

fn png_size(b: &[u8]) -> Result<(usize, usize, usize), String> {
    let ihdr = b.get(16..26).ok_or("truncated PNG header")?;
    let w = u32::from_be_bytes([ihdr[0], ihdr[1], ihdr[2], ihdr[3]]) as usize;
    let h = u32::from_be_bytes([ihdr[4], ihdr[5], ihdr[6], ihdr[7]]) as usize;
    // Colour types 0 (grey) and 4 (grey + alpha) decode to one channel, the others to three.
    let channels = if matches!(ihdr[9], 0 | 4) { 1 } else { 3 };
    Ok((h, w, channels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_and_png_headers() {
        let jpeg = [
            0xff, 0xd8, 0xff, 0xe0, 0, 4, 0, 0, 0xff, 0xc0, 0, 11, 8, 0, 20, 0, 30, 3, 0, 0, 0,
        ];
        assert_eq!(header_size(&jpeg).unwrap(), (20, 30, 3));
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 5, 8, 0, 0, 0, 0]);
        assert_eq!(header_size(&png).unwrap(), (5, 7, 1));
        assert!(header_size(b"GIF89a").is_err());
        assert!(header_size(&[0xff, 0xd8, 0x00]).is_err());
    }
}
