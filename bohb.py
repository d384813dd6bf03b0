"""BOHB from scratch (Falkner, Klein and Hutter, ICML 2018), AutoKD's search strategy (Sec. 3.2, Alg. 1):
Hyperband's successive halving with kernel density models proposing configurations, in numpy and
scipy. It optimises any function of (config, budget); search.py gives it the NAGO + KD space.

    python bohb.py --demo     # a multi-fidelity Branin: BOHB against Hyperband and random search
    python bohb.py --plan --min-budget 30 --max-budget 120 --eta 2     # the bracket table only

Read top to bottom: search space -> brackets (Alg. 1 lines 2-9) -> kernel density model (Falkner et
al. Alg. 2) -> ask/tell -> the parallel driver and its log -> demo. The log holds one JSON object per
finished evaluation (make_record), appended and fsync'd before the next proposal: job (iteration,
bracket, rung, index, budget, config, origin), loss (null for a failure: +inf), error, cause
(transient or deterministic: failure_cause), attempt (2: a transient failure run again on resume),
info (what the objective returned), started, finished. Running again on the same log resumes.
"""
import argparse
import concurrent.futures as cf
import functools
import math
import re
import sys
import time
import traceback

import numpy as np
from scipy.special import logsumexp
from scipy.stats import truncnorm

from machinery import cli, files, schema


# ------------------------------------------------------------------------------------------------
# Search space: {"name": (int | float, low, high)} or (int | float, low, high, "log")

class Space:
    """A box of float and integer dimensions, each searched on [0, 1] (linearly or in log).

    An integer dimension covers [low - 0.5, high + 0.5] and is rounded when decoded, so every integer
    owns an equal share of the unit interval (ConfigSpace's convention, which hpbandster uses)."""

    def __init__(self, space):
        self.names, self.kinds, self.bounds, log = list(space), [], [], []
        for name, spec in space.items():
            shaped = isinstance(spec, (tuple, list)) and len(spec) in (3, 4) and spec[0] in (int, float)
            if not (shaped and tuple(spec[3:]) in ((), ("log",)) and spec[1] < spec[2]
                    and (spec[0] is float or isinstance(spec[1], int) and isinstance(spec[2], int))
                    and (len(spec) == 3 or spec[1] > 0)):
                raise ValueError(f"search space entry {name!r} = {spec!r} should be (int or float, low, high) "
                                 "or (..., 'log'), with low < high, integer bounds for int, low > 0 for 'log'.")
            self.kinds.append(spec[0])
            self.bounds.append(tuple(spec[1:3]))
            log.append(len(spec) == 4)
        self.log = np.array(log)  # (d,)
        ends = np.array([(lo - 0.5, hi + 0.5) if k is int else (lo, hi)
                         for k, (lo, hi) in zip(self.kinds, self.bounds)], dtype=float)  # (d, 2)
        ends[self.log] = np.log(ends[self.log])
        self.start, self.width = ends[:, 0], ends[:, 1] - ends[:, 0]  # (d,), (d,)

    def __len__(self):
        return len(self.names)

    def decode(self, x):
        """A point of [0, 1]^d -> a config dict of Python ints and floats inside the bounds."""
        values = self.start + np.asarray(x) * self.width  # (d,)
        values[self.log] = np.exp(values[self.log])
        return {name: kind(min(max(math.floor(v + 0.5) if kind is int else float(v), lo), hi))
                for name, kind, (lo, hi), v in zip(self.names, self.kinds, self.bounds, values)}

    def encode(self, config):
        """A config dict -> its point of [0, 1]^d (an integer goes to the middle of its share)."""
        values = np.array([float(config[name]) for name in self.names])  # (d,)
        values[self.log] = np.log(values[self.log])
        return (values - self.start) / self.width


# ------------------------------------------------------------------------------------------------
# Hyperband brackets and successive halving (Alg. 1 lines 2-9)

