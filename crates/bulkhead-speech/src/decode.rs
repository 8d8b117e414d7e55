//! Decoding as transformers' `WhisperForConditionalGeneration.generate` does it (one beam; greedy, or along the
//! temperature fallback of `fallback`):
//! the prefix (`prefix`), the logits processors (`logits`), the stop at end of text or at the length limit, and the
//! 30-second windows: the decoded tokens of a window are cut into segments at consecutive timestamp pairs
//! (`_retrieve_segment`), the unfinished tail after the last pair is dropped and the next window starts at the last
//! timestamp, so that a timestamped decoding may take several windows even for short audio. The result is what
//! `generate` returns (the tokens of every segment, without prefix, prompt or end of text) and the text the
//! processor decodes from them.

use serde::{Deserialize, Serialize};

use crate::fallback::{Fallback, SplitMix64, WindowDecoding, WindowInput};
use crate::languages::code_of;
use crate::logits::{Rules, TimestampRules};
use crate::model::{EncoderOutput, MelFeatures};
use crate::prefix::init_tokens;
use crate::{language_token, SpeechError, WhisperModel};

/// Seconds per timestamp token (transformers' `time_precision`).
const TIME_PRECISION: f64 = 0.02;
/// Seconds per feature frame (`time_precision_features`).
const FRAME_SECONDS: f64 = 0.01;
/// Feature frames per encoder position (the stride of the two convolutions).
const INPUT_STRIDE: usize = 2;

/// What the model does with the speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Speech to text in the spoken language.
    Transcribe,
    /// Speech to English text.
    Translate,
}

impl Task {
    /// `transcribe` or `translate` (the keys of `task_to_id`).
    pub fn name(self) -> &'static str {
        match self {
            Task::Transcribe => "transcribe",
            Task::Translate => "translate",
        }
    }
}

/// Options of [`WhisperModel::transcribe`]; the defaults are transformers' `generate()` defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TranscribeOptions {
    /// The spoken language: a code (`de`), an English name (`german`) or a token (`<|de|>`). `None`: detected by a
    /// multilingual model (the most probable language token after `<|startoftranscript|>`), none for `.en` models.
    pub language: Option<String>,
    /// The task; `None`: transcribe (or the generation config's `forced_decoder_ids` when no language is given).
    pub task: Option<Task>,
    /// Timestamp tokens (`None`: the generation config's `return_timestamps`, off when it has none). Audio longer
    /// than one window is decoded with timestamps; as transformers, it is refused when they are off (here or in the
    /// generation config).
    pub timestamps: Option<bool>,
    /// Previous text to condition on: `<|startofprev|>` and its tokens go before the prefix.
    pub prompt: Option<String>,
    /// Most tokens generated per window; `None`: up to the generation config's `max_length` (prefix included).
    pub max_new_tokens: Option<usize>,
    /// Temperature fallback (`None`: greedy decoding only, transformers' default; `Some(Fallback::default())`:
    /// openai-whisper's schedule and thresholds).
    pub fallback: Option<Fallback>,
}

/// A stretch of the transcription between two timestamps (or the whole window when it has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Start, seconds from the beginning of the audio.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Its tokens (timestamps included).
    pub token_ids: Vec<i64>,
    /// Its text.
    pub text: String,
    /// How its window was decoded (temperature, scores); `None` for a model without Whisper's decoding.
    #[serde(default)]
    pub decoding: Option<WindowDecoding>,
}

/// One run of the decoder graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecoderCall {
    /// Tokens fed (the prefix at the first step of a window, then 1).
    pub new_tokens: usize,
    /// Tokens already in the key/value caches.
    pub past: usize,
}

