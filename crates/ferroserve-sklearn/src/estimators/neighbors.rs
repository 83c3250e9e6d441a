//! `KNeighborsClassifier` and `KNeighborsRegressor`, by brute force over `_fit_X`.
//!
//! Which of several equally distant training rows are the neighbours, and in which
//! order they are summed, is decided by scikit-learn's own bookkeeping, so for
//! `algorithm="brute"` that bookkeeping is replayed step by step (scikit-learn 1.9,
//! `sklearn/metrics/_pairwise_distances_reduction`):
//!
//! - Distances. The euclidean metric (`"euclidean"`, or minkowski with p=2) is
//!   `EuclideanArgKmin`'s GEMM expansion `max(0, (|x|^2 + -2 x.y) + |y|^2)`, with fused
//!   multiply-adds as OpenBLAS's kernels do; every other metric (`"l2"` included) is
//!   `DistanceMetric.rdist`, summed in feature order. On integer-valued features of
//!   moderate size both are exact, so rows tie exactly where scikit-learn's tie.
//! - Selection. `heap_push` (`sklearn/utils/_heap.pyx`) keeps a max-heap of k: a value
//!   enters only when strictly below the root, which it replaces before sifting down.
//!   Among equal distances the survivors are therefore neither the lowest nor the
//!   highest indices but whatever the heap's shape leaves.
//! - `ArgKmin` (`kneighbors`: the regressor, the distance-weighted classifier and the
//!   uniform classifier with the euclidean metric) cuts the training rows into chunks of
//!   256. With strategy "parallel_on_Y", which scikit-learn picks for a batch no larger
//!   than the training set, each of its T OpenMP threads pushes a contiguous run of
//!   chunks (OpenMP's static schedule) onto heaps of its own, and those heaps are then
//!   pushed, thread by thread and in heap order, onto the final heap. "parallel_on_X"
//!   (larger batches) feeds one heap every training row in order. Either way
//!   `simultaneous_sort` orders the result: introsort from 1.9, a recursive quicksort
//!   before (the version the model was saved with decides).
//! - `ArgKminClassMode` (the uniform classifier with any other metric, scikit-learn 1.3
//!   and later) always runs "parallel_on_X" and only counts classes.
//! - Votes and averages sum the neighbours' weights in scikit-learn's order, with numpy's
//!   own summation (`estimators::numpy_sum`), so a close distance-weighted vote goes the
//!   way scikit-learn's goes.
//!
//! T is scikit-learn's OpenMP thread count (by default the machine's cores), which
//! nothing in the model records. With one chunk (at most 256 training rows) every T
//! and both strategies keep the same neighbours, so the answer is exact. With more
//! chunks, a tie at the k-th place can be settled differently for different T, and
//! then scikit-learn itself answers differently on different machines. Such a row is
//! replayed for every T from 1 to the number of chunks (more threads than chunks act
//! as that many) and answered only if the neighbours that weigh anything have the same
//! weights and targets every time (for `predict`, only if the class is the same);
//! otherwise it is refused with a 400 that says why. Models of more than
//! `MAX_REPLAYED_CHUNKS * 256` training rows refuse such rows without replaying. The
//! order of tied neighbours, which moves only the last bits of a regressor's average,
//! is reported as scikit-learn orders them on a 2-core machine (2 threads, a batch no
//! larger than the training set); a distance-weighted vote so close that this order
//! could flip it is checked under every T and both strategies likewise. A distance
//! that overflows f64 is refused. scikit-learn's `pairwise_dist_chunk_size` setting is
//! assumed left at its default.
//!
//! KD and ball trees visit rows in tree order, and brute force before scikit-learn 1.2
//! (the oldest version the fixtures check) is not replayed either: when a tie straddles
//! the k-th neighbour of such a model, the row is refused rather than guessed.

use super::access::{as_f64, Obj, SkVersion};
use super::{argmax, check_finite, check_width, ClassLabels, Classifier, MatrixRef, Regressor};
use crate::model::{ModelError, PredictError};
use crate::value::Value;

/// Training rows per chunk in scikit-learn's pairwise-distance reductions (the
/// `pairwise_dist_chunk_size` setting's default).
const CHUNK_SIZE: usize = 256;

/// The thread count whose order of tied neighbours is reported (scikit-learn's default
/// on a 2-core machine; for one chunk every count orders them alike).
const REPORTED_THREADS: usize = 2;

/// Above this many chunks, a row whose answer may depend on the thread count is refused
/// without replaying every count (each replay costs a pass over the training rows).
const MAX_REPLAYED_CHUNKS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    Euclidean,
    Manhattan,
    Chebyshev,
    Minkowski(f64),
}

