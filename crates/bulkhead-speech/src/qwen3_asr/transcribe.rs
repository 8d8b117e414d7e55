//! Greedy transcription as the `qwen-asr` package's `Qwen3ASRModel.transcribe` does it on the transformers backend:
//! the chat prompt (a system message holding the context, a user message holding the audio, the assistant's turn
//! opened, and `language X<asr_text>` after it when the language is given), one `<|audio_pad|>` per audio token,
//! greedy decoding up to `<|im_end|>` or `<|endoftext|>` or `max_new_tokens` (512 by default), the output decoded
//! without special tokens and read as `language X<asr_text>text`; audio over 20 minutes is cut into pieces at quiet
//! points and their texts joined.

use super::output::{language_name, merge_languages, parse_output, split_pieces, MAX_PIECE_SECONDS};
use super::{AudioEmbeddings, Qwen3AsrModel};
use crate::decode::{Segment, Task, TranscribeOptions, Transcription};
use crate::logits::argmax;
use crate::model::MelFeatures;
use crate::SpeechError;

/// The package's default `max_new_tokens` (`Qwen3ASRModel.from_pretrained`).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 512;
/// How far around every 20-minute mark a cut is searched for (`split_audio_into_chunks`' `search_expand_sec`).
const SEARCH_SECONDS: f64 = 5.0;

/// One piece's decoding.
struct Piece {
    ids: Vec<i64>,
    language: String,
    text: String,
    /// Milliseconds in the audio encoder.
    encode_ms: f64,
}

impl Qwen3AsrModel {
    /// The prompt text for `tokens` audio tokens: the chat template's rendering of a system message `context` and a
    /// user message holding the audio, with the generation prompt, then `language X<asr_text>` when `language` is
    /// given (a canonical name).
    pub fn prompt(&self, context: &str, language: Option<&str>, tokens: usize) -> String {
        let mut p = format!(
            "<|im_start|>system\n{context}<|im_end|>\n<|im_start|>user\n<|audio_start|>{}<|audio_end|><|im_end|>\n\
             <|im_start|>assistant\n",
            "<|audio_pad|>".repeat(tokens)
        );
        if let Some(l) = language {
            p.push_str(&format!("language {l}<asr_text>"));
        }
        p
    }

