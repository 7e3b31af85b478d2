"""Data-parallel training of the digits MLP over MPI (mpi4py), with gradients all-reduced in
buckets as the backward pass produces them.

    python3 examples/ddp_digits.py [--weights FILE]                         # one process
    mpirun -np 2 python3 examples/ddp_digits.py [--weights FILE]            # two ranks
    (as root: mpirun --allow-run-as-root --oversubscribe -np 2 ...)

The data and model are examples/digits.c's: the 1797 8x8 UCI digits of examples/data/digits.csv
(pixels scaled to [0, 1]), split by a SplitMix64 Fisher-Yates shuffle seeded with 2024 (the
first 360 shuffled samples test, the other 1437 train), and a float64 MLP 64 -> 128 -> 10 with a
ReLU hidden layer, trained on the softmax cross-entropy. Simplified here: the weights start from
a seeded NumPy He-uniform draw (biases zero), the optimizer is SGD with momentum, the training
set is reshuffled every epoch by SplitMix64 seeded with 7, and the samples that do not fill a
last global batch of 64 are left out of that epoch.

Data parallelism, as PyTorch's DistributedDataParallel does it:
  - rank 0 draws the initial parameters and broadcasts them (comm.Bcast), so every rank starts
    from the same bits;
  - every global batch of 64 is cut into equal contiguous shards, one per rank (32 each with two
    ranks, the whole batch with one process); each rank computes the mean loss over its shard
    and runs backward;
  - a post-accumulate-grad hook on each parameter (Tensor.register_post_accumulate_grad_hook)
    runs as soon as that parameter's gradient is complete, before the backward pass goes on to
    the layers nearer the input. It copies the gradient into its place in a flat float64 NumPy
    bucket; the parameters are bucketed in reverse order (the order backward completes them),
    a few per bucket, and a full bucket starts a non-blocking comm.Iallreduce(MPI.IN_PLACE,
    bucket, op=MPI.SUM) at once, so the communication of the last layers overlaps the backward
    of the first ones. Buckets are started in bucket order on every rank (a bucket that fills
    early waits for the ones before it), as MPI wants collectives issued in the same order;
  - after backward, every request is waited for with a deadline (--timeout seconds: a rank
    whose all-reduces do not finish in time, a peer having died or hung, prints which rank it
    is and calls comm.Abort(1) rather than hanging); each summed gradient is divided by the
    number of ranks and written back into the parameter's .grad in place
    (param.grad.set_data), and every rank takes the same optimizer step.
Rank 0 prints the loss per epoch (the mean over the epoch's global batches) and the final test
accuracy; --weights FILE saves the final parameters (W1, b1, W2, b2 flattened and concatenated,
float64) with np.save.

Determinism: where every gradient sum is taken, and in what order.
  - Within a rank, the engine's kernels (the matrix products of the backward, the reduction of
    the bias gradients and of the mean) add their terms in a fixed order that depends only on
    the shapes, with one library thread per rank here; so a rank's shard gradient is the same
    bits on every run.
  - Across ranks, MPI_SUM over two ranks is one floating-point addition a + b per element, and
    IEEE addition is commutative, so both ranks get the same bits whichever operand comes first
    (with more than two ranks, Open MPI's reduction order is fixed for a given size and
    algorithm, but associativity would then matter: this example claims identical bits for the
    two-rank case). Dividing by 2 is exact (a power of two; barring underflow), so every rank
    writes the same average, takes the same SGD step and holds the same parameters at every
    step: the run is deterministic, and the ranks never drift apart (the script checks that
    all ranks end with the same bits).
  - A one-process run sums the 64 terms of each gradient in one kernel, where two ranks sum
    two halves of 32 and add them: a different rounding order, so one process and two ranks
    agree to rounding only (scripts/ddp-python-tests.sh checks the final weights within 1e-12),
    while each of them is reproducible bit for bit.
"""

import argparse
import functools
import hashlib
import os
import sys
import time

import numpy as np
from mpi4py import MPI

import libautograd as ag

N_TEST = 360
N_PIXELS, HIDDEN, N_CLASSES = 64, 128, 10
GLOBAL_BATCH = 64
SPLIT_SEED, ORDER_SEED, INIT_SEED = 2024, 7, 1
MASK64 = (1 << 64) - 1