/// What [`WhisperModel::transcribe`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcription {
    /// The generated tokens of every segment, as transformers' `generate` returns them (no prefix, no prompt, no
    /// end of text; timestamp tokens included when they were generated).
    pub token_ids: Vec<i64>,
    /// The text (special and timestamp tokens left out).
    pub text: String,
    /// The language code in the prefix (given or detected); `None` for an English-only model.
    pub language: Option<String>,
    /// The segments, with their times.
    pub segments: Vec<Segment>,
    /// The 30-second windows decoded.
    pub windows: usize,
    /// Every decoder run, in order: each decoding's first run feeds its prefix, every later run one token (with a
    /// fallback, a window starts with the run that gives its no-speech probability, then one decoding per attempt).
    pub decoder_calls: Vec<DecoderCall>,
    /// Milliseconds in the encoder, every window (the rest of the call is decoding).
    pub encode_ms: f64,
    /// Milliseconds computing log-mel features inside the call (0 when the caller passed features in, as
    /// [`WhisperModel::transcribe`] takes them; Qwen3-ASR's `transcribe_pcm` computes its own per piece).
    pub features_ms: f64,
}

impl WhisperModel {
    /// Transcribes (or translates) `features`, greedily, token for token as transformers' `generate`.
    pub fn transcribe(
        &mut self,
        features: &MelFeatures,
        opts: &TranscribeOptions,
    ) -> Result<Transcription, SpeechError> {
        let g = self.generation().clone();
        let config = self.config().clone();
        if features.mel_bins != config.mel_bins {
            return Err(SpeechError::Features(format!(
                "{} mel bins, the model takes {} (config.json num_mel_bins)",
                features.mel_bins, config.mel_bins
            )));
        }
        if features.frames == 0 {
            return Err(SpeechError::Features("no frames".into()));
        }
        let window = config.frames();
        let total = features.frames;
        let requested = opts.timestamps.or(g.return_timestamps);
        let mut timestamps = requested.unwrap_or(false);
        if total > window {
            if requested == Some(false) {
                let from =
                    if opts.timestamps.is_some() { "the options" } else { "the generation config's return_timestamps" };
                return Err(SpeechError::Options(format!(
                    "{total} frames are more than one {window}-frame window: long audio is decoded window by window \
                     on its timestamps, but {from} turn timestamps off; ask for timestamps"
                )));
            }
            timestamps = true;
        }
        if timestamps && g.no_timestamps.is_none() {
            return Err(SpeechError::Config {
                path: g.path.clone(),
                field: "no_timestamps_token_id".into(),
                reason: "is missing: timestamps need it".into(),
            });
        }
        let ts_begin = g.timestamp_begin().unwrap_or(config.vocab as i64 + 1);
        let language = match &opts.language {
            Some(l) => Some(language_token(l, &g.lang_to_id)?.1),
            None => None,
        };
        let prompt = opts.prompt.as_deref().map(|p| self.prompt_ids(p)).transpose()?;
        if let Some(f) = &opts.fallback {
            f.check()?;
        }
        let mut rng = SplitMix64::new(opts.fallback.as_ref().map_or(0, |f| f.seed));

        self.encode_ms = 0.0;
        let first = self.encode_window(features, 0)?;
        let prefix = init_tokens(&g, language, opts.task, timestamps, &mut || self.detect_encoded(&first))?;
        let usize_ids = |v: &[i64]| v.iter().map(|&t| t as usize).collect::<Vec<_>>();
        let rules = Rules {
            suppress: usize_ids(&g.suppress_tokens),
            begin_suppress: usize_ids(&g.begin_suppress_tokens),
            timestamps: timestamps.then(|| TimestampRules {
                no_timestamps: g.no_timestamps.unwrap_or_default() as usize,
                begin: ts_begin as usize,
                eot: g.eot() as usize,
                max_initial: g.max_initial_timestamp_index,
            }),
        };

        // The prompt is the first "segment" the later windows may be conditioned on (transformers'
        // `prompt_condition_type` "first-segment"); it is not part of the result.
        let mut history: Vec<Vec<i64>> = vec![];
        if let Some(p) = &prompt {
            history.push(p.iter().copied().skip(usize::from(p.first() == g.prev_sot.as_ref())).collect());
        }
        let from_prompt = history.len();
        let mut segments = vec![];
        let mut calls = vec![];
        let mut max_length = g.max_length;
        let mut seek = 0;
        let mut windows = 0;
        let mut first = Some(first);
        // transformers conditions the next window on the text only after a decoding below temperature 0.5.
        let mut condition = true;
        while seek < total {
            let seek_frames = (total - seek).min(window);
            let encoded = match first.take() {
                Some(e) if seek == 0 => e,
                _ => self.encode_window(features, seek)?,
            };
            let time_offset = seek as f64 * TIME_PRECISION / INPUT_STRIDE as f64;
            let mut input = vec![];
            if g.condition_on_prev_tokens && condition && !history.is_empty() {
                let mut prev: Vec<i64> = vec![];
                for s in &history {
                    // A segment that ends with two timestamps contributes only the first of them.
                    let ends_double = s.len() > 2 && s[s.len() - 2] >= ts_begin;
                    prev.extend_from_slice(if ends_double { &s[..s.len() - 1] } else { s });
                }
                let cut = config.max_target_positions / 2 - 1;
                let prev = &prev[prev.len().saturating_sub(cut)..];
                let bos = g
                    .prev_sot
                    .or_else(|| (g.suppress_tokens.len() >= 2).then(|| g.suppress_tokens[g.suppress_tokens.len() - 2]));
                input.extend(bos);
                input.extend_from_slice(prev);
            } else if let Some(p) = &prompt {
                input.extend_from_slice(p);
            }
            let sot = input.len();
            input.extend_from_slice(&prefix.ids);
            let limit = match opts.max_new_tokens {
                Some(n) => {
                    if n + input.len() > config.max_target_positions {
                        return Err(SpeechError::Options(format!(
                            "the prompt and prefix ({} tokens) and max_new_tokens ({n}) exceed the model's {} \
                             positions (config.json max_target_positions); shorten the prompt or lower \
                             max_new_tokens",
                            input.len(),
                            config.max_target_positions
                        )));
                    }
                    input.len() + n
                }
                None => {
                    // transformers raises the limit by the prefix, window after window.
                    let initial = (config.max_target_positions / 2 - 1).min(input.len());
                    max_length = (max_length + initial).min(config.max_target_positions);
                    max_length
                }
            };
            if input.len() >= config.max_target_positions {
                return Err(SpeechError::Options(format!(
                    "the prompt and prefix take {} of the model's {} positions, leaving none to decode",
                    input.len(),
                    config.max_target_positions
                )));
            }
            let w = WindowInput { encoded: &encoded, input: &input, sot, rules: &rules, limit };
            let decoded = self.decode_window(&w, opts.fallback.as_ref(), &mut rng, &mut calls)?;
            condition = decoded.decoding.temperature < 0.5;
            if decoded.skip {
                tracing::debug!(seek, "silence: the window is skipped");
                seek += seek_frames;
                windows += 1;
                continue;
            }
            let mut seq = decoded.seq;
            if seq.last().is_some_and(|t| g.eos.contains(t)) {
                seq.pop();
            }
            let (found, mut offset) = split_segments(&seq, ts_begin, time_offset, seek_frames);
            if offset == 0 {
                // transformers would decode this window again forever (a timestamp pair at <|0.00|>); move on.
                tracing::warn!(seek, "the window ended at its first timestamp; skipping to the next window");
                offset = seek_frames;
            }
            for s in found {
                history.push(s.token_ids.clone());
                segments.push(Segment { text: self.text(&s.token_ids)?, decoding: Some(decoded.decoding), ..s });
            }
            seek += offset;
            windows += 1;
        }
        let token_ids: Vec<i64> = history[from_prompt..].concat();
        Ok(Transcription {
            text: self.text(&token_ids)?,
            token_ids,
            language: prefix.language.and_then(|id| self.language_code(id)),
            segments,
            windows,
            decoder_calls: calls,
            encode_ms: self.encode_ms,
            features_ms: 0.0,
        })
    }

