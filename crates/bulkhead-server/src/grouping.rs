//! Length grouping: how the rows of a batch are cut into forward passes, as pure functions.
//!
//! A forward pass pads every row to its longest, so a batch of 32 ten-token queries and one 256-token passage costs
//! 33 x 256 tokens, of which 96% are padding. The batcher therefore sorts a batch's rows by length and cuts them into
//! groups ([`cut`]), each run as its own forward pass: a row joins the group of the rows just shorter than it only
//! while the group's padding stays within [`Grouping::max_padding_share`] of its real tokens (or within
//! [`Grouping::padding_allowance`] tokens per row: short rows of a few tokens' difference cost less padded together
//! than as separate, smaller passes), and the group stays within the pass budget ([`PassBudget`]: rows, and padded
//! tokens).
//!
//! With grouping off ([`Grouping::OFF`]) a batch is cut by the budget alone, and a request joins a forming batch
//! only while the whole batch, padded to its longest row, fits the budget ([`admits`]): the behaviour before
//! grouping, kept to measure against.

use std::ops::Range;

/// How a batch is cut into forward passes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grouping {
    /// Padding tokens a pass may carry per real token (0.15: padding at most 15% of the real tokens); `None` turns
    /// grouping off.
    pub max_padding_share: Option<f64>,
    /// Padding tokens per row any pass may carry whatever the share: splitting off a pass costs a dispatch, a
    /// forward call and a smaller batch, which for short rows outweighs a few tokens of padding each.
    pub padding_allowance: usize,
}

impl Grouping {
    /// The default share of padding a forward pass may carry.
    pub const DEFAULT_MAX_PADDING_SHARE: f64 = 0.15;
    /// The default padding per row any pass may carry.
    pub const DEFAULT_PADDING_ALLOWANCE: usize = 8;
    /// No grouping: a batch is cut by the pass budget alone.
    pub const OFF: Grouping = Grouping { max_padding_share: None, padding_allowance: 0 };

    /// Whether rows are grouped by length.
    pub fn is_on(&self) -> bool {
        self.max_padding_share.is_some()
    }

    /// Whether a pass of `shape` keeps its padding within the limits (always true with grouping off).
    pub fn accepts(&self, shape: Shape) -> bool {
        match self.max_padding_share {
            None => true,
            Some(share) => {
                let padding = shape.padding();
                padding <= self.padding_allowance.saturating_mul(shape.rows)
                    || padding as f64 <= share * shape.real as f64
            }
        }
    }
}

impl Default for Grouping {
    fn default() -> Self {
        Grouping {
            max_padding_share: Some(Grouping::DEFAULT_MAX_PADDING_SHARE),
            padding_allowance: Grouping::DEFAULT_PADDING_ALLOWANCE,
        }
    }
}

/// What one forward pass may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassBudget {
    /// Rows.
    pub rows: usize,
    /// Padded tokens (rows x longest row).
    pub tokens: usize,
}

impl PassBudget {
    /// Whether `rows` rows padded to `longest` fit.
    pub fn fits(&self, rows: usize, longest: usize) -> bool {
        rows <= self.rows && rows.saturating_mul(longest) <= self.tokens
    }
}

/// The size of a forward pass: its rows, their real tokens, and the tokens it computes once padded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Rows.
    pub rows: usize,
    /// Tokens of the rows themselves.
    pub real: usize,
    /// Rows x the longest row.
    pub padded: usize,
}

impl Shape {
    /// The shape of a pass over rows of these lengths.
    pub fn of(lengths: &[usize]) -> Shape {
        let longest = lengths.iter().copied().max().unwrap_or(0);
        Shape { rows: lengths.len(), real: lengths.iter().sum(), padded: lengths.len() * longest }
    }

    /// Padding tokens.
    pub fn padding(&self) -> usize {
        self.padded.saturating_sub(self.real)
    }
}

/// Sums two shapes (for the passes a request's rows went through).
impl std::ops::Add for Shape {
    type Output = Shape;

    fn add(self, other: Shape) -> Shape {
        Shape { rows: self.rows + other.rows, real: self.real + other.real, padded: self.padded + other.padded }
    }
}

/// Cuts rows sorted by length (shortest first) into groups, one forward pass each, as ranges of `sorted`.
///
/// A row joins the current group when the group with it fits `budget` and, with grouping on, keeps its padding
/// within the limits of `grouping`; otherwise it starts the next group. A row alone is always a group (the budget
/// cannot split a row). Every index is in exactly one range, in order.
pub fn cut(sorted: &[usize], budget: PassBudget, grouping: Grouping) -> Vec<Range<usize>> {
    let mut groups = vec![];
    let mut start = 0;
    let mut real = 0;
    for (i, &len) in sorted.iter().enumerate() {
        let rows = i - start + 1;
        let joined = Shape { rows, real: real + len, padded: rows * len };
        if i > start && !(budget.fits(rows, len) && grouping.accepts(joined)) {
            groups.push(start..i);
            start = i;
            real = 0;
        }
        real += len;
    }
    if start < sorted.len() {
        groups.push(start..sorted.len());
    }
    groups
}

/// The batch forming in the queue so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forming {
    /// Rows.
    pub rows: usize,
    /// The longest row.
    pub longest: usize,
    /// Real tokens.
    pub real: usize,
}

impl Forming {
    /// The batch with one more request of `rows` rows, the longest `longest`, `real` tokens in all.
    pub fn with(self, rows: usize, longest: usize, real: usize) -> Forming {
        Forming { rows: self.rows + rows, longest: self.longest.max(longest), real: self.real + real }
    }
}