    /// The token ids of [`Qwen3AsrModel::prompt`].
    pub fn prompt_ids(&self, context: &str, language: Option<&str>, tokens: usize) -> Result<Vec<i64>, SpeechError> {
        let text = self.prompt(context, language, tokens);
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| SpeechError::Options(format!("cannot tokenize the prompt: {e}")))?;
        let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i64::from(i)).collect();
        let audio = ids.iter().filter(|&&i| i == self.config.audio_token_id).count();
        if audio != tokens {
            return Err(SpeechError::Options(format!(
                "the prompt holds {audio} <|audio_pad|> tokens for {tokens} audio tokens (does the context contain \
                 special tokens?)"
            )));
        }
        Ok(ids)
    }

    /// The canonical language of the options (a name in any case, or an ISO code), checked against the model's.
    fn language(&self, opts: &TranscribeOptions) -> Result<Option<String>, SpeechError> {
        match opts.language.as_deref().filter(|l| !l.trim().is_empty()) {
            None => Ok(None),
            Some(l) => language_name(l, &self.languages).map(Some).map_err(SpeechError::Language),
        }
    }

    fn check_options(&self, opts: &TranscribeOptions) -> Result<(), SpeechError> {
        if opts.task == Some(Task::Translate) {
            return Err(SpeechError::Options(
                "Qwen3-ASR transcribes in the spoken language; it does not translate".into(),
            ));
        }
        if opts.timestamps == Some(true) {
            return Err(SpeechError::Options(
                "Qwen3-ASR gives no timestamps by itself (the qwen-asr package takes them from a separate forced \
                 aligner model, which bulkhead does not run)"
                    .into(),
            ));
        }
        if opts.max_new_tokens == Some(0) {
            return Err(SpeechError::Options("max_new_tokens must be at least 1".into()));
        }
        // Whisper's temperature fallback is not Qwen3-ASR's decoding: it decodes greedily, whatever the schedule
        // after a first temperature of 0.
        if let Some(t) = opts.fallback.as_ref().and_then(|f| f.temperatures.first()).filter(|&&t| t != 0.0) {
            return Err(SpeechError::Options(format!(
                "temperature {t}: Qwen3-ASR decodes greedily (temperature 0) only, with no temperature fallback; \
                 send temperature 0 or omit it"
            )));
        }
        Ok(())
    }

    /// Transcribes `features` (one clip, as [`Qwen3AsrModel::features`] computes them) greedily, token for token as
    /// the reference's `generate`. `prompt` is the context (the system message); `language` forces the language
    /// (the output is then all text). The result's `language` is the language name the model wrote or was given
    /// (`None` when it wrote none, or `language None` for no speech).
    pub fn transcribe(
        &mut self,
        features: &MelFeatures,
        opts: &TranscribeOptions,
    ) -> Result<Transcription, SpeechError> {
        self.check_options(opts)?;
        let language = self.language(opts)?;
        let mut calls = vec![];
        let piece = self.piece(features, opts, language.as_deref(), &mut calls)?;
        let seconds = features.frames as f64 / 100.0;
        Ok(finish(vec![(0.0, seconds, piece)], calls, 0.0))
    }

    /// Transcribes mono PCM at [`Qwen3AsrModel::sampling_rate`] as the package's `transcribe` does: the samples
    /// clipped to [-1, 1] (after scaling by the peak when it is above 1), cut into pieces of at most 20 minutes at
    /// quiet points, each piece transcribed, the texts joined and the languages merged. The result has one segment
    /// per piece (its start and end in seconds, no timestamps inside it) and `windows` counts the pieces.
    pub fn transcribe_pcm(&mut self, pcm: &[f32], opts: &TranscribeOptions) -> Result<Transcription, SpeechError> {
        self.check_options(opts)?;
        let language = self.language(opts)?;
        if let Some(i) = pcm.iter().position(|v| !v.is_finite()) {
            return Err(SpeechError::Features(format!("sample {i} is not finite")));
        }
        let peak = pcm.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if peak > 1.0 { peak } else { 1.0 };
        let pcm: Vec<f32> = pcm.iter().map(|v| (v / scale).clamp(-1.0, 1.0)).collect();
        let rate = self.sampling_rate() as usize;
        let mut calls = vec![];
        let mut pieces = vec![];
        let mut features_ms = 0.0;
        for (start, samples) in split_pieces(&pcm, rate, MAX_PIECE_SECONDS, SEARCH_SECONDS) {
            let started = std::time::Instant::now();
            let features = self.features(&samples)?;
            features_ms += started.elapsed().as_secs_f64() * 1e3;
            let piece = self.piece(&features, opts, language.as_deref(), &mut calls)?;
            let begin = start as f64 / rate as f64;
            pieces.push((begin, begin + samples.len() as f64 / rate as f64, piece));
        }
        Ok(finish(pieces, calls, features_ms))
    }

    fn piece(
        &mut self,
        features: &MelFeatures,
        opts: &TranscribeOptions,
        language: Option<&str>,
        calls: &mut Vec<crate::DecoderCall>,
    ) -> Result<Piece, SpeechError> {
        let started = std::time::Instant::now();
        let audio = self.encode(features)?;
        let encode_ms = started.elapsed().as_secs_f64() * 1e3;
        let context = opts.prompt.as_deref().unwrap_or("");
        let prompt = self.prompt_ids(context, language, audio.tokens)?;
        let max_new = opts.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS);
        if prompt.len() + max_new > self.config.max_positions {
            return Err(SpeechError::Options(format!(
                "the prompt ({} tokens, {} of them audio) and max_new_tokens ({max_new}) exceed the model's {} \
                 positions (max_position_embeddings); shorten the audio or lower max_new_tokens",
                prompt.len(),
                audio.tokens,
                self.config.max_positions
            )));
        }
        let ids = self.greedy(&prompt, &audio, max_new, calls)?;
        let raw = self.raw_text(&ids)?;
        let (language, text) = parse_output(&raw, language);
        Ok(Piece { ids, language, text, encode_ms })
    }

    /// Greedy decoding after `prompt`: the generated tokens, the stop token left out.
    fn greedy(
        &mut self,
        prompt: &[i64],
        audio: &AudioEmbeddings,
        max_new: usize,
        calls: &mut Vec<crate::DecoderCall>,
    ) -> Result<Vec<i64>, SpeechError> {
        let eos = self.specials.eos.clone();
        let (mut state, mut logits) = self.prefill(prompt, audio)?;
        let mut generated = vec![];
        loop {
            let next = argmax(&logits) as i64;
            if eos.contains(&next) {
                break;
            }
            generated.push(next);
            if generated.len() >= max_new {
                break;
            }
            logits = self.step(&mut state, &[next])?;
        }
        calls.append(&mut state.calls);
        Ok(generated)
    }

    /// The text of `ids` with special tokens left out (the processor's `batch_decode(skip_special_tokens=True)`),
    /// `<asr_text>` kept: the raw output.
    pub fn raw_text(&self, ids: &[i64]) -> Result<String, SpeechError> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.tokenizer.decode(&ids, true).map_err(|e| SpeechError::Options(format!("cannot decode tokens: {e}")))
    }
}

/// The transcription of the pieces `(start, end, piece)`.
fn finish(pieces: Vec<(f64, f64, Piece)>, calls: Vec<crate::DecoderCall>, features_ms: f64) -> Transcription {
    let language = merge_languages(pieces.iter().map(|(_, _, p)| p.language.as_str()));
    let windows = pieces.len();
    let encode_ms = pieces.iter().map(|(_, _, p)| p.encode_ms).sum();
    let token_ids = pieces.iter().flat_map(|(_, _, p)| p.ids.iter().copied()).collect();
    let text = pieces.iter().map(|(_, _, p)| p.text.as_str()).collect::<String>();
    let segments = pieces
        .into_iter()
        .map(|(start, end, p)| Segment { start, end, token_ids: p.ids, text: p.text, decoding: None })
        .collect();
    Transcription {
        token_ids,
        text,
        language: (!language.is_empty()).then_some(language),
        segments,
        windows,
        decoder_calls: calls,
        encode_ms,
        features_ms,
    }
}