    /// The most probable language of `features` (their first window): `(code, token id)`, as transformers'
    /// `detect_language`: the language token with the highest logit after `<|startoftranscript|>`.
    pub fn detect_language(&mut self, features: &MelFeatures) -> Result<(String, i64), SpeechError> {
        if self.generation().lang_to_id.is_empty() {
            return Err(SpeechError::Language(
                "this model is English-only (its generation config has no `lang_to_id`): there is no language to \
                 detect"
                    .into(),
            ));
        }
        let encoded = self.encode(features)?;
        let id = self.detect_encoded(&encoded)?;
        let code = self.language_code(id).unwrap_or_default();
        Ok((code, id))
    }

    fn detect_encoded(&mut self, encoded: &EncoderOutput) -> Result<i64, SpeechError> {
        let start = self.generation().decoder_start;
        let mut state = self.start(encoded)?;
        let logits = self.step(&mut state, &[start])?;
        let mut best: Option<(i64, f32)> = None;
        let mut ids: Vec<i64> = self.generation().lang_to_id.values().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let v = logits[id as usize];
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((id, v));
            }
        }
        best.map(|(id, _)| id).ok_or_else(|| SpeechError::Language("the model has no language tokens".into()))
    }

    fn language_code(&self, id: i64) -> Option<String> {
        let g = self.generation();
        g.lang_to_id.iter().find(|(_, &v)| v == id).map(|(token, _)| code_of(token).to_string())
    }

    /// `<|startofprev|>` and the tokens of `" " + prompt.trim()` (transformers' `get_prompt_ids`).
    fn prompt_ids(&self, prompt: &str) -> Result<Vec<i64>, SpeechError> {
        let g = self.generation();
        let start = self.tokenizer.token_to_id("<|startofprev|>").map(i64::from).or(g.prev_sot).ok_or_else(|| {
            SpeechError::Options("this model has no <|startofprev|> token: it takes no prompt".into())
        })?;
        let encoded = self
            .tokenizer
            .encode(format!(" {}", prompt.trim()), false)
            .map_err(|e| SpeechError::Options(format!("cannot tokenize the prompt: {e}")))?;
        let first_special = g.eot();
        let mut ids = vec![start];
        for &id in encoded.get_ids() {
            if i64::from(id) >= first_special {
                let token = self.tokenizer.id_to_token(id).unwrap_or_default();
                return Err(SpeechError::Options(format!("the prompt contains the special token {token}")));
            }
            ids.push(i64::from(id));
        }
        Ok(ids)
    }

    /// The text of `ids`: special tokens skipped, timestamp tokens removed (the processor's `batch_decode` with
    /// `skip_special_tokens=True`).
    pub fn text(&self, ids: &[i64]) -> Result<String, SpeechError> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let text = self
            .tokenizer
            .decode(&ids, true)
            .map_err(|e| SpeechError::Options(format!("cannot decode tokens: {e}")))?;
        Ok(strip_timestamps(&text))
    }
}

