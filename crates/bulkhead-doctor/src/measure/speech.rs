//! Speech-to-text models (Whisper, Qwen3-ASR): a synthetic clip generated here (voiced tones and a little noise,
//! no file needed) transcribed again and again by a unit's worker, as `/v1/audio/transcriptions` sends it
//! (`Payload::Audio`, the default options): the real-time factor per stage, the decoder's tokens per second, the
//! token ids, and resident memory after each transcription. The bench times the same transcriptions.

use std::time::Instant;

use bulkhead_core::ModelFiles;
use bulkhead_supervisor::{
    Answer, AudioRequest, ClientError, FallbackChecks, Payload, RunError, SpeechOptions, SpeechTiming,
};

use super::latency::Timed;
use super::unit::Failed;
use super::worker::Worker;
use super::Plan;
use crate::progress::Progress;
use crate::report::{SpeechReport, UnitReport};
use crate::{analyze, media};

/// Seconds of the synthetic clip: a few seconds, as a short voice request is, inside one 30-second window.
pub const CLIP_SECONDS: f64 = 4.0;

/// The rate a speech model takes when its `preprocessor_config.json` does not say (Whisper's and Qwen3-ASR's).
const DEFAULT_RATE: u32 = 16_000;

/// The clip every unit transcribes.
#[derive(Debug, Clone)]
pub struct Clip {
    /// What the worker is sent.
    pub payload: Payload,
    /// Seconds of audio.
    pub seconds: f64,
}

impl Clip {
    /// [`CLIP_SECONDS`] of [`synthetic`] audio at the model's sampling rate (`sampling_rate` of its
    /// `preprocessor_config.json`).
    pub fn for_model(model: &ModelFiles) -> Clip {
        let rate = sampling_rate(model);
        let samples = synthetic(rate, CLIP_SECONDS);
        // One greedy pass per window, so that the real-time factor and tokens/s measure the decoder itself (the
        // fallback's extra passes depend on how the model scores the synthetic clip).
        let options = SpeechOptions { checks: FallbackChecks::OFF, ..SpeechOptions::default() };
        let request = AudioRequest { samples, rate, options };
        Clip { seconds: request.duration_s(), payload: Payload::Audio(request) }
    }
}