/// Whether a forming batch may be dispatched as `next`: it holds at most `budget.rows` rows, and, with grouping
/// off, fits the budget padded to its longest row; with grouping on, its real tokens fit the token budget (its
/// groups are cut afterwards, each within the budget).
pub fn admits(next: Forming, budget: PassBudget, grouping: Grouping) -> bool {
    if grouping.is_on() {
        next.rows <= budget.rows && next.real <= budget.tokens
    } else {
        budget.fits(next.rows, next.longest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: PassBudget = PassBudget { rows: 64, tokens: 16_384 };

    fn groups_of(sorted: &[usize], grouping: Grouping) -> Vec<Vec<usize>> {
        cut(sorted, BUDGET, grouping).into_iter().map(|r| sorted[r].to_vec()).collect()
    }

    fn on(share: f64, allowance: usize) -> Grouping {
        Grouping { max_padding_share: Some(share), padding_allowance: allowance }
    }

    #[test]
    fn one_long_row_among_short_ones_gets_its_own_pass() {
        let mut rows = vec![12; 32];
        rows.push(256);
        let groups = groups_of(&rows, Grouping::default());
        assert_eq!(groups, vec![vec![12; 32], vec![256]]);
        // Without grouping the 33 rows share one pass padded to 256: 96% of it is padding.
        let off = groups_of(&rows, Grouping::OFF);
        assert_eq!(off.len(), 1);
        let s = Shape::of(&off[0]);
        assert_eq!((s.real, s.padded), (32 * 12 + 256, 33 * 256));
    }

    #[test]
    fn every_group_keeps_its_padding_within_the_share_or_the_allowance() {
        // A retrieval mix: short queries and passages of 60-230 tokens, sorted.
        let mut rows: Vec<usize> = (0..80).map(|i| 6 + i % 15).chain((0..20).map(|i| 60 + i * 9)).collect();
        rows.sort_unstable();
        for grouping in [on(0.10, 0), on(0.15, 8), on(0.25, 2), on(0.0, 0)] {
            let groups = cut(&rows, BUDGET, grouping);
            let flat: Vec<usize> = groups.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(flat, (0..rows.len()).collect::<Vec<_>>(), "every row once, in order");
            for g in &groups {
                let s = Shape::of(&rows[g.clone()]);
                let share = grouping.max_padding_share.unwrap();
                assert!(
                    s.rows == 1
                        || s.padding() <= grouping.padding_allowance * s.rows
                        || s.padding() as f64 <= share * s.real as f64,
                    "{grouping:?}: group {:?} pads {} of {}",
                    &rows[g.clone()],
                    s.padding(),
                    s.real
                );
                assert!(BUDGET.fits(s.rows, rows[g.end - 1]));
            }
        }
    }

    #[test]
    fn a_share_of_zero_groups_only_equal_lengths() {
        let groups = groups_of(&[3, 3, 4, 4, 4, 9], on(0.0, 0));
        assert_eq!(groups, vec![vec![3, 3], vec![4, 4, 4], vec![9]]);
    }

    #[test]
    fn the_allowance_keeps_short_rows_of_different_lengths_together() {
        // 16 rows of 8-15 tokens pad 56 tokens (30% of 184): 3.5 per row, within an allowance of 4, not within 15%.
        let rows: Vec<usize> = (8..16).flat_map(|n| [n, n]).collect();
        assert_eq!(groups_of(&rows, on(0.15, 4)).len(), 1);
        assert!(groups_of(&rows, on(0.15, 3)).len() > 1);
        assert!(groups_of(&rows, on(0.15, 0)).len() > 1);
    }

    #[test]
    fn the_budget_cuts_even_rows_of_one_length() {
        let groups = cut(&[100; 10], PassBudget { rows: 4, tokens: 16_384 }, Grouping::default());
        assert_eq!(groups, vec![0..4, 4..8, 8..10]);
        let groups = cut(&[100; 10], PassBudget { rows: 64, tokens: 350 }, Grouping::OFF);
        assert_eq!(groups, vec![0..3, 3..6, 6..9, 9..10]);
        // A row longer than the token budget still runs, alone.
        assert_eq!(cut(&[5, 1000], PassBudget { rows: 64, tokens: 512 }, Grouping::default()), vec![0..1, 1..2]);
        assert!(cut(&[], BUDGET, Grouping::default()).is_empty());
    }

    #[test]
    fn admission_counts_padding_only_without_grouping() {
        let budget = PassBudget { rows: 64, tokens: 1024 };
        let forming = Forming::default().with(30, 12, 360);
        // One 256-token request: padded, 31 x 256 tokens do not fit; grouped, 616 real tokens do.
        let next = forming.with(1, 256, 256);
        assert!(!admits(next, budget, Grouping::OFF));
        assert!(admits(next, budget, Grouping::default()));
        assert!(!admits(forming.with(40, 12, 480), budget, Grouping::default()), "rows are still capped");
        assert!(!admits(forming.with(1, 800, 800), budget, Grouping::default()), "and real tokens");
    }

    #[test]
    fn shapes_add_up() {
        let s = Shape::of(&[2, 5]);
        assert_eq!((s.rows, s.real, s.padded, s.padding()), (2, 7, 10, 3));
        assert_eq!(s + Shape::of(&[4]), Shape { rows: 3, real: 11, padded: 14 });
        assert_eq!(Shape::of(&[]), Shape::default());
    }
}
