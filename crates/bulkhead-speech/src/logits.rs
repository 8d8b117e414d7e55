//! The logits processors of Whisper's `generate`, in transformers' order: `SuppressTokensAtBeginLogitsProcessor`
//! (`begin_suppress_tokens` at the first generated position), `SuppressTokensLogitsProcessor` (`suppress_tokens`
//! everywhere) and, with timestamps, `WhisperTimeStampLogitsProcessor`: no `<|notimestamps|>`; timestamps come in
//! pairs (after a pair, text; after a lone timestamp, a timestamp or end of text); timestamps never decrease; the
//! first token is a timestamp no later than `max_initial_timestamp_index`; and when the timestamps together are more
//! probable than the most probable text token, a timestamp is forced. Then the greedy choice: the first maximum.

/// The rules of one decoding, token ids as indices into the logits.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub suppress: Vec<usize>,
    pub begin_suppress: Vec<usize>,
    pub timestamps: Option<TimestampRules>,
}

/// What `WhisperTimeStampLogitsProcessor` needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimestampRules {
    /// `<|notimestamps|>`.
    pub no_timestamps: usize,
    /// `<|0.00|>`: every id from here on is a timestamp.
    pub begin: usize,
    /// End of text: after a lone timestamp every id below it is forbidden.
    pub eot: usize,
    /// `max_initial_timestamp_index`.
    pub max_initial: Option<i64>,
}

const NEG: f32 = f32::NEG_INFINITY;

impl Rules {
    /// Applies the processors to the logits of the next position; `generated` are the tokens generated so far in
    /// this window (transformers' `input_ids[begin_index:]`).
    pub fn apply(&self, scores: &mut [f32], generated: &[i64]) {
        if generated.is_empty() {
            for &t in &self.begin_suppress {
                scores[t] = NEG;
            }
        }
        for &t in &self.suppress {
            scores[t] = NEG;
        }
        if let Some(ts) = &self.timestamps {
            ts.apply(scores, generated);
        }
    }
}

impl TimestampRules {
    fn apply(&self, scores: &mut [f32], seq: &[i64]) {
        let len = scores.len();
        let begin = self.begin.min(len);
        let is_ts = |t: i64| t >= self.begin as i64;
        scores[self.no_timestamps] = NEG;
        let last_was_ts = seq.last().is_some_and(|&t| is_ts(t));
        let penultimate_was_ts = seq.len() < 2 || is_ts(seq[seq.len() - 2]);
        if last_was_ts {
            if penultimate_was_ts {
                scores[begin..].fill(NEG);
            } else {
                scores[..self.eot.min(len)].fill(NEG);
            }
        }
        let mut timestamp_last = self.begin;
        if let Some(&last) = seq.iter().rev().find(|&&t| is_ts(t)) {
            timestamp_last = if last_was_ts && !penultimate_was_ts { last as usize } else { last as usize + 1 };
        }
        scores[begin..timestamp_last.clamp(begin, len)].fill(NEG);
        if seq.is_empty() {
            scores[..begin].fill(NEG);
            if let Some(m) = self.max_initial {
                let first_banned = (self.begin as i64 + m + 1).clamp(0, len as i64) as usize;
                scores[first_banned..].fill(NEG);
            }
        }
        // log_softmax shifts every score alike: compare logsumexp(timestamps) with the best text score directly.
        let max_text = scores[..begin].iter().copied().fold(NEG, f32::max);
        let timestamp_logsumexp = logsumexp(&scores[begin..]);
        if timestamp_logsumexp > f64::from(max_text) {
            scores[..begin].fill(NEG);
        }
    }
}

fn logsumexp(xs: &[f32]) -> f64 {
    let m = xs.iter().copied().fold(NEG, f32::max);
    if m == NEG {
        return f64::NEG_INFINITY;
    }
    let m = f64::from(m);
    m + xs.iter().map(|&x| (f64::from(x) - m).exp()).sum::<f64>().ln()
}

/// The index of the first maximum (torch's `argmax`).
pub(crate) fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 text ids (0..9; 5 is end of text), `<|notimestamps|>` 10, timestamps 11..15.
    fn rules(max_initial: Option<i64>) -> Rules {
        Rules {
            suppress: vec![2],
            begin_suppress: vec![5],
            timestamps: Some(TimestampRules { no_timestamps: 10, begin: 11, eot: 5, max_initial }),
        }
    }

    fn allowed(r: &Rules, scores: &[f32], generated: &[i64]) -> Vec<usize> {
        let mut s = scores.to_vec();
        r.apply(&mut s, generated);
        (0..s.len()).filter(|&i| s[i] > NEG).collect()
    }

    #[test]
    fn first_token_is_an_early_timestamp() {
        let flat = vec![0.0; 16];
        assert_eq!(allowed(&rules(Some(1)), &flat, &[]), vec![11, 12]);
        assert_eq!(allowed(&rules(None), &flat, &[]), vec![11, 12, 13, 14, 15]);
    }

    #[test]
    fn timestamps_pair_and_never_decrease() {
        let mut text_heavy = vec![0.0; 16];
        text_heavy[..10].fill(5.0);
        // The first timestamp opens a segment: text follows.
        assert_eq!(allowed(&rules(None), &text_heavy, &[12]), vec![0, 1, 3, 4, 5, 6, 7, 8, 9]);
        // After a lone timestamp that closes text: no text below end of text; timestamps from it on.
        assert_eq!(allowed(&rules(None), &text_heavy, &[3, 12]), vec![5, 6, 7, 8, 9, 12, 13, 14, 15]);
        // After a pair: text only (the timestamps' total is below the best text score).
        assert_eq!(allowed(&rules(None), &text_heavy, &[12, 13]), vec![0, 1, 3, 4, 5, 6, 7, 8, 9]);
        // After text: later timestamps than the last one, or text.
        assert_eq!(allowed(&rules(None), &text_heavy, &[12, 3]), vec![0, 1, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15]);
    }

    #[test]
    fn probable_timestamps_are_forced() {
        let mut s = vec![0.0; 16];
        s[11..].fill(1.0); // logsumexp of five 1.0 = 2.6 > 0.0
        assert_eq!(allowed(&rules(None), &s, &[3]), vec![11, 12, 13, 14, 15]);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 0.0]), 1);
    }
}