/// Which scikit-learn search finds a row's neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    /// `ArgKmin` with strategy "auto" (`kneighbors` of a brute-force model).
    ArgKmin,
    /// `ArgKminClassMode`: one heap over the training rows in order, never sorted.
    ClassMode,
    /// A KD or ball tree: the order it visits rows in is not replayed.
    Tree,
    /// Brute force in scikit-learn before 1.2, whose tie-breaking is not replayed.
    OldBrute,
}

/// How `simultaneous_sort` orders the final heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TieSort {
    /// scikit-learn 1.9 and later: introsort with 2-way partitions.
    Introsort,
    /// Before 1.9: a recursive quicksort with a median-of-three pivot.
    Quicksort,
}

/// One way scikit-learn's `ArgKmin` may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// "parallel_on_X": one heap fed every training row in order.
    OnX,
    /// "parallel_on_Y" with this many OpenMP threads.
    OnY { threads: usize },
}

/// A heap entry as scikit-learn holds it: the rank distance (`rdist`) and the training
/// row, or -1 in a thread's heap slot that no row filled.
type Entry = (f64, isize);

#[derive(Debug)]
struct Neighbors {
    fit_x: Vec<f64>,
    n_samples: usize,
    n_features: usize,
    k: usize,
    metric: Metric,
    distance_weights: bool,
    /// `|y|^2` of each training row (fused dot products), for the GEMM euclidean path.
    gemm_norms: Option<Vec<f64>>,
    search: Search,
    tie_sort: TieSort,
}

/// Buffers reused across the rows of one call.
#[derive(Debug, Default)]
struct Scratch {
    /// The rank distance from the row to every training row.
    dist: Vec<f64>,
    /// The neighbours reported, in scikit-learn's final order.
    found: Vec<Entry>,
    /// The neighbours under another strategy or thread count, for the checks.
    other: Vec<Entry>,
    /// The per-thread heaps of a "parallel_on_Y" replay.
    thread_heaps: Vec<Entry>,
    /// (rank distance, training row) pairs, for the selection of a search not replayed.
    ranked: Vec<(f64, usize)>,
    /// (training row, weight) of each neighbour.
    weighted: Vec<(usize, f64)>,
}

/// A dot product accumulated with fused multiply-adds, in order.
fn fma_dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        acc = x.mul_add(*y, acc);
    }
    acc
}

/// `heap_push` of `sklearn/utils/_heap.pyx`: pushes onto a fixed-size max-heap, keeping
/// its k smallest values.
fn heap_push(heap: &mut [Entry], value: f64, index: isize) {
    let size = heap.len();
    if value >= heap[0].0 {
        return;
    }
    let mut current = 0;
    loop {
        let left = 2 * current + 1;
        let right = left + 1;
        // A lone left child, or the larger child (the left one on a tie), moves up if
        // it is strictly larger than the value.
        let swap = if left >= size {
            break;
        } else if right >= size || heap[left].0 >= heap[right].0 {
            if value < heap[left].0 {
                left
            } else {
                break;
            }
        } else if value < heap[right].0 {
            right
        } else {
            break;
        };
        heap[current] = heap[swap];
        current = swap;
    }
    heap[current] = (value, index);
}

/// `simultaneous_sort` of `sklearn/utils/_sorting.pyx`, as of the model's version.
fn simultaneous_sort(entries: &mut [Entry], how: TieSort) {
    match how {
        TieSort::Introsort => {
            if !entries.is_empty() {
                // `2 * <intp_t>log2(n)`, C's double log2 truncated.
                let max_depth = 2 * ((entries.len() as f64).log2() as isize);
                introsort_2way(entries, max_depth);
            }
        }
        TieSort::Quicksort => quicksort(entries),
    }
}

fn introsort_2way(mut v: &mut [Entry], mut max_depth: isize) {
    while v.len() > 15 {
        if max_depth <= 0 {
            heapsort(v);
            return;
        }
        max_depth -= 1;
        let n = v.len();
        let pivot = inplace_median3(v);
        // The median-of-three step leaves v[0] <= pivot and v[n - 1] == pivot.
        let (mut i, mut j) = (1isize, n as isize - 2);
        loop {
            while i <= j && v[i as usize].0 < pivot {
                i += 1;
            }
            while i <= j && v[j as usize].0 > pivot {
                j -= 1;
            }
            if i >= j {
                break;
            }
            v.swap(i as usize, j as usize);
            i += 1;
            j -= 1;
        }
        let pivot_index = i as usize;
        v.swap(pivot_index, n - 1);
        let (left, right) = std::mem::take(&mut v).split_at_mut(pivot_index);
        introsort_2way(left, max_depth);
        v = &mut right[1..];
    }
    insertion_sort(v);
}