class SplitMix64:
    """The seeded generator examples/digits.c uses (SplitMix64), in Python integers."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def shuffle(self, a):
        """Fisher-Yates in place, j = next mod (i + 1), as digits.c."""
        for i in range(len(a) - 1, 0, -1):
            j = self.next() % (i + 1)
            a[i], a[j] = a[j], a[i]


def load_digits(path):
    """Pixels (1797, 64) scaled to [0, 1] and labels (1797,) int64 from the CSV."""
    rows = np.loadtxt(path, delimiter=",", comments="#")
    return rows[:, :N_PIXELS] / 16.0, rows[:, N_PIXELS].astype(np.int64)


def initial_parameters(comm):
    """W1 (128, 64), b1, W2 (10, 128), b2: drawn on rank 0, broadcast to every rank."""
    shapes = [(HIDDEN, N_PIXELS), (HIDDEN,), (N_CLASSES, HIDDEN), (N_CLASSES,)]
    arrays = [np.zeros(shape) for shape in shapes]
    if comm.rank == 0:
        rng = np.random.default_rng(INIT_SEED)
        for array in (arrays[0], arrays[2]):
            bound = np.sqrt(6.0 / array.shape[1])  # He uniform, for the ReLU layers
            array[...] = rng.uniform(-bound, bound, size=array.shape)
    for array in arrays:
        comm.Bcast(array, root=0)
    return [ag.from_numpy(array, requires_grad=True) for array in arrays]


def model(x, params):
    w1, b1, w2, b2 = params
    return ag.linear(ag.relu(ag.linear(x, w1, b1)), w2, b2)


class GradientBuckets:
    """Copies each parameter's gradient into a flat bucket as backward completes it, all-reduces
    each full bucket without blocking, and after backward writes the averages back."""

    def __init__(self, comm, params, per_bucket, timeout):
        self.comm, self.params, self.timeout = comm, params, timeout
        self.buckets = []  # each: {"buf", "members": [(index, offset, size, shape)]}
        self.where = {}  # parameter index -> (bucket index, offset, size)
        order = list(reversed(range(len(params))))  # the order backward completes them
        for start in range(0, len(order), per_bucket):
            members, offset = [], 0
            for index in order[start:start + per_bucket]:
                shape = params[index].shape
                size = int(np.prod(shape))
                members.append((index, offset, size, shape))
                self.where[index] = (len(self.buckets), offset, size)
                offset += size
            self.buckets.append({"buf": np.zeros(offset), "members": members})
        self.handles = [p.register_post_accumulate_grad_hook(functools.partial(self._ready, i))
                        for i, p in enumerate(params)]
        self.started_early = self.started = 0  # all-reduces started while backward went on
        self._reset()

    def _reset(self):
        self.filled = [set() for _ in self.buckets]
        self.next_to_start = 0
        self.requests = []

    def _ready(self, index, leaf):
        """The post-accumulate-grad hook: leaf's gradient for this pass is complete."""
        b, offset, size = self.where[index]
        self.buckets[b]["buf"][offset:offset + size] = leaf.grad.numpy().reshape(-1)
        self.filled[b].add(index)
        before = len(self.requests)
        self._start_full_buckets()
        if sum(map(len, self.filled)) < len(self.params):  # gradients still to come
            self.started_early += len(self.requests) - before
        if self.requests:
            MPI.Request.Testall(self.requests)  # lets MPI progress the all-reduces in flight

    def _start_full_buckets(self):
        while (self.next_to_start < len(self.buckets) and
               len(self.filled[self.next_to_start]) == len(self.buckets[self.next_to_start]["members"])):
            buf = self.buckets[self.next_to_start]["buf"]
            self.requests.append(self.comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM))
            self.next_to_start += 1

    def finish(self):
        """After backward: waits (with the deadline) for every bucket's sum, divides by the
        number of ranks and writes the averages into the parameters' .grad."""
        # A parameter that got no gradient in this pass (none does in this model) counts as 0.
        for b in range(self.next_to_start, len(self.buckets)):
            for index, offset, size, _ in self.buckets[b]["members"]:
                if index not in self.filled[b]:
                    self.buckets[b]["buf"][offset:offset + size] = 0.0
                    self.filled[b].add(index)
        self._start_full_buckets()
        deadline = time.monotonic() + self.timeout
        pending = list(self.requests)
        while pending:
            pending = [req for req in pending if not req.Test()]
            if pending and time.monotonic() > deadline:
                print(f"ddp_digits: rank {self.comm.rank} of {self.comm.size}: {len(pending)} of "
                      f"{len(self.requests)} gradient all-reduces did not complete within "
                      f"{self.timeout:g} s (a peer rank died or hangs); aborting",
                      file=sys.stderr, flush=True)
                self.comm.Abort(1)
            if pending:
                time.sleep(50e-6)
        self.started += len(self.requests)
        world = float(self.comm.size)
        for bucket in self.buckets:
            buf = bucket["buf"]
            buf /= world
            for index, offset, size, shape in bucket["members"]:
                grad = self.params[index].grad
                if grad is None:  # the zeros above kept the ranks' collectives matched
                    raise RuntimeError(f"rank {self.comm.rank}: parameter {index} got no "
                                       "gradient (this example has no unused parameters)")
                grad.set_data(buf[offset:offset + size].reshape(shape))
        self._reset()


