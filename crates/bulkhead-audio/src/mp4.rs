//! The edit list of an MP4's sound track: which part of the decoded samples is the audio. AAC encoders put 1024
//! or 2112 priming samples before the audio and pad the last frame; the edit list (`moov/trak/edts/elst`) says
//! where the audio starts (`media_time`) and how long it plays (`segment_duration`). symphonia reads the atom but
//! does not apply it, so [`crate::decode`] trims with this.

/// The presentation of a track: skip `media_time` (media timescale), then keep `duration` (movie timescale).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EditList {
    media_time: u64,
    media_timescale: u32,
    duration: u64,
    movie_timescale: u32,
}

impl EditList {
    /// Trims decoded samples at `rate` Hz to the presentation.
    pub(crate) fn apply(&self, samples: &mut Vec<f32>, rate: u32) {
        let scale = |t: u64, ts: u32| (t as u128 * rate as u128 + ts as u128 / 2) / ts.max(1) as u128;
        let skip = (scale(self.media_time, self.media_timescale) as usize).min(samples.len());
        samples.drain(..skip);
        if self.duration > 0 {
            let keep = scale(self.duration, self.movie_timescale) as usize;
            samples.truncate(keep);
        }
    }
}

/// The boxes in `data`: (type, body). Stops at the first malformed size.
fn boxes(mut data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::from_fn(move || {
        let size = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as u64;
        let kind = data.get(4..8)?;
        let (header, size) = match size {
            0 => (8, data.len() as u64),
            1 => (16, u64::from_be_bytes(data.get(8..16)?.try_into().ok()?)),
            n => (8, n),
        };
        if size < header as u64 || size > data.len() as u64 {
            return None;
        }
        let (this, rest) = data.split_at(size as usize);
        data = rest;
        Some((kind, &this[header..]))
    })
}

fn child<'a>(data: &'a [u8], kind: &[u8]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| *k == kind).map(|(_, body)| body)
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// The timescale of an `mvhd` or `mdhd` body (version 0 or 1).
fn timescale(header: &[u8]) -> Option<u32> {
    u32_at(header, if *header.first()? == 1 { 20 } else { 12 })
}

/// The edit list of the first sound track of an MP4 file, if it has one that trims anything.
pub(crate) fn sound_edit_list(file: &[u8]) -> Option<EditList> {
    let moov = child(file, b"moov")?;
    let movie_timescale = timescale(child(moov, b"mvhd")?)?;
    let trak = boxes(moov).filter(|(k, _)| *k == b"trak").map(|(_, b)| b).find(|trak| {
        child(trak, b"mdia").and_then(|m| child(m, b"hdlr")).and_then(|h| h.get(8..12)) == Some(b"soun")
    })?;
    let media_timescale = timescale(child(child(trak, b"mdia")?, b"mdhd")?)?;
    let elst = child(child(trak, b"edts")?, b"elst")?;
    let version = *elst.first()?;
    let count = u32_at(elst, 4)? as usize;
    let entry_len = if version == 1 { 20 } else { 12 };
    // The first entry that is not an empty edit (media_time -1 is a gap before the audio).
    (0..count.min(64)).find_map(|i| {
        let at = 8 + i * entry_len;
        let (duration, media_time) = if version == 1 {
            (u64_at(elst, at)?, u64_at(elst, at + 8)? as i64)
        } else {
            (u32_at(elst, at)? as u64, u32_at(elst, at + 4)? as i32 as i64)
        };
        (media_time >= 0).then_some(EditList {
            media_time: media_time as u64,
            media_timescale,
            duration,
            movie_timescale,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_the_start_and_the_end() {
        let edit = EditList { media_time: 1024, media_timescale: 16000, duration: 2634, movie_timescale: 1000 };
        let mut samples: Vec<f32> = (0..44032).map(|i| i as f32).collect();
        edit.apply(&mut samples, 16000);
        assert_eq!((samples.len(), samples[0]), (42144, 1024.0));
    }

    #[test]
    fn malformed_boxes_end_the_walk() {
        assert!(sound_edit_list(&[0, 0, 0, 9, b'm', b'o', b'o', b'v']).is_none());
        assert!(sound_edit_list(&[0, 0, 0, 1, b'm', b'o', b'o', b'v', 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
        assert!(sound_edit_list(b"").is_none());
    }
}