/// `sampling_rate` of the folder's `preprocessor_config.json`, else 16 kHz.
fn sampling_rate(model: &ModelFiles) -> u32 {
    let dir = if model.source.is_dir() { model.source.clone() } else { model.source.with_file_name("") };
    std::fs::read(dir.join("preprocessor_config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("sampling_rate")?.as_u64())
        .and_then(|r| u32::try_from(r).ok())
        .filter(|&r| r > 0)
        .unwrap_or(DEFAULT_RATE)
}

/// `seconds` of mono audio at `rate`: syllable-long voiced tones (a fundamental between 220 and 440 Hz with two
/// harmonics, a raised-cosine envelope, a short gap after each) over quiet deterministic white noise, with values
/// between -1 and 1. The same samples on every machine, so every unit hears the same clip.
pub fn synthetic(rate: u32, seconds: f64) -> Vec<f32> {
    const SYLLABLE_S: f64 = 0.25;
    const PITCHES: [f64; 8] = [220.0, 330.0, 262.0, 392.0, 294.0, 440.0, 247.0, 349.0];
    let rate = f64::from(rate.max(1));
    let n = (seconds * rate) as usize;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut noise = move || {
        // xorshift64*: uniform in [-1, 1).
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    };
    (0..n)
        .map(|i| {
            let t = i as f64 / rate;
            let syllable = (t / SYLLABLE_S) as usize;
            let phase = (t % SYLLABLE_S) / SYLLABLE_S;
            let f0 = PITCHES[syllable % PITCHES.len()];
            let envelope = if phase < 0.8 { (std::f64::consts::PI * phase / 0.8).sin().powi(2) } else { 0.0 };
            let voice: f64 =
                (1..=3).map(|h| (2.0 * std::f64::consts::PI * f64::from(h) * f0 * t).sin() / f64::from(h)).sum::<f64>();
            (0.25 * envelope * voice + 0.01 * noise()) as f32
        })
        .collect()
}

/// One transcription, as measured.
#[derive(Debug, Clone)]
pub struct Run {
    /// Round trip.
    pub wall_ms: f64,
    /// The worker's stages.
    pub stages: SpeechTiming,
    pub text: String,
    pub language: Option<String>,
    /// Token ids, segment after segment.
    pub token_ids: Vec<i64>,
    /// Resident memory of the worker after it.
    pub rss_bytes: u64,
}

/// Transcribes the clip once; an answer that is not a transcript is an engine error naming what came.
pub async fn transcribe(worker: &mut Worker, clip: &Clip) -> Result<Run, ClientError> {
    let ran = worker.run(&clip.payload).await?;
    let Answer::Transcription(t) = ran.answer else {
        return Err(ClientError::Run(RunError::Engine(format!(
            "expected a transcription, got {} rows of another answer",
            ran.answer.rows()
        ))));
    };
    Ok(Run {
        wall_ms: ran.wall_ms,
        stages: t.timing,
        token_ids: t.segments.iter().flat_map(|s| s.tokens.iter().copied()).collect(),
        text: t.text,
        language: t.language,
        rss_bytes: ran.rss_bytes,
    })
}

/// A first, untimed transcription, then timed ones: at least `timed.iterations`, for at least `timed.at_least`;
/// `tick(n)` after the `n`-th timed one. A failure says which transcription (0 is the first).
pub async fn runs(
    worker: &mut Worker,
    clip: &Clip,
    timed: Timed,
    tick: &mut dyn FnMut(usize),
) -> Result<(Run, Vec<Run>), (usize, ClientError)> {
    let first = transcribe(worker, clip).await.map_err(|e| (0, e))?;
    let mut timed_runs = vec![];
    let t0 = Instant::now();
    while timed_runs.len() < timed.iterations || t0.elapsed() < timed.at_least {
        timed_runs.push(transcribe(worker, clip).await.map_err(|e| (timed_runs.len() + 1, e))?);
        tick(timed_runs.len());
    }
    Ok((first, timed_runs))
}

/// The doctor's measurement of a speech unit: `--predictions` timed transcriptions after a first one; their speed,
/// the first transcript's token ids and whether every run wrote the same, and resident memory after each (the
/// memory section, and the leak finding when it grows per transcription).
pub async fn measure(
    plan: &Plan<'_>,
    clip: &Clip,
    worker: &mut Worker,
    r: &mut UnitReport,
    progress: &mut Progress,
) -> Result<(), Failed> {
    let n = plan.options.predictions;
    progress.phase(&r.unit, &format!("{n} transcriptions of a {:.0} s clip", clip.seconds));
    let timed = Timed { iterations: n, at_least: std::time::Duration::ZERO };
    let mut tick = |i: usize| progress.tick(i, n);
    let (first, timed_runs) = runs(worker, clip, timed, &mut tick)
        .await
        .map_err(|(i, e)| (e, format!("predicting (transcription {} of the clip)", i + 1)))?;
    let speed = media::speech_speed(clip.seconds, first.wall_ms, &timed_runs);
    let deterministic = timed_runs.iter().all(|x| x.token_ids == first.token_ids);
    r.memory =
        Some(analyze::memory(timed_runs.iter().map(|x| x.rss_bytes).collect(), 1, plan.options.memory_budget_mb));
    r.speech = Some(SpeechReport {
        speed,
        text: first.text,
        language: first.language,
        token_ids: first.token_ids,
        deterministic,
        agreement: None,
    });
    r.findings.extend(media::speech_findings(r));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clip_is_fixed_bounded_and_not_silent() {
        let a = synthetic(16_000, 1.0);
        assert_eq!(a.len(), 16_000);
        assert_eq!(a, synthetic(16_000, 1.0), "the same samples every time");
        assert!(a.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
        let rms = (a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
        assert!(rms > 0.05 && rms < 0.5, "rms {rms}");
    }
}