/// Moves the smallest of the first, middle and last values to the front, their median
/// to the end (the pivot, returned) and the largest to the middle.
fn inplace_median3(v: &mut [Entry]) -> f64 {
    let n = v.len();
    let middle = n / 2;
    if v[0].0 > v[n - 1].0 {
        v.swap(0, n - 1);
    }
    if v[n - 1].0 > v[middle].0 {
        v.swap(n - 1, middle);
        if v[0].0 > v[n - 1].0 {
            v.swap(0, n - 1);
        }
    }
    v[n - 1].0
}

fn heapsort(v: &mut [Entry]) {
    let n = v.len();
    let mut start = (n - 2) / 2;
    loop {
        sift_down(v, start, n);
        if start == 0 {
            break;
        }
        start -= 1;
    }
    let mut end = n - 1;
    while end > 0 {
        v.swap(0, end);
        sift_down(v, 0, end);
        end -= 1;
    }
}

fn sift_down(v: &mut [Entry], start: usize, end: usize) {
    let mut root = start;
    loop {
        let child = root * 2 + 1;
        let mut max_index = root;
        if child < end && v[max_index].0 < v[child].0 {
            max_index = child;
        }
        if child + 1 < end && v[max_index].0 < v[child + 1].0 {
            max_index = child + 1;
        }
        if max_index == root {
            break;
        }
        v.swap(root, max_index);
        root = max_index;
    }
}

fn insertion_sort(v: &mut [Entry]) {
    for i in 1..v.len() {
        let moving = v[i];
        let mut j = i;
        while j > 0 && v[j - 1].0 > moving.0 {
            v[j] = v[j - 1];
            j -= 1;
        }
        v[j] = moving;
    }
}

/// The quicksort of scikit-learn before 1.9. Its recursion on the right part is a
/// tail call, run here as a loop (the same steps, without a stack as deep as k when
/// many distances are equal).
fn quicksort(mut v: &mut [Entry]) {
    loop {
        let size = v.len();
        match size {
            0 | 1 => return,
            2 => {
                if v[0].0 > v[1].0 {
                    v.swap(0, 1);
                }
                return;
            }
            3 => {
                if v[0].0 > v[1].0 {
                    v.swap(0, 1);
                }
                if v[1].0 > v[2].0 {
                    v.swap(1, 2);
                    if v[0].0 > v[1].0 {
                        v.swap(0, 1);
                    }
                }
                return;
            }
            _ => {}
        }
        let pivot_value = inplace_median3(v);
        let mut store = 0;
        for i in 0..size - 1 {
            if v[i].0 < pivot_value {
                v.swap(i, store);
                store += 1;
            }
        }
        v.swap(store, size - 1);
        let (left, right) = std::mem::take(&mut v).split_at_mut(store);
        if store > 1 {
            quicksort(left);
        }
        if store + 2 >= size {
            return;
        }
        v = &mut right[1..];
    }
}

/// The neighbours `ArgKmin` (or, unsorted, `ArgKminClassMode`) finds for a row whose
/// rank distances to the training rows are `dist`.
fn replay_argkmin(
    dist: &[f64],
    k: usize,
    strategy: Strategy,
    sort: Option<TieSort>,
    thread_heaps: &mut Vec<Entry>,
    out: &mut Vec<Entry>,
) {
    out.clear();
    out.resize(k, (f64::MAX, 0));
    match strategy {
        Strategy::OnX => {
            for (j, &d) in dist.iter().enumerate() {
                heap_push(out, d, j as isize);
            }
        }
        Strategy::OnY { threads } => {
            let n = dist.len();
            let chunk = n.min(CHUNK_SIZE);
            let n_chunks = n.div_ceil(chunk);
            let n_threads = n_chunks.min(threads.max(1));
            thread_heaps.clear();
            thread_heaps.resize(n_threads * k, (f64::MAX, -1));
            // OpenMP's static schedule: contiguous runs, the first `n_chunks % n_threads`
            // threads taking one chunk more.
            let (per_thread, extra) = (n_chunks / n_threads, n_chunks % n_threads);
            let mut first_chunk = 0;
            for (thread, heap) in thread_heaps.chunks_mut(k).enumerate() {
                let chunks = per_thread + usize::from(thread < extra);
                let start = first_chunk * chunk;
                let end = ((first_chunk + chunks) * chunk).min(n);
                first_chunk += chunks;
                for (j, &d) in dist.iter().enumerate().take(end).skip(start) {
                    heap_push(heap, d, j as isize);
                }
            }
            for &(d, j) in thread_heaps.iter() {
                heap_push(out, d, j);
            }
        }
    }
    if let Some(how) = sort {
        simultaneous_sort(out, how);
    }
}

