//! libstdc++'s `push_heap` / `pop_heap` / `sort_heap` with fastText's
//! `comparePairs` (`l.first > r.first`, a min-heap on the score), step for step.
//! fastText keeps its k best predictions this way; reproducing the algorithm (not
//! only its result) keeps the order of equal scores, and therefore which label wins
//! a tie, the same as the fasttext package (a one-vs-all model whose outputs all
//! saturate to 0 answers a tie of every label).

pub(crate) type Pred = (f32, i32);

fn comp(l: &Pred, r: &Pred) -> bool {
    l.0 > r.0
}

fn push_heap_hole(heap: &mut [Pred], mut hole: usize, top: usize, value: Pred) {
    while hole > top {
        let parent = (hole - 1) / 2;
        if !comp(&heap[parent], &value) {
            break;
        }
        heap[hole] = heap[parent];
        hole = parent;
    }
    heap[hole] = value;
}

/// `std::push_heap(heap.begin(), heap.end(), comparePairs)`: the last element joins.
pub(crate) fn push_heap(heap: &mut [Pred]) {
    let Some(&value) = heap.last() else {
        return;
    };
    push_heap_hole(heap, heap.len() - 1, 0, value);
}

fn adjust_heap(heap: &mut [Pred], mut hole: usize, len: usize, value: Pred) {
    let top = hole;
    let mut second = hole;
    while len >= 1 && second < (len - 1) / 2 {
        second = 2 * (second + 1);
        if comp(&heap[second], &heap[second - 1]) {
            second -= 1;
        }
        heap[hole] = heap[second];
        hole = second;
    }
    if len & 1 == 0 && len >= 2 && second == (len - 2) / 2 {
        second = 2 * (second + 1);
        heap[hole] = heap[second - 1];
        hole = second - 1;
    }
    push_heap_hole(heap, hole, top, value);
}

/// `__pop_heap(first, last, result)` with `last` = `end`: the front goes to
/// `heap[end]` and `heap[..end]` is a heap again.
fn pop_heap_to(heap: &mut [Pred], end: usize) {
    let value = heap[end];
    heap[end] = heap[0];
    adjust_heap(heap, 0, end, value);
}

/// `std::pop_heap`: the front (the lowest score) moves to the back.
pub(crate) fn pop_heap(heap: &mut [Pred]) {
    if heap.len() > 1 {
        let end = heap.len() - 1;
        pop_heap_to(heap, end);
    }
}

/// `std::sort_heap`: highest score first.
pub(crate) fn sort_heap(heap: &mut [Pred]) {
    let mut last = heap.len();
    while last > 1 {
        last -= 1;
        pop_heap_to(heap, last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_k_best_and_sorts_them_descending() {
        let mut heap: Vec<Pred> = Vec::new();
        for (i, s) in [0.1f32, 0.5, 0.3, 0.9, 0.2, 0.7].iter().enumerate() {
            heap.push((*s, i as i32));
            push_heap(&mut heap);
            if heap.len() > 3 {
                pop_heap(&mut heap);
                heap.pop();
            }
        }
        sort_heap(&mut heap);
        assert_eq!(heap, vec![(0.9, 3), (0.7, 5), (0.5, 1)]);
    }
}