MAX_EVALUATIONS = 10_000  # trainings in one Hyperband iteration: budgets 1 -> 2,048 with eta = 2 make 9,127;
# a ratio of 1e12 would start its first bracket from 2^39 configurations, more than memory holds
MAX_ITERATIONS = 1_000  # --iterations: Hyperband iterations (the paper's ~300 students take about 21)


def bracket_plan(min_budget, max_budget, eta):
    """One Hyperband iteration: a list of brackets, each a list of rungs (n_configs, budget).

    Alg. 1 line 2: s_max = floor(log_eta(b_max / b_min)). Line 3: one bracket for each s = s_max ... 0.
    Line 4: it starts from n = ceil((s_max + 1) / (s + 1) * eta^s) configs, line 5: at budget
    b_max * eta^-s (the extracted text lost the minus sign). Lines 8-9: rung i + 1 keeps floor(n_i / eta)
    configs at eta times the budget. This is Li et al.'s ceil formula, as in the paper; hpbandster
    floors instead ((s_max + 1) // (s + 1) * eta^s), e.g. 2 @ 60 rather than 3 @ 60 for eta = 2, 30 -> 120.
    A plan of more than MAX_EVALUATIONS trainings per iteration is refused, naming the largest budget.
    """
    if not (isinstance(eta, int) and eta >= 2 and 0 < min_budget <= max_budget):
        raise cli.UserError(f"need an integer eta >= 2 and 0 < min_budget <= max_budget, got eta={eta}, "
                         f"budgets {min_budget} -> {max_budget}.")
    limit = largest_s_max(eta)
    s_max = steps(min_budget, max_budget, eta, limit)
    if s_max > limit:
        raise cli.UserError(f"--min-budget {min_budget:g} to --max-budget {max_budget:g} with --eta {eta} makes "
                               f"more than {MAX_EVALUATIONS:,} trainings per Hyperband iteration; give --max-budget "
                               f"at most {min_budget * eta**limit:g} (--min-budget x {eta}^{limit}).")
    return [[(n, max_budget / eta ** (s - i)) for i, n in enumerate(sizes)]
            for s, sizes in zip(range(s_max, -1, -1), rung_sizes(s_max, eta))]


def steps(low, high, eta, limit):
    """Alg. 1 line 2's s_max = floor(log_eta(high / low)), counted in integer powers (log(243) / log(3)
    is 4.999... in floating point), and no further than limit + 1."""
    k = 0
    while k <= limit and low * eta ** (k + 1) <= high * (1 + 1e-9):
        k += 1
    return k