/// Whether equally distant training rows lie on both sides of the k-th neighbour.
fn straddles(dist: &[f64], found: &[Entry]) -> bool {
    let kth = found.iter().map(|e| e.0).fold(f64::MIN, f64::max);
    let inside = found.iter().filter(|e| e.0 == kth).count();
    dist.iter().filter(|&&d| d == kth).count() > inside
}

fn thread_dependent_refusal() -> PredictError {
    PredictError::InvalidInput(
        "equally distant training rows tie at this row's k-th nearest neighbour (or sway a \
         distance-weighted vote too close to call), and scikit-learn settles such ties by how \
         its OpenMP threads split the training rows: its own answer for this row depends on \
         the thread count of the machine it runs on (or on how many rows it is asked about at \
         once), so the row is refused rather than answered one way"
            .into(),
    )
}

/// Refuses, by what they are, a model fitted on sparse input and a multi-output one
/// (checked before the attributes whose shape they change are read).
fn check_single_output_dense(obj: Obj<'_>) -> Result<(), ModelError> {
    if let Some(crate::value::Value::Object { name, .. }) = obj.get("_fit_X") {
        return Err(obj.unsupported(format!(
            "a model fitted on sparse input (_fit_X is a {name}); only dense training data is \
             supported"
        )));
    }
    let y_2d = obj
        .some("_y")
        .is_some_and(|y| matches!(y, crate::value::Value::Array(a) if a.shape.len() == 2));
    if obj.bool_or("outputs_2d_", false)? || y_2d {
        return Err(obj.unsupported("multi-output targets (a 2-D y)"));
    }
    Ok(())
}

