"""jaxtalk/train/data.py's in-memory path: each process's share of the global batches, and an
iterator that reads only what is asked for and resumes from its state."""

import numpy as np

from jaxtalk.train.data import iterate, local_batches


class CountingSource:
    """Example i is {"i": i}; records every index read."""

    def __init__(self, size):
        self.size, self.reads = size, []

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        self.reads.append(index)
        return {"i": np.int64(index)}


def batches(source, process_index=0, process_count=1, train=False):
    ds = local_batches(
        source,
        train=train,
        seed=3,
        global_batch_size=4,
        process_index=process_index,
        process_count=process_count,
    )
    return iterate(ds)


def test_two_processes_read_the_halves_of_one_process_batches():
    whole = [b["i"].tolist() for b in batches(CountingSource(12))]
    assert whole == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    halves = [[b["i"].tolist() for b in batches(CountingSource(12), p, 2)] for p in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == whole


def test_reads_only_the_batches_taken_and_resumes_from_its_state():
    """No read-ahead (grain's default read options computed 500 batches ahead on 16
    threads), and a restored state continues with the next batch of the shuffled stream."""
    source = CountingSource(40)
    it = batches(source, train=True)
    first = [next(it)["i"].tolist() for _ in range(3)]
    assert len(source.reads) == 12 and sorted(sum(first, [])) == sorted(source.reads)
    state = it.get_state()
    want = [next(it)["i"].tolist() for _ in range(2)]
    again = batches(CountingSource(40), train=True)
    again.set_state(state)
    assert [next(again)["i"].tolist() for _ in range(2)] == want