def weights_digest(params):
    digest = hashlib.sha256()
    for p in params:
        digest.update(p.numpy().tobytes())
    return digest.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                       "data", "digits.csv"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--params-per-bucket", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a step's all-reduces before aborting")
    parser.add_argument("--weights", help="save the final parameters here (np.save, float64)")
    parser.add_argument("--stall", metavar="RANK:SECONDS",
                        help="(testing the deadline) that rank sleeps before its first backward")
    args = parser.parse_args()

    comm = MPI.COMM_WORLD
    rank, world = comm.rank, comm.size
    if GLOBAL_BATCH % world:
        if rank == 0:
            print(f"ddp_digits: the global batch {GLOBAL_BATCH} does not split into {world} "
                  "equal shards", file=sys.stderr)
        return 2
    shard = GLOBAL_BATCH // world
    ag.set_num_threads(1)  # one library thread per rank (the machine's cores are the ranks')

    pixels, labels = load_digits(args.data)
    order = list(range(len(labels)))
    SplitMix64(SPLIT_SEED).shuffle(order)
    test, train = np.array(order[:N_TEST]), order[N_TEST:]

    params = initial_parameters(comm)
    opt = ag.SGD(params, lr=args.lr, momentum=args.momentum)
    buckets = GradientBuckets(comm, params, args.params_per_bucket, args.timeout)
    stall_rank, stall_seconds = (None, 0.0)
    if args.stall:
        stall_rank, stall_seconds = int(args.stall.split(":")[0]), float(args.stall.split(":")[1])

    shuffler = SplitMix64(ORDER_SEED)
    steps = len(train) // GLOBAL_BATCH
    if rank == 0:
        print(f"ddp_digits: {world} rank(s), shards of {shard}, {steps} steps per epoch, "
              f"{len(buckets.buckets)} gradient buckets")
    for epoch in range(1, args.epochs + 1):
        shuffler.shuffle(train)
        local_loss = 0.0
        for step in range(steps):
            batch = train[step * GLOBAL_BATCH:(step + 1) * GLOBAL_BATCH]
            mine = batch[rank * shard:(rank + 1) * shard]  # this rank's contiguous shard
            opt.zero_grad()
            loss = ag.cross_entropy(model(ag.from_numpy(pixels[mine]), params), labels[mine])
            if rank == stall_rank and epoch == 1 and step == 0:
                time.sleep(stall_seconds)
            loss.backward()
            buckets.finish()
            opt.step()
            local_loss += loss.item()
        epoch_loss = comm.allreduce(local_loss, op=MPI.SUM) / (world * steps)
        if rank == 0:
            print(f"epoch {epoch:2d}  loss {epoch_loss:.6f}", flush=True)

    digests = comm.allgather(weights_digest(params))
    if len(set(digests)) != 1:
        print(f"ddp_digits: rank {rank}: the ranks' final weights differ: {digests}",
              file=sys.stderr)
        return 1
    if rank == 0:
        with ag.no_grad():
            logits = model(ag.from_numpy(pixels[test]), params).numpy()
        accuracy = float(np.mean(np.argmax(logits, axis=1) == labels[test]))
        print(f"ddp_digits: all {world} rank(s) hold identical weights (sha256 {digests[0][:16]})")
        print(f"ddp_digits: {buckets.started_early} of {buckets.started} bucket all-reduces "
              "started while backward still had gradients to compute")
        print(f"test accuracy {accuracy:.4f}")
        if args.weights:
            with open(args.weights, "wb") as f:
                np.save(f, np.concatenate([p.numpy().reshape(-1) for p in params]))
        if accuracy < 0.9:
            print("ddp_digits: FAILED: accuracy below 0.90", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