impl Neighbors {
    fn build(obj: Obj<'_>, classifier: bool) -> Result<Neighbors, ModelError> {
        check_single_output_dense(obj)?;
        let (fit_x, shape) = obj.f64s("_fit_X")?;
        let (n_samples, n_features) = match shape.as_slice() {
            [n, d] => (*n, *d),
            _ => return Err(obj.malformed("_fit_X is not 2-D")),
        };
        let k = obj.usize("n_neighbors")?;
        if k == 0 || k > n_samples {
            return Err(obj.malformed(format!("n_neighbors {k} for {n_samples} samples")));
        }
        let distance_weights = match obj.req("weights")? {
            Value::Str(s) if s == "uniform" => false,
            Value::Str(s) if s == "distance" => true,
            Value::None => false,
            other => {
                return Err(obj.unsupported(format!("weights {}", super::access::describe(other))))
            }
        };
        let p = match obj.some("effective_metric_params_") {
            Some(Value::Dict(items)) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == "p"))
                .and_then(|(_, v)| as_f64(v)),
            _ => None,
        };
        let effective_metric = obj.str("effective_metric_")?;
        let metric = match (effective_metric, p) {
            ("euclidean", _) | ("l2", _) => Metric::Euclidean,
            ("manhattan", _) | ("cityblock", _) | ("l1", _) => Metric::Manhattan,
            ("chebyshev", _) | ("infinity", _) => Metric::Chebyshev,
            ("minkowski", Some(2.0)) => Metric::Euclidean,
            ("minkowski", Some(1.0)) => Metric::Manhattan,
            ("minkowski", Some(p)) if p.is_infinite() => Metric::Chebyshev,
            ("minkowski", Some(p)) if p >= 1.0 => Metric::Minkowski(p),
            (other, _) => return Err(obj.unsupported(format!("metric {other:?}"))),
        };
        if obj.some("metric_params").is_some()
            && !matches!(obj.get("metric_params"), Some(Value::Dict(d)) if d.is_empty())
        {
            return Err(obj.unsupported("metric_params"));
        }
        let brute = obj.str("_fit_method")? == "brute";
        // Only the name "euclidean" (which minkowski with p=2 becomes at fit) takes
        // `EuclideanArgKmin`'s GEMM path; "l2" is computed like any other metric.
        let gemm = brute && effective_metric == "euclidean";
        let gemm_norms = gemm.then(|| {
            fit_x
                .chunks(n_features.max(1))
                .map(|y| fma_dot(y, y))
                .collect()
        });
        let version = obj.version()?;
        // `predict_proba` (and so `predict`) of a uniform classifier takes
        // `ArgKminClassMode` for every metric but the euclidean one, since 1.3.
        let search = if !brute {
            Search::Tree
        } else if version < SkVersion(1, 2) {
            Search::OldBrute
        } else if classifier && !distance_weights && !gemm && version >= SkVersion(1, 3) {
            Search::ClassMode
        } else {
            Search::ArgKmin
        };
        let tie_sort = if version >= SkVersion(1, 9) {
            TieSort::Introsort
        } else {
            TieSort::Quicksort
        };
        Ok(Neighbors {
            fit_x,
            n_samples,
            n_features,
            k,
            metric,
            distance_weights,
            gemm_norms,
            search,
            tie_sort,
        })
    }

    /// The number of chunks scikit-learn cuts the training rows into.
    fn n_chunks(&self) -> usize {
        self.n_samples.div_ceil(self.n_samples.min(CHUNK_SIZE))
    }

    /// A quantity that orders like the distance (`rdist`: squared for euclidean).
    fn rank_distance(&self, a: &[f64], a_norm: f64, j: usize, b: &[f64]) -> f64 {
        if let Some(norms) = &self.gemm_norms {
            return f64::max(0.0, (a_norm + -2.0 * fma_dot(a, b)) + norms[j]);
        }
        let mut d = 0.0;
        match self.metric {
            Metric::Euclidean => a.iter().zip(b).for_each(|(x, y)| d += (x - y) * (x - y)),
            Metric::Manhattan => a.iter().zip(b).for_each(|(x, y)| d += (x - y).abs()),
            Metric::Chebyshev => a
                .iter()
                .zip(b)
                .for_each(|(x, y)| d = f64::max(d, (x - y).abs())),
            Metric::Minkowski(p) => a
                .iter()
                .zip(b)
                .for_each(|(x, y)| d += (x - y).abs().powf(p)),
        }
        d
    }

    fn true_distance(&self, rank: f64) -> f64 {
        match self.metric {
            Metric::Euclidean => rank.sqrt(),
            Metric::Minkowski(p) => rank.powf(1.0 / p),
            _ => rank,
        }
    }

    /// Finds the k neighbours of `row` that scikit-learn reports into `s.found`, in its
    /// order, after the distances into `s.dist`.
    fn search(&self, row: &[f64], s: &mut Scratch) -> Result<(), PredictError> {
        s.dist.clear();
        let row_norm = if self.gemm_norms.is_some() {
            fma_dot(row, row)
        } else {
            0.0
        };
        for j in 0..self.n_samples {
            let t = &self.fit_x[j * self.n_features..(j + 1) * self.n_features];
            s.dist.push(self.rank_distance(row, row_norm, j, t));
        }
        match self.search {
            Search::ArgKmin => replay_argkmin(
                &s.dist,
                self.k,
                Strategy::OnY {
                    threads: REPORTED_THREADS,
                },
                Some(self.tie_sort),
                &mut s.thread_heaps,
                &mut s.found,
            ),
            Search::ClassMode => replay_argkmin(
                &s.dist,
                self.k,
                Strategy::OnX,
                None,
                &mut s.thread_heaps,
                &mut s.found,
            ),
            Search::Tree => self.unreplayed_search(
                s,
                "the model's KD/ball tree breaks such ties in an order not reproduced here \
                 (refit with algorithm=\"brute\" to serve it)",
            )?,
            Search::OldBrute => self.unreplayed_search(
                s,
                "scikit-learn before 1.2 breaks such ties in an order not reproduced here \
                 (refit with scikit-learn 1.2 or later to serve it)",
            )?,
        }
        // Only a distance past f64's range leaves a heap slot unfilled (or NaN in it).
        if s.found
            .iter()
            .any(|&(d, j)| d.is_nan() || d >= f64::MAX || j < 0)
        {
            return Err(PredictError::InvalidInput(
                "a distance from this row to the training rows overflows a 64-bit float".into(),
            ));
        }
        Ok(())
    }

    /// The k nearest by (distance, index), refusing a tie across the k-th place.
    fn unreplayed_search(&self, s: &mut Scratch, why: &str) -> Result<(), PredictError> {
        s.ranked.clear();
        s.ranked
            .extend(s.dist.iter().enumerate().map(|(j, &d)| (d, j)));
        let cmp = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if self.k < s.ranked.len() {
            s.ranked.select_nth_unstable_by(self.k, cmp);
            let kth = s.ranked[self.k].0;
            if s.ranked[..self.k].iter().any(|d| d.0 == kth) {
                return Err(PredictError::InvalidInput(format!(
                    "this row has equally distant neighbours on both sides of the k-th; {why}"
                )));
            }
            s.ranked.truncate(self.k);
        }
        s.ranked.sort_by(cmp);
        s.found.clear();
        s.found
            .extend(s.ranked.iter().map(|&(d, j)| (d, j as isize)));
        Ok(())
    }

    /// Whether another OpenMP thread count could have picked other neighbours than
    /// `s.found`: a tie across the k-th place, with the training rows in several chunks.
    fn thread_dependent(&self, s: &Scratch) -> bool {
        self.search == Search::ArgKmin && self.n_chunks() > 1 && straddles(&s.dist, &s.found)
    }

    /// Replays `ArgKmin` under every thread count that can differ (1 to the number of
    /// chunks) and, with `with_strategy`, under "parallel_on_X" too, and refuses the
    /// row unless `summary` of the neighbours is the same every time.
    fn same_under_every_configuration<T: PartialEq>(
        &self,
        s: &mut Scratch,
        with_strategy: bool,
        summary: impl Fn(&[Entry]) -> T,
    ) -> Result<(), PredictError> {
        let n_chunks = self.n_chunks();
        if n_chunks > MAX_REPLAYED_CHUNKS {
            return Err(PredictError::InvalidInput(format!(
                "equally distant training rows tie for this row's k-th nearest neighbour, and \
                 scikit-learn's answer for such a row may depend on the thread count of the \
                 machine it runs on; that is checked for models of at most {} training rows, \
                 and this one has {}",
                MAX_REPLAYED_CHUNKS * CHUNK_SIZE,
                self.n_samples
            )));
        }
        let reported = summary(&s.found);
        let strategies = (1..=n_chunks)
            .map(|threads| Strategy::OnY { threads })
            .chain(with_strategy.then_some(Strategy::OnX));
        for strategy in strategies {
            replay_argkmin(
                &s.dist,
                self.k,
                strategy,
                Some(self.tie_sort),
                &mut s.thread_heaps,
                &mut s.other,
            );
            if summary(&s.other) != reported {
                return Err(thread_dependent_refusal());
            }
        }
        Ok(())
    }

    /// `_get_weights` of the neighbours `found`, as (training row, weight): 1 each, or
    /// 1/d, except that a row with a zero distance weighs its exact matches 1 and the
    /// rest 0.
    fn weights(&self, found: &[Entry], out: &mut Vec<(usize, f64)>) {
        out.clear();
        if !self.distance_weights {
            out.extend(found.iter().map(|&(_, j)| (j as usize, 1.0)));
            return;
        }
        let exact = found.iter().any(|&(d, _)| self.true_distance(d) == 0.0);
        out.extend(found.iter().map(|&(d, j)| {
            let d = self.true_distance(d);
            let w = if exact {
                f64::from(u8::from(d == 0.0))
            } else {
                1.0 / d
            };
            (j as usize, w)
        }));
    }

    /// The (weight, target) pairs of the neighbours `found` that weigh anything, sorted:
    /// what a vote or an average depends on, whatever order the neighbours come in.
    fn weighted_targets(&self, found: &[Entry], target: impl Fn(usize) -> u64) -> Vec<(u64, u64)> {
        let mut weighted = Vec::with_capacity(found.len());
        self.weights(found, &mut weighted);
        let mut keys: Vec<(u64, u64)> = weighted
            .iter()
            .filter(|&&(_, w)| w != 0.0)
            .map(|&(j, w)| (w.to_bits(), target(j)))
            .collect();
        keys.sort_unstable();
        keys
    }

    fn check(&self, x: MatrixRef<'_>, who: &str) -> Result<(), PredictError> {
        check_width(x, self.n_features, who)?;
        check_finite(x, false, who)
    }
}