/// transformers' `_retrieve_segment`: the segments of one window's tokens and how many frames the next window
/// starts after this one.
fn split_segments(seq: &[i64], ts_begin: i64, time_offset: f64, seek_frames: usize) -> (Vec<Segment>, usize) {
    let is_ts: Vec<bool> = seq.iter().map(|&t| t >= ts_begin).collect();
    let n = seq.len();
    let single_ending = n >= 2 && !is_ts[n - 2] && is_ts[n - 1];
    let mut slices: Vec<usize> =
        (0..n.saturating_sub(1)).filter(|&i| is_ts[i] && is_ts[i + 1]).map(|i| i + 1).collect();
    let at = |pos: i64| time_offset + pos as f64 * TIME_PRECISION;
    let segment = |start: f64, end: f64, tokens: &[i64]| Segment {
        start,
        end,
        token_ids: tokens.to_vec(),
        text: String::new(),
        decoding: None,
    };
    if slices.is_empty() {
        let mut last = (seek_frames as f64 * FRAME_SECONDS / TIME_PRECISION) as i64;
        if let Some(i) = is_ts.iter().rposition(|&t| t) {
            if seq[i] != ts_begin {
                last = seq[i] - ts_begin;
            }
        }
        return (vec![segment(time_offset, at(last), seq)], seek_frames);
    }
    if single_ending {
        slices.push(n);
    } else if let Some(l) = slices.last_mut() {
        *l += 1;
    }
    let mut segments = vec![];
    let mut last = 0;
    for (i, &cur) in slices.iter().enumerate() {
        let tokens = &seq[last..cur];
        let is_last = i == slices.len() - 1;
        let end_index = if !is_last || single_ending { tokens.len() - 1 } else { tokens.len() - 2 };
        segments.push(segment(at(tokens[0] - ts_begin), at(tokens[end_index] - ts_begin), tokens));
        last = cur;
    }
    let offset = if single_ending { seek_frames } else { (seq[last - 2] - ts_begin) as usize * INPUT_STRIDE };
    (segments, offset)
}

