//! Long audio cut into 30 s windows as openai-whisper's `transcribe` does, on the 45 s clip, against windows
//! computed by openai-whisper's own `log_mel_spectrogram(audio, padding=N_SAMPLES)` (float32 torch).

mod common;

use common::{clip, decoded, extractor, max_diff};

#[test]
fn the_45s_clip_is_two_windows_as_openai_whisper_cuts_it() {
    let pcm = decoded("long-45s.mp3");
    let entry = clip("long-45s.mp3");
    for f in entry["features"].as_array().unwrap().iter().filter(|f| f["mode"] == "openai_windows") {
        let config = f["config"].as_str().unwrap();
        let long = extractor(config).long_form(&pcm.samples);
        assert_eq!(long.content_frames() as u64, f["content_frames"].as_u64().unwrap(), "{config}");
        let windows: Vec<_> = long.windows().collect();
        let want = f["windows"].as_array().unwrap();
        assert_eq!(windows.len(), want.len(), "{config}: windows");
        for (w, r) in windows.iter().zip(want) {
            assert_eq!(w.seek as u64, r["seek"].as_u64().unwrap());
            assert_eq!(w.segment_frames as u64, r["segment_size"].as_u64().unwrap());
            assert_eq!((w.features.n_frames, w.features.valid_frames), (3000, w.segment_frames));
            let diff = max_diff(&w.features, r);
            println!("long-45s.mp3 {config:14} window at seek {:5} max |ours - openai-whisper| = {diff:.2e}", w.seek);
            // An MP3 decoded by us, the reference by ffmpeg (see tests/features.rs on lossy clips).
            assert!(diff <= 5e-4, "{config} seek {}: {diff:e}", w.seek);
        }
        assert_eq!((windows[0].start_s, windows[1].start_s, windows[1].duration_s), (0.0, 30.0, 15.0));
    }
}

#[test]
fn any_seek_is_served_and_past_the_end_is_none() {
    let pcm = decoded("long-45s.mp3");
    let long = extractor("whisper-80").long_form(&pcm.samples);
    let from_start = long.window(0).unwrap();
    // A decoder that stopped at a timestamp 27.5 s in resumes there.
    let resumed = long.window(2750).unwrap();
    assert_eq!((resumed.segment_frames, resumed.start_s), (1750, 27.5));
    for m in [0, 40, 79] {
        assert_eq!(resumed.features.row(m)[..250], from_start.features.row(m)[2750..], "the same frames, mel {m}");
    }
    assert!(long.window(4500).is_none());
    // A clip shorter than a window is one window.
    let short = extractor("whisper-80").long_form(&decoded("speech.wav").samples);
    assert_eq!(short.windows().count(), 1);
}