#[derive(Debug)]
struct KnnClassifier {
    nn: Neighbors,
    /// `_y`: class index of each training row.
    y: Vec<usize>,
    n_classes: usize,
}

pub(crate) fn build_classifier(
    obj: Obj<'_>,
) -> Result<(ClassLabels, Box<dyn Classifier>), ModelError> {
    check_single_output_dense(obj)?;
    let classes = obj.labels("classes_")?;
    let nn = Neighbors::build(obj, true)?;
    let (y, _) = obj.f64s("_y")?;
    if y.len() != nn.n_samples {
        return Err(obj.malformed("_y does not match _fit_X"));
    }
    let n_classes = classes.len();
    let y = y
        .into_iter()
        .map(|c| {
            (c >= 0.0 && (c as usize) < n_classes && c.fract() == 0.0)
                .then_some(c as usize)
                .ok_or_else(|| obj.malformed("_y holds an invalid class index"))
        })
        .collect::<Result<_, _>>()?;
    Ok((classes, Box::new(KnnClassifier { nn, y, n_classes })))
}

/// What `predict` makes of a row's neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Vote {
    label: usize,
    /// Whether the runner-up is so close that summing the same weights in another order
    /// (tied neighbours swapped) could change the winner.
    close: bool,
}

impl KnnClassifier {
    fn vote(&self, found: &[Entry]) -> Vote {
        let mut weighted = Vec::with_capacity(found.len());
        self.nn.weights(found, &mut weighted);
        let mut counts = vec![0.0; self.n_classes];
        if !self.nn.distance_weights {
            // Counts of whole numbers: exact in any order. `predict` is the argmax of
            // `predict_proba` (or scipy's mode), the first class on a tie.
            for &(j, _) in &weighted {
                counts[self.y[j]] += 1.0;
            }
            return Vote {
                label: argmax(&counts),
                close: false,
            };
        }
        // `weighted_mode`: per class (ascending), numpy's sum of the weights with zeros
        // in the other classes' places; a class wins only with a strictly larger sum.
        let mut template = vec![0.0; weighted.len()];
        let (mut best, mut best_count) = (0, 0.0);
        for (class, count) in counts.iter_mut().enumerate() {
            for (t, &(j, w)) in template.iter_mut().zip(&weighted) {
                *t = if self.y[j] == class { w } else { 0.0 };
            }
            *count = super::numpy_sum(&template);
            if *count > best_count {
                (best, best_count) = (class, *count);
            }
        }
        // Any summation order of k non-negative terms is within (k - 1) ulps-worth of
        // the sum; a runner-up closer than twice that could swap places.
        let margin = 2.0 * weighted.len() as f64 * f64::EPSILON * best_count;
        let close = counts
            .iter()
            .enumerate()
            .any(|(class, &c)| class != best && c >= best_count - margin);
        Vote { label: best, close }
    }

