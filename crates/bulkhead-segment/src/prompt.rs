//! Prompts from original-image pixels to the model's input, checked first, and masks back to the original size.

use bulkhead_image::sam2::{map_box, map_point, post_process_masks, BoxPrompt, Point};
use bulkhead_image::{Mask, PromptError, Size};

use crate::job::{Masks, Prompt};

/// Why a prompt was refused: all client errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptRefusal {
    /// A point or box is outside the image or not finite.
    #[error(transparent)]
    Bad(#[from] PromptError),
    /// Neither a point nor a box.
    #[error("no prompt: give at least one point (`points`, with `point_labels` 1 foreground / 0 background) or a box")]
    Empty,
    /// More than one box (each box is its own object: send one request per box).
    #[error("{0} boxes given; one box per request (send one request per object)")]
    TooManyBoxes(usize),
    /// `point_labels` does not match `points`, or a label other than 0 or 1.
    #[error("{0}")]
    Labels(String),
}

/// A prompt mapped to the model's input, with the original size it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedPrompt {
    /// The prompt in model-input coordinates.
    pub prompt: Prompt,
    /// The original image size (for the masks' way back).
    pub original: Size,
}

impl MappedPrompt {
    /// Checks `points` (with `labels`: one per point, 1 or 0; all 1 when `None`) and `boxes` against an image of
    /// `original` size and maps them to the `target` x `target` model input.
    pub fn new(
        points: &[[f32; 2]],
        labels: Option<&[i64]>,
        boxes: &[[f32; 4]],
        original: Size,
        target: u32,
    ) -> Result<MappedPrompt, PromptRefusal> {
        if points.is_empty() && boxes.is_empty() {
            return Err(PromptRefusal::Empty);
        }
        if boxes.len() > 1 {
            return Err(PromptRefusal::TooManyBoxes(boxes.len()));
        }
        let labels: Vec<i64> = match labels {
            None => vec![1; points.len()],
            Some(l) if l.len() != points.len() => {
                return Err(PromptRefusal::Labels(format!(
                    "{} point labels for {} points; give one label (1 foreground, 0 background) per point",
                    l.len(),
                    points.len()
                )))
            }
            Some(l) => {
                if let Some(bad) = l.iter().find(|&&v| v != 0 && v != 1) {
                    return Err(PromptRefusal::Labels(format!(
                        "point label {bad} is not 1 (foreground) or 0 (background)"
                    )));
                }
                l.to_vec()
            }
        };
        let mut mapped = Prompt { labels: labels.clone(), ..Prompt::default() };
        for (p, &label) in points.iter().zip(&labels) {
            mapped.points.push(map_point(Point { x: p[0], y: p[1], foreground: label == 1 }, original, target)?);
        }
        for b in boxes {
            mapped.boxes.push(map_box(BoxPrompt { x0: b[0], y0: b[1], x1: b[2], y1: b[3] }, original, target)?);
        }
        Ok(MappedPrompt { prompt: mapped, original })
    }
}

/// The worker's low-resolution logits as binary masks of the `original` size (bilinear upscaling, threshold 0:
/// transformers' `post_process_masks`).
pub fn final_masks(masks: &Masks, original: Size) -> Result<Vec<Mask>, PromptError> {
    let low = Size { height: masks.side as u32, width: masks.side as u32 };
    post_process_masks(&masks.logits, masks.count, low, original, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_checked_and_mapped() {
        let original = Size { height: 150, width: 200 };
        let m = MappedPrompt::new(&[[80.0, 75.0]], None, &[], original, 128).unwrap();
        assert_eq!(m.prompt.points, vec![[80.0 * (128.0 / 200.0) as f32, 75.0 * (128.0 / 150.0) as f32]]);
        assert_eq!(m.prompt.labels, vec![1]);
        let b = MappedPrompt::new(&[], None, &[[10.0, 20.0, 100.0, 120.0]], original, 128).unwrap();
        assert_eq!(b.prompt.boxes.len(), 1);
        assert_eq!(MappedPrompt::new(&[], None, &[], original, 128), Err(PromptRefusal::Empty));
        let out = MappedPrompt::new(&[[201.0, 1.0]], None, &[], original, 128).unwrap_err();
        assert!(out.to_string().contains("outside the 200x150 image"), "{out}");
        let two = [[0.0, 0.0, 1.0, 1.0]; 2];
        assert_eq!(MappedPrompt::new(&[], None, &two, original, 128), Err(PromptRefusal::TooManyBoxes(2)));
        assert!(matches!(
            MappedPrompt::new(&[[1.0, 1.0]], Some(&[1, 0]), &[], original, 128),
            Err(PromptRefusal::Labels(_))
        ));
        assert!(matches!(
            MappedPrompt::new(&[[1.0, 1.0]], Some(&[2]), &[], original, 128),
            Err(PromptRefusal::Labels(_))
        ));
    }
}
