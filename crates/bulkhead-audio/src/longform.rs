//! Audio longer than one 30 s window, cut as openai-whisper's `transcribe` cuts it: the log-mel of the whole clip
//! followed by 30 s of zeros, normalised once over all of it (`log_mel_spectrogram(audio, padding=N_SAMPLES)`),
//! then windows of `nb_max_frames` (3000) frames starting at a frame offset `seek`. The decoder moves `seek`: by a
//! whole segment when it has no timestamps, or to the last timestamp it produced; [`LongForm::windows`] walks the
//! plain case (consecutive windows), [`LongForm::window`] serves any `seek`.

use crate::features::{FeatureExtractor, Features};

/// The features of a long clip, ready to be cut into model windows.
#[derive(Clone, Debug)]
pub struct LongForm {
    /// `[n_mels][content_frames + window_frames]`, normalised over all of it.
    mel: Features,
    content_frames: usize,
    window_frames: usize,
    seconds_per_frame: f64,
}

/// One model input: `window_frames` frames starting at `seek`.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// The first frame, counted from the start of the clip.
    pub seek: usize,
    /// Frames of the clip in this window (`min(window_frames, content_frames - seek)`); the rest is the log-mel
    /// of the zeros after the clip. `features.valid_frames` is the same number.
    pub segment_frames: usize,
    /// Where the window starts, in seconds.
    pub start_s: f64,
    /// How much of the clip it holds, in seconds.
    pub duration_s: f64,
    /// `[n_mels][window_frames]`.
    pub features: Features,
}

impl FeatureExtractor {
    /// The long-form features of mono `samples` at the extractor's rate (any length, a single window included).
    /// Holds `n_mels` float32 values per 10 ms frame: 184 MB for an hour at 128 bins.
    pub fn long_form(&self, samples: &[f32]) -> LongForm {
        let cfg = self.config();
        let mel = self.normalised(samples, samples.len() + cfg.n_samples);
        LongForm {
            content_frames: mel.n_frames.saturating_sub(cfg.nb_max_frames),
            window_frames: cfg.nb_max_frames,
            seconds_per_frame: cfg.hop_length as f64 / cfg.sampling_rate as f64,
            mel,
        }
    }
}

impl LongForm {
    /// Frames of the clip (`samples / hop_length`), without the padding.
    pub fn content_frames(&self) -> usize {
        self.content_frames
    }

    /// Frames per window (`nb_max_frames`).
    pub fn window_frames(&self) -> usize {
        self.window_frames
    }

    /// The time of frame `frame`, in seconds.
    pub fn frame_seconds(&self, frame: usize) -> f64 {
        frame as f64 * self.seconds_per_frame
    }

    /// The window starting at frame `seek`; `None` once `seek` is past the clip.
    pub fn window(&self, seek: usize) -> Option<Window> {
        if seek >= self.content_frames {
            return None;
        }
        let (w, total) = (self.window_frames, self.mel.n_frames);
        let mut data = Vec::with_capacity(self.mel.n_mels * w);
        for m in 0..self.mel.n_mels {
            // seek < content_frames, so seek + w <= total: the slice is whole.
            data.extend_from_slice(&self.mel.data[m * total + seek..m * total + seek + w]);
        }
        let segment_frames = w.min(self.content_frames - seek);
        Some(Window {
            seek,
            segment_frames,
            start_s: self.frame_seconds(seek),
            duration_s: self.frame_seconds(segment_frames),
            features: Features { data, n_mels: self.mel.n_mels, n_frames: w, valid_frames: segment_frames },
        })
    }

    /// Consecutive windows: `seek` 0, then each window's end, until the clip is covered.
    pub fn windows(&self) -> impl Iterator<Item = Window> + '_ {
        let mut seek = 0;
        std::iter::from_fn(move || {
            let window = self.window(seek)?;
            seek += window.segment_frames;
            Some(window)
        })
    }
}