    fn proba_row(
        &self,
        row: &[f64],
        s: &mut Scratch,
        out: &mut Vec<f64>,
    ) -> Result<(), PredictError> {
        self.nn.search(row, s)?;
        if self.nn.thread_dependent(s) {
            self.nn.same_under_every_configuration(s, false, |found| {
                self.nn.weighted_targets(found, |j| self.y[j] as u64)
            })?;
        }
        self.nn.weights(&s.found, &mut s.weighted);
        let start = out.len();
        out.resize(start + self.n_classes, 0.0);
        let p = &mut out[start..];
        for &(j, w) in &s.weighted {
            p[self.y[j]] += w;
        }
        let mut sum = super::numpy_sum(p);
        if sum == 0.0 {
            sum = 1.0;
        }
        p.iter_mut().for_each(|v| *v /= sum);
        Ok(())
    }

    fn predict_row(&self, row: &[f64], s: &mut Scratch) -> Result<usize, PredictError> {
        self.nn.search(row, s)?;
        let vote = self.vote(&s.found);
        if self.nn.thread_dependent(s) || vote.close {
            self.nn
                .same_under_every_configuration(s, vote.close, |found| self.vote(found).label)?;
        }
        Ok(vote.label)
    }
}

impl Classifier for KnnClassifier {
    fn n_features(&self) -> usize {
        self.nn.n_features
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        self.nn.check(x, "KNeighborsClassifier")?;
        let mut s = Scratch::default();
        for i in 0..x.n_rows {
            out.push(self.predict_row(x.row(i), &mut s)?);
        }
        Ok(())
    }

    fn has_proba(&self) -> bool {
        true
    }