def rung_sizes(s_max, eta):
    """Configs at each rung of each bracket, s = s_max ... 0 (Alg. 1 lines 4 and 8-9), in integers."""
    return [[-(-(s_max + 1) * eta**s // (s + 1)) // eta**i for i in range(s + 1)] for s in range(s_max, -1, -1)]


def largest_s_max(eta):
    """The largest s_max whose Hyperband iteration holds at most MAX_EVALUATIONS trainings."""
    k = 0
    while sum(map(sum, rung_sizes(k + 1, eta))) <= MAX_EVALUATIONS:
        k += 1
    return k


def check_whole_budgets(min_budget, max_budget, eta):
    """bracket_plan for budgets in epochs, which train.py trains whole and as given: every rung a whole
    number, from --min-budget up to --max-budget = --min-budget x eta^k. Else (a rung of 1.5 epochs
    would train 2, a --min-budget below the lowest rung none) a UserError suggesting valid budgets.
    search.py and `bohb.py --plan` call it; the library takes any budgets (the demo's Branin)."""
    plan = bracket_plan(min_budget, max_budget, eta)
    if min_budget == int(min_budget) and max_budget == int(min_budget) * eta ** (len(plan) - 1):
        return plan
    rungs = sorted({budget for bracket in plan for _, budget in bracket})
    raise cli.UserError(f"--min-budget {min_budget:g}, --max-budget {max_budget:g} and --eta {eta} make rungs of "
                           f"{', '.join(f'{b:g}' for b in rungs)} epochs, but every budget must be a whole number "
                           f"of epochs trained as given, up to --max-budget = --min-budget x {eta}^k: give "
                           f"{' or '.join(whole_budgets(min_budget, max_budget, eta))}.")


def whole_budgets(min_budget, max_budget, eta):
    """Flags of valid whole budgets near the given ones: the nearest whole --min-budget with the
    --max-budget = min x eta^k just below and just above the given one; and the given --max-budget,
    if whole, with the whole --min-budget = max / eta^k just above and just below the given one."""
    limit, low, top = largest_s_max(eta), max(1, round(min_budget)), int(max_budget)
    k = steps(low, max_budget, eta, limit)  # low x eta^k <= max_budget < low x eta^(k + 1)
    pairs = [(low, low * eta**i, i) for i in (k, k + 1)]
    if top == max_budget:
        j = steps(min_budget, top, eta, limit)  # top / eta^j >= min_budget > top / eta^(j + 1)
        pairs += [(top // eta**i, top, i) for i in (j, j + 1) if top % eta**i == 0]
    flags = []
    for lo, hi, s_max in pairs:
        text = " ".join([f"--min-budget {lo}"] * (lo != min_budget) + [f"--max-budget {hi}"] * (hi != max_budget))
        if s_max <= limit and text not in flags:
            flags.append(text)
    return flags


def plan_budget(plan):
    """Total budget (e.g. epochs) of one Hyperband iteration of the plan."""
    return sum(n * budget for bracket in plan for n, budget in bracket)


class Bracket:
    """One successive-halving run (Alg. 1 lines 4-9), rung by rung; a rung completes when all its
    configs have a loss, and only then are the next rung's configs known."""

    def __init__(self, iteration, number, rungs):
        self.iteration, self.number, self.rungs = iteration, number, rungs
        self.rung = 0
        self.todo = list(range(rungs[0][0]))  # config indices not yet handed out at this rung
        self.size = len(self.todo)            # configs at this rung
        self.configs, self.losses = {}, {}    # index -> config; index -> loss at the current rung

    @property
    def done(self):
        return self.rung == len(self.rungs)

    def record(self, index, config, loss):
        self.configs[index], self.losses[index] = config, loss
        if len(self.losses) == self.size:
            self.promote()

    def promote(self):
        """Alg. 1 line 8: the best floor(n_i / eta) go on to the next rung (ties: lower index first).
        Interpretation: a failed evaluation (loss +inf) is never promoted; when fewer configurations
        succeeded than the next rung holds, it runs with fewer (none: the bracket ends). The
        alternative, a new configuration drawn for the empty place, would start it below its rung."""
        self.rung += 1
        finite = [index for index in self.losses if math.isfinite(self.losses[index])]
        if not self.done:
            ranked = sorted(finite, key=lambda index: (self.losses[index], index))
            self.todo = ranked[:self.rungs[self.rung][0]]
            self.size = len(self.todo)
            if self.size == 0:
                self.rung = len(self.rungs)
        self.losses = {}


# ------------------------------------------------------------------------------------------------
# The kernel density model (Falkner et al. Sec. 3.1 and Alg. 2)

def normal_reference_bandwidth(points, min_bandwidth):
    """Per-dimension bandwidth 1.06 * std * n^(-1 / (d + 4)) (the rule statsmodels' KDEMultivariate
    applies for the reference implementation), clipped below at min_bandwidth: a column of equal good
    values would otherwise give a zero-width kernel."""
    n, d = points.shape
    return np.maximum(1.06 * points.std(axis=0) * n ** (-1 / (d + 4)), min_bandwidth)  # (d,)


def log_density(x, points, bandwidth):
    """log of the Gaussian product-kernel density of points, at each row of x: (m, d) -> (m,)."""
    z = (x[:, None, :] - points[None, :, :]) / bandwidth  # (m, n, d)
    log_kernel = (-0.5 * z**2 - np.log(bandwidth) - 0.5 * math.log(2 * math.pi)).sum(axis=2)  # (m, n)
    return logsumexp(log_kernel, axis=1) - math.log(len(points))  # (m,)


def fit_densities(x, losses, top_n_percent, min_bandwidth):
    """Split the observations at one budget into good (the best top_n_percent, at least d + 1) and bad
    (the rest) and fit a density to each: [(good, bandwidth), (bad, bandwidth)], or None while the bad
    set has d points or fewer (so a budget needs 2d + 2 results before it has a model)."""
    n, d = x.shape
    order = np.argsort(losses, kind="stable")
    n_good = max(d + 1, top_n_percent * n // 100)
    good, bad = x[order[:n_good]], x[order[n_good:]]  # (n_good, d), (n - n_good, d)
    if len(bad) <= d:
        return None
    return [(points, normal_reference_bandwidth(points, min_bandwidth)) for points in (good, bad)]


# ------------------------------------------------------------------------------------------------
# The optimiser: ask for a job, tell its loss

class BOHB:
    """BOHB's ask/tell core and its parallel driver, run().

    A job is a dict {"iteration", "bracket", "rung", "index", "budget", "config", "origin"}; tell() takes
    it back with "loss" added (None or non-finite for a failure, recorded as +inf). The defaults of the
    model are the reference implementation's; eta = 2 with budgets 30 -> 120 is the paper's setting."""

    def __init__(self, space, min_budget, max_budget, eta=2, seed=0, *, top_n_percent=15, num_samples=64,
                 random_fraction=1 / 3, bandwidth_factor=3.0, min_bandwidth=1e-3):
        self.space = Space(space)
        self.plan = bracket_plan(min_budget, max_budget, eta)
        self.rng = np.random.default_rng(seed)
        self.top_n_percent, self.num_samples, self.random_fraction = top_n_percent, num_samples, random_fraction
        self.bandwidth_factor, self.min_bandwidth = bandwidth_factor, min_bandwidth
        self.brackets = {}      # (iteration, bracket number) -> Bracket, started and unfinished, oldest first
        self.started = 0        # brackets started, over all iterations
        self.observations = {}  # budget -> ([point in [0, 1]^d], [loss])
        self.history = []       # every told result, in order

    def propose(self):
        """Alg. 1 line 4, one config at a time, by Falkner et al. Alg. 2; returns (config, origin). Uniform at random while no budget has a
        model, and with probability random_fraction; else draw num_samples candidates around good points
        (truncated normals, bandwidth * bandwidth_factor) and keep the one maximising l(x) / g(x), using
        the model of the largest budget that has one."""
        budget, model = self.model()
        if model is None or self.rng.random() < self.random_fraction:
            return self.space.decode(self.rng.random(len(self.space))), "random"
        (good, good_bandwidth), (bad, bad_bandwidth) = model
        centres = good[self.rng.integers(len(good), size=self.num_samples)]  # (num_samples, d)
        scale = self.bandwidth_factor * good_bandwidth  # (d,)
        candidates = truncnorm.rvs(-centres / scale, (1 - centres) / scale, loc=centres, scale=scale,
                                   random_state=self.rng)  # (num_samples, d)
        floor = math.log(1e-32)  # the reference's max(1e-32, .) on both densities
        score = (np.maximum(log_density(candidates, good, good_bandwidth), floor)
                 - np.maximum(log_density(candidates, bad, bad_bandwidth), floor))  # (num_samples,)
        return self.space.decode(candidates[np.argmax(score)]), f"model@{budget:g}"

    def model(self):
        """(budget, densities) of the largest budget with enough results, or (None, None)."""
        for budget in sorted(self.observations, reverse=True):
            points, losses = self.observations[budget]
            densities = fit_densities(np.array(points), np.array(losses), self.top_n_percent, self.min_bandwidth)
            if densities is not None:
                return budget, densities
        return None, None

    def ask(self, n_iterations=None):
        """The next job: from the oldest started bracket that has one, else from a new bracket (so no
        worker idles while a bracket waits on its rung); None once n_iterations Hyperband iterations
        (of len(plan) brackets each) have been started and all their jobs handed out."""
        bracket = next((b for b in self.brackets.values() if b.todo), None)
        if bracket is None:
            if n_iterations is not None and self.started >= n_iterations * len(self.plan):
                return None
            iteration, number = divmod(self.started, len(self.plan))
            bracket = self.brackets[iteration, number] = Bracket(iteration, number, self.plan[number])
            self.started += 1
        index = bracket.todo.pop(0)
        config, origin = self.propose() if bracket.rung == 0 else (bracket.configs[index], "promoted")
        return {"iteration": bracket.iteration, "bracket": bracket.number, "rung": bracket.rung,
                "index": index, "budget": bracket.rungs[bracket.rung][1], "config": config, "origin": origin}

    def tell(self, result):
        """Record a finished job (a job dict with "loss"); returns the result with loss as a float."""
        loss = result["loss"]
        result = {**result, "loss": float(loss) if loss is not None and math.isfinite(loss) else math.inf}
        bracket = self.brackets[result["iteration"], result["bracket"]]
        assert result["rung"] == bracket.rung, "a result for a rung that is not running"
        bracket.record(result["index"], result["config"], result["loss"])
        if bracket.done:
            del self.brackets[result["iteration"], result["bracket"]]
        self.observe(result["config"], result["budget"], result["loss"])
        self.history.append(result)
        return result

    def complete(self, records, n_iterations, log_path="the log"):
        """Whether a log's records hold every job of n_iterations iterations (told to this optimiser
        in the order it asks for them): a finished search needs no worker at all."""
        logged = {job_key(r): r for r in records}
        while (job := self.ask(n_iterations)) is not None:
            record = logged.pop(job_key(job), None)
            if record is None or retry(record) is not None:
                return False
            self.tell_logged(record, job, log_path)
        return True

    def tell_logged(self, record, job, log_path="the log"):
        """tell() a record read back from a log for `job`: it must be at the job's budget and a point
        of this space, else the log was written by another search."""
        if record["budget"] != job["budget"] or set(record["config"]) != set(self.space.names):
            raise cli.UserError(f"{log_path} was written by a search with other budgets or another space: "
                                   "resume with the same settings, or give a new log path.")
        self.tell(record)  # finished before the restart: the logged config is the truth

    def observe(self, config, budget, loss):
        """Give the model one more point (tell() does this; call it alone to warm-start the model)."""
        points, losses = self.observations.setdefault(budget, ([], []))
        points.append(self.space.encode(config))  # the decoded config, as a resumed run sees it
        losses.append(loss)

    def incumbent(self):
        """Alg. 1 line 12, theta*: the best result at the largest budget that has a finite loss (the
        earliest on ties), or None. Interpretation: a config seen only at a smaller budget never wins,
        as in hpbandster; the alternative, the lowest loss at any budget, favours biased short runs."""
        finite = [r for r in self.history if math.isfinite(r["loss"])]
        if not finite:
            return None
        top = max(r["budget"] for r in finite)
        return min((r for r in finite if r["budget"] == top), key=lambda r: r["loss"])

    # --------------------------------------------------------------------------------------------
    # The driver: W evaluations in flight, every result logged, resumable

    def run(self, objective, executor, n_iterations, log_path=None, on_result=None, n_workers=None):
        """Run n_iterations Hyperband iterations (Alg. 1's loop over s, repeated) with n_workers
        evaluations in flight on a concurrent.futures executor (default: its pool size); returns the
        history. objective(config, budget, job) -> {"loss": float, ...} runs in the workers (a
        module-level function for a process pool). on_result(record) is called after each new record is
        logged. With an existing log_path the search resumes: logged jobs are told, not run again (but
        for a transient failure, run once more: retry), and with one worker the resumed search is the
        uninterrupted one. A failed future is logged as a failure; a pool that refuses new work (a
        broken process pool) stops the run: run it again."""
        records, whole = schema.read_jsonl(log_path, "bohb record") if log_path else ([], 0)
        logged = {job_key(r): r for r in records}
        n_workers = n_workers or getattr(executor, "_max_workers", 1)  # both stdlib pools set it
        running = {}  # future -> job, in submission order
        log = files.open_log(log_path, whole) if log_path else None  # after the last whole line
        try:
            while True:
                refusal = None  # set when the pool takes no more work (a broken process pool)
                while refusal is None and len(running) < n_workers and (job := self.ask(n_iterations)) is not None:
                    record = logged.pop(job_key(job), None)
                    if record is not None and (record["budget"] != job["budget"]
                                               or set(record["config"]) != set(self.space.names)):
                        raise ValueError(f"{log_path} was written by a search with other budgets or another "
                                         "space: resume with the same settings, or give a new log path.")
                    if record is not None and (again := retry(record)) is not None:
                        job, record = again, None  # the logged config and origin, as its next attempt
                    if record is None:
                        try:
                            running[executor.submit(run_job, objective, job)] = job
                        except RuntimeError as error:
                            refusal = error
                    else:
                        self.tell_logged(record, job, log_path)
                if not running and refusal is None:
                    return self.history
                # a refused pool: log every evaluation in flight (they fail with it) before stopping
                done, _ = cf.wait(running, return_when=cf.ALL_COMPLETED if refusal else cf.FIRST_COMPLETED)
                for future in [f for f in running if f in done]:
                    job = running.pop(future)
                    error = future.exception()  # the worker itself failed (run_job never raises)
                    record = future.result() if error is None else make_record(
                        job, None, None, "".join(traceback.format_exception(error)), {}, failure_cause(error))
                    if log:
                        files.append_jsonl(log, record, default=to_json)
                    self.tell(record)
                    if on_result:
                        on_result(record)
                if refusal:
                    raise refusal
        finally:
            if log:
                log.close()


def job_key(job):
    return job["iteration"], job["bracket"], job["rung"], job["index"]


def make_record(job, started, loss, error, info, cause=None):
    """A log line: the job, its result (loss and info, or the error and its cause) and its attempt."""
    return {**job, "loss": loss, "error": error, "cause": cause, "attempt": job.get("attempt", 1), "info": info,
            "started": started, "finished": time.time()}


def latest(records):
    """The last record of each job (a retried job's last attempt is the one that counts), in log order."""
    return list({(*job_key(r), r["budget"]): r for r in records}.values())


# ------------------------------------------------------------------------------------------------
# Failures: transient ones are run once more when the search resumes

ATTEMPTS = 2  # a transient failure is run again once (Ray Tune's resume_errored); then it is final
# A failure is transient when its exception (or one it was raised from) is of a type named here,
# anywhere in its class hierarchy, or its message matches the pattern. These are failures of the
# machine rather than of the configuration: memory that other processes held, a worker or node lost.
TRANSIENT_TYPES = (
    "MemoryError",          # the host's memory ran out (a cgroup, ulimit -v)
    "OutOfMemoryError",     # torch.cuda.OutOfMemoryError; ray.exceptions.OutOfMemoryError
    "WorkerDied",           # machinery.executor: a worker process killed or crashed, its evaluations lost
    "BrokenProcessPool",    # concurrent.futures: a process of the pool was killed
    "RayActorError", "ActorDiedError", "NodeDiedError", "WorkerCrashedError", "ObjectLostError",  # Ray
)
TRANSIENT_MESSAGES = re.compile(
    r"out of memory"                  # CUDA's RuntimeError ("CUDA error: out of memory") and its allocator's
    r"|not enough memory"             # PyTorch's CPU allocator ("DefaultCPUAllocator: not enough memory")
    r"|cannot allocate memory"        # ENOMEM
    r"|\bMemoryError\b"               # a MemoryError reported as text (machinery.executor.RemoteError)
    r"|\b(?:worker|actor|node|process)\b.*\b(?:died|killed)\b"  # a lost worker reported as text
    r"|killed by signal",             # a DataLoader worker killed
    re.IGNORECASE)


def failure_cause(error):
    """"transient" if `error` is a failure of the machine (TRANSIENT_TYPES, TRANSIENT_MESSAGES), which
    a later run may not meet; else "deterministic": a diverging loss (train.fit's "the training loss
    became nan"), an invalid configuration, any other exception, which would fail again."""
    seen = set()
    while error is not None and id(error) not in seen:  # the error and those it was raised from
        seen.add(id(error))
        names = {cls.__name__ for cls in type(error).__mro__}
        if names & set(TRANSIENT_TYPES) or TRANSIENT_MESSAGES.search(str(error)):
            return "transient"
        error = error.__cause__ or error.__context__
    return "deterministic"


def retry(record):
    """The job of a logged record to run again on resume, as its next attempt, or None: a failure
    whose cause was transient, not yet retried.

    Interpretation: the retried result takes the failure's place in its rung, so it may change which
    configurations the rung promotes; a record of the earlier promotion that no longer applies stays
    in the log, unused. The alternative, keeping the promotion of the failed run, would rank a
    configuration by a loss it never had."""
    if record["loss"] is not None or record.get("cause") != "transient" or record.get("attempt", 1) >= ATTEMPTS:
        return None
    result = ("loss", "error", "cause", "attempt", "info", "started", "finished")
    return {**{k: v for k, v in record.items() if k not in result}, "attempt": record.get("attempt", 1) + 1}


def to_json(value):
    """json.dumps fallback for what an objective may return: numpy scalars and arrays, else text."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def run_job(objective, job):
    """Alg. 1 line 7 for one config: run the objective in a worker and return the log record. It never
    raises, so a failed or non-finite evaluation becomes loss None (+inf) with its error text and its
    cause (a non-finite loss is deterministic), and the search goes on."""
    started = time.time()
    try:
        info = dict(objective(job["config"], job["budget"], job))
        loss = float(info.pop("loss"))
        error = None if math.isfinite(loss) else f"the objective returned a non-finite loss ({loss})"
        cause = None if error is None else "deterministic"
    except Exception as e:
        info, loss, error, cause = {}, None, traceback.format_exc(), failure_cause(e)
    return make_record(job, started, loss if error is None else None, error, info, cause)


# ------------------------------------------------------------------------------------------------
# Demo: a cheap multi-fidelity function, BOHB against plain Hyperband and random search

BRANIN_SPACE = {"x1": (float, -5.0, 10.0), "x2": (float, 0.0, 15.0)}
BRANIN_MIN = 0.397887


def branin(config, budget, job=None, max_budget=120.0):
    """Branin with the budget-dependent bias of Kandasamy et al. (ICML 2017): at fidelity z = budget /
    max_budget < 1 the coefficients b, c and t drift, so low budgets rank configs well but not exactly.
    Minimum BRANIN_MIN at the full budget."""
    z = min(budget / max_budget, 1.0)
    x1, x2 = config["x1"], config["x2"]
    b = 5.1 / (4 * math.pi**2) - 0.01 * (1 - z)
    c = 5 / math.pi - 0.1 * (1 - z)
    t = 1 / (8 * math.pi) + 0.05 * (1 - z)
    return {"loss": (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10}


def random_search(space, objective, total_budget, max_budget, seed=0):
    """The baseline: uniform random configs, each at the full budget, until total_budget is spent."""
    space, rng = Space(space), np.random.default_rng(seed)
    configs = [space.decode(rng.random(len(space))) for _ in range(int(total_budget // max_budget))]
    return [{"config": c, "budget": max_budget, "loss": objective(c, max_budget, None)["loss"]} for c in configs]


def format_plan(plan):
    s_max = len(plan) - 1
    lines = [f"bracket {number} (s={s_max - number}): " + " -> ".join(f"{n} @ {b:g}" for n, b in rungs)
             for number, rungs in enumerate(plan)]
    evaluations = sum(n for rungs in plan for n, _ in rungs)
    return "\n".join(lines + [f"one iteration: {evaluations} evaluations, total budget {plan_budget(plan):g}"])


def demo(args):
    optimiser = BOHB(BRANIN_SPACE, args.min_budget, args.max_budget, args.eta, args.seed)
    print(format_plan(optimiser.plan))
    filled, spent, best = {}, [0.0], [math.inf]

    def slow_branin(config, budget, job):
        time.sleep(budget * args.seconds_per_budget)  # unequal durations make the asynchrony visible
        return objective(config, budget, job)

    def show(record):
        spent[0] += record["budget"]
        key = record["iteration"], record["bracket"], record["rung"]
        filled.setdefault(key, []).append(record["loss"])
        n, budget = optimiser.plan[record["bracket"]][record["rung"]]
        if len(filled[key]) == n:
            print(f"iteration {key[0]} bracket {key[1]} rung {key[2]}: {n} @ {budget:g} done, "
                  f"losses {' '.join(f'{loss:.2f}' for loss in sorted(filled[key]))}")
        incumbent = optimiser.incumbent()
        if incumbent and incumbent["budget"] == args.max_budget and incumbent["loss"] < best[0]:
            best[0] = incumbent["loss"]
            x = ", ".join(f"{name}={value:.3f}" for name, value in incumbent["config"].items())
            print(f"    incumbent after budget {spent[0]:g}: regret {best[0] - BRANIN_MIN:.4f} at {x}")

    objective = functools.partial(branin, max_budget=args.max_budget)
    with cf.ThreadPoolExecutor(args.workers) as executor:
        optimiser.run(slow_branin, executor, args.iterations, on_result=show)

    total = args.iterations * plan_budget(optimiser.plan)
    print(f"\nmedian final regret over 10 seeds, at total budget {total:g} each:")
    regrets = {"BOHB": [], "Hyperband": [], "random search": []}
    for seed in range(10):
        for name, fraction in (("BOHB", 1 / 3), ("Hyperband", 1.0)):
            runner = BOHB(BRANIN_SPACE, args.min_budget, args.max_budget, args.eta, seed, random_fraction=fraction)
            while (job := runner.ask(args.iterations)) is not None:  # one at a time: nothing waits
                runner.tell({**job, **objective(job["config"], job["budget"], job)})
            regrets[name].append(runner.incumbent()["loss"] - BRANIN_MIN)
        history = random_search(BRANIN_SPACE, objective, total, args.max_budget, seed)
        regrets["random search"].append(min(r["loss"] for r in history) - BRANIN_MIN)
    for name, values in regrets.items():
        print(f"    {name:14s} {np.median(values):.5f}")


@cli.cli
def main(argv=None):
    parser = cli.Parser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--demo", action="store_true", help="run BOHB on a toy multi-fidelity Branin")
    action.add_argument("--plan", action="store_true",
                        help="print the brackets of one Hyperband iteration in whole epochs, as search.py runs them")
    parser.add_argument("--min-budget", type=cli.budget, default=30,
                        help="smallest budget (paper: 30 epochs)")
    parser.add_argument("--max-budget", type=cli.budget, default=120,
                        help="largest budget (paper: 120 epochs)")
    parser.add_argument("--eta", type=eta, default=2, help="successive-halving rate (paper: 2)")
    parser.add_argument("--iterations", type=cli.whole(1, MAX_ITERATIONS), default=21,
                        help="demo: Hyperband iterations to run (paper: about 21, ~300 trainings)")
    parser.add_argument("--workers", type=cli.whole(1, 1024), default=4, help="demo: evaluations in flight")
    parser.add_argument("--seed", type=cli.seed, default=0, help="demo: seed of the optimiser")
    parser.add_argument("--seconds-per-budget", type=cli.nonnegative_float, default=1e-3,
                        help="demo: sleep this long per unit of budget, to imitate training time")
    args = parser.parse_args(argv)
    if args.plan:
        print(format_plan(check_whole_budgets(args.min_budget, args.max_budget, args.eta)))
    else:
        demo(args)  # its budgets are Branin's fidelities, not epochs: bracket_plan's rules alone


def eta(text):
    """--eta: successive halving keeps the best 1/eta, an integer >= 2."""
    value = cli.positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2 (the best 1/eta go on), not {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