/// Removes `<|12.34|>` timestamp tokens from decoded text (transformers' `_filter_timestamp_ids`).
fn strip_timestamps(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("<|") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let a = digits(tail);
        let is_timestamp = a > 0 && tail[a..].starts_with('.') && {
            let b = digits(&tail[a + 1..]);
            b > 0 && tail[a + 1 + b..].starts_with("|>")
        };
        if is_timestamp {
            let b = digits(&tail[a + 1..]);
            rest = &tail[a + 1 + b + 2..];
        } else {
            out.push_str("<|");
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: i64 = 100; // <|0.00|>

    #[test]
    fn segments_at_timestamp_pairs() {
        // <|0.00|> a b <|1.00|><|1.00|> c <|2.00|><|2.00|> d (unfinished): two segments, next window at 2.00 s.
        let seq = [B, 1, 2, B + 50, B + 50, 3, B + 100, B + 100, 4];
        let (s, offset) = split_segments(&seq, B, 0.0, 3000);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].start, s[0].end, s[0].token_ids.len()), (0.0, 1.0, 4));
        assert_eq!((s[1].start, s[1].end, s[1].token_ids.clone()), (1.0, 2.0, vec![B + 50, 3, B + 100, B + 100]));
        assert_eq!(offset, 200);
        // A single timestamp at the end: the window is done.
        let (s, offset) = split_segments(&[B, 1, B + 10, B + 10, 2, B + 20], B, 30.0, 1000);
        assert_eq!((s.len(), offset), (2, 1000));
        assert!((s[1].start - 30.2).abs() < 1e-9 && (s[1].end - 30.4).abs() < 1e-9, "{:?}", s[1]);
    }

    #[test]
    fn one_segment_without_pairs() {
        let (s, offset) = split_segments(&[1, 2, 3], B, 0.0, 3000);
        assert_eq!((s.len(), offset), (1, 3000));
        assert!((s[0].end - 30.0).abs() < 1e-9);
        let (s, _) = split_segments(&[B + 5, 2, B + 70], B, 0.0, 3000);
        assert!((s[0].end - 1.4).abs() < 1e-9);
        let (s, offset) = split_segments(&[], B, 0.0, 1200);
        assert_eq!((s[0].token_ids.len(), offset), (0, 1200));
    }

    #[test]
    fn timestamps_are_stripped_from_text() {
        assert_eq!(strip_timestamps("<|0.00|> Hello<|1.20|><|1.20|> world<|2.00|>"), " Hello world");
        assert_eq!(strip_timestamps("a <|en|> b <|1.|>"), "a <|en|> b <|1.|>");
    }
}
