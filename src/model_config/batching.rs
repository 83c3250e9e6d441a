//! `[batching]`: how requests for one model version queue and merge.

use std::time::Duration;

use serde::Deserialize;

/// The `[batching]` table: how requests for one model version queue and merge.
///
/// Every version has one bounded queue, batching or not, so overload control
/// applies to every model: a request that finds the queue full is refused at once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Merge queued requests into one run. Default false: request by request.
    /// Only models whose inputs and outputs all have a variable first dimension
    /// are batched; others run request by request whatever this says.
    pub enabled: bool,
    /// Most rows in one merged run. Default 32. A single request with more rows
    /// still runs, alone.
    pub max_batch_size: usize,
    /// How long the oldest queued request may wait for others to join its batch,
    /// in microseconds. Default 0: a batch holds whatever queued while the model
    /// was busy, and never waits for more.
    pub max_queue_delay_micros: u64,
    /// Batch sizes the model runs best at; a batch of one of these sizes closes at
    /// once, and a closing batch is cut to the largest of them it can fill.
    /// Default none.
    pub preferred_batch_sizes: Vec<usize>,
    /// Most requests waiting in this version's queue; one more is refused with
    /// 429 / RESOURCE_EXHAUSTED. Default 512.
    pub max_queue_length: usize,
    /// Batches of this version that may run at once (on different inference
    /// threads). Default 1. For ONNX models raise `onnx_sessions` with it, as a
    /// session runs one batch at a time.
    pub instances: usize,
    /// A batch whose run is expected (from this version's recent runs, per row)
    /// to take less than this many microseconds runs on the thread that closes it,
    /// instead of being handed to an inference thread and back: for a model that
    /// cheap the two thread switches cost more than the model. Default 50; 0
    /// always hands off. Slower models never run on the async workers.
    pub inline_max_micros: u64,
}

impl Default for BatchingConfig {
    fn default() -> BatchingConfig {
        BatchingConfig {
            enabled: false,
            max_batch_size: 32,
            max_queue_delay_micros: 0,
            preferred_batch_sizes: Vec::new(),
            max_queue_length: 512,
            instances: 1,
            inline_max_micros: 50,
        }
    }
}

impl BatchingConfig {
    /// Upper bounds that keep a typo from becoming a minute-long wait or a
    /// gigabyte batch. The TF Serving flag layer checks a batching parameters
    /// file's fields against them in the file's own terms.
    pub(crate) const MAX_BATCH_SIZE: usize = 65_536;
    pub(crate) const MAX_DELAY_MICROS: u64 = 10_000_000;
    pub(crate) const MAX_QUEUE_LENGTH: usize = 1_000_000;
    pub(crate) const MAX_INSTANCES: usize = 256;
    const MAX_INLINE_MICROS: u64 = 1_000;

    pub(crate) fn validate(&self) -> Result<(), String> {
        let in_range = |name: &str, v: usize, max: usize| {
            if v == 0 || v > max {
                Err(format!(
                    "batching.{name} must be between 1 and {max}, not {v}"
                ))
            } else {
                Ok(())
            }
        };
        in_range("max_batch_size", self.max_batch_size, Self::MAX_BATCH_SIZE)?;
        in_range(
            "max_queue_length",
            self.max_queue_length,
            Self::MAX_QUEUE_LENGTH,
        )?;
        in_range("instances", self.instances, Self::MAX_INSTANCES)?;
        if self.inline_max_micros > Self::MAX_INLINE_MICROS {
            return Err(format!(
                "batching.inline_max_micros must be at most {} (1 ms: longer runs belong on the inference threads), not {}",
                Self::MAX_INLINE_MICROS,
                self.inline_max_micros
            ));
        }
        if self.max_queue_delay_micros > Self::MAX_DELAY_MICROS {
            return Err(format!(
                "batching.max_queue_delay_micros must be at most {} (10 s), not {}",
                Self::MAX_DELAY_MICROS,
                self.max_queue_delay_micros
            ));
        }
        if let Some(bad) = self
            .preferred_batch_sizes
            .iter()
            .find(|&&s| s == 0 || s > self.max_batch_size)
        {
            return Err(format!(
                "batching.preferred_batch_sizes: {bad} is not between 1 and max_batch_size ({})",
                self.max_batch_size
            ));
        }
        Ok(())
    }

    pub fn max_queue_delay(&self) -> Duration {
        Duration::from_micros(self.max_queue_delay_micros)
    }

    pub fn inline_max(&self) -> Duration {
        Duration::from_micros(self.inline_max_micros)
    }
}