    fn predict_proba(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.nn.check(x, "KNeighborsClassifier")?;
        let mut s = Scratch::default();
        for i in 0..x.n_rows {
            self.proba_row(x.row(i), &mut s, out)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct KnnRegressor {
    nn: Neighbors,
    y: Vec<f64>,
}

pub(crate) fn build_regressor(obj: Obj<'_>) -> Result<Box<dyn Regressor>, ModelError> {
    let nn = Neighbors::build(obj, false)?;
    let (y, shape) = obj.f64s("_y")?;
    if shape.len() != 1 || y.len() != nn.n_samples {
        return Err(obj.malformed("_y does not match _fit_X"));
    }
    Ok(Box::new(KnnRegressor { nn, y }))
}

impl Regressor for KnnRegressor {
    fn n_features(&self) -> usize {
        self.nn.n_features
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.nn.check(x, "KNeighborsRegressor")?;
        let mut s = Scratch::default();
        let mut terms = Vec::new();
        for i in 0..x.n_rows {
            self.nn.search(x.row(i), &mut s)?;
            if self.nn.thread_dependent(&s) {
                self.nn
                    .same_under_every_configuration(&mut s, false, |found| {
                        self.nn
                            .weighted_targets(found, |j| (self.y[j] + 0.0).to_bits())
                    })?;
            }
            self.nn.weights(&s.found, &mut s.weighted);
            let neigh = &s.weighted;
            terms.clear();
            if self.nn.distance_weights {
                terms.extend(neigh.iter().map(|&(j, w)| self.y[j] * w));
                let weights: Vec<f64> = neigh.iter().map(|&(_, w)| w).collect();
                out.push(super::numpy_sum(&terms) / super::numpy_sum(&weights));
            } else {
                terms.extend(neigh.iter().map(|&(j, _)| self.y[j]));
                out.push(super::numpy_sum(&terms) / terms.len() as f64);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward reference: push every value, then read the heap back sorted.
    fn argkmin_on_x(dist: &[f64], k: usize) -> Vec<Entry> {
        let mut heaps = Vec::new();
        let mut out = Vec::new();
        replay_argkmin(
            dist,
            k,
            Strategy::OnX,
            Some(TieSort::Introsort),
            &mut heaps,
            &mut out,
        );
        out
    }

    #[test]
    fn heap_keeps_the_k_smallest_values() {
        let dist: Vec<f64> = (0..50).map(|i| ((i * 37) % 50) as f64).collect();
        let found = argkmin_on_x(&dist, 7);
        let values: Vec<f64> = found.iter().map(|e| e.0).collect();
        assert_eq!(values, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        for (d, j) in found {
            assert_eq!(dist[j as usize], d);
        }
    }

    #[test]
    fn heap_tie_rule_is_scikit_learns_not_lowest_index() {
        // Rows 0 and 1 tie for the third place: scikit-learn keeps row 1 (its
        // `NearestNeighbors(n_neighbors=3, algorithm="brute")` on the 1-D training rows
        // [2, 2, 0, 0] answers [3, 2, 1] for the query 0), where the lowest index is 0.
        let mut heaps = Vec::new();
        let mut found = Vec::new();
        let dist = [2.0, 2.0, 0.0, 0.0];
        let strategy = Strategy::OnY {
            threads: REPORTED_THREADS,
        };
        replay_argkmin(
            &dist,
            3,
            strategy,
            Some(TieSort::Introsort),
            &mut heaps,
            &mut found,
        );
        let rows: Vec<isize> = found.iter().map(|e| e.1).collect();
        assert_eq!(rows, vec![3, 2, 1]);
        // One heap fed in order (parallel_on_X) keeps the same rows, in another order.
        let mut rows: Vec<isize> = argkmin_on_x(&dist, 3).iter().map(|e| e.1).collect();
        rows.sort_unstable();
        assert_eq!(rows, vec![1, 2, 3]);
    }

    #[test]
    fn both_sorts_order_by_value() {
        for how in [TieSort::Introsort, TieSort::Quicksort] {
            for n in [0usize, 1, 2, 3, 4, 15, 16, 17, 40, 300] {
                let mut v: Vec<Entry> = (0..n)
                    .map(|i| (((i * 7919) % 13) as f64, i as isize))
                    .collect();
                simultaneous_sort(&mut v, how);
                assert!(v.windows(2).all(|w| w[0].0 <= w[1].0), "{how:?} n={n}");
                let mut rows: Vec<isize> = v.iter().map(|e| e.1).collect();
                rows.sort_unstable();
                assert_eq!(rows, (0..n as isize).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn one_chunk_makes_every_thread_count_agree() {
        let dist: Vec<f64> = (0..200).map(|i| (i % 4) as f64).collect();
        let mut heaps = Vec::new();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        replay_argkmin(
            &dist,
            5,
            Strategy::OnY { threads: 1 },
            None,
            &mut heaps,
            &mut a,
        );
        replay_argkmin(
            &dist,
            5,
            Strategy::OnY { threads: 8 },
            None,
            &mut heaps,
            &mut b,
        );
        assert_eq!(a, b);
    }
}
