"""Compare training logs written by train_gpt.py (logs/<run_id>.txt), and keep the records leaderboard.

    python compare.py LOG... [--plot out.png]     table of runs (+ val loss vs time and vs tokens)
    python compare.py LOG... --reference          with the record's curve and each run's distance to it (the
                                                  default for logs of one record's preset: record, 2025-08-23,
                                                  2025-12-31, 2026-07-17)
    python compare.py --leaderboard [--records DIR]   records/*/ as a markdown table, also written into
                                                      records/README.md between the leaderboard markers

A log is a header (run_id:, command:, world_size:, device:, versions:, hyperparameters: {JSON}), maybe
nvidia-smi output, the source of train_gpt.py between "==== source of train_gpt.py ====" and
"==== end of source ====" (ignored entirely), then lines "step:N/TOTAL key:value ..." (a val line has
val_loss, every other step line is a train line) and "peak memory allocated: A MiB reserved: R MiB".
Old modded-nanogpt logs (no header, code printed without markers) parse too: a step line must start
the line with digits ("step:12/3000"), which f-strings in the printed code never do.

A run continued after a restart (--resume) logs some steps again: the later lines of a step replace the earlier.
Runs of the same code and hyperparameters (seeds aside) form a group: mean ± std of the final val loss and
train time, and the one-sided t-test of "mean val loss < target" that records/README.md asks of a record;
unfinished runs (no val line at their last step) are named and left out of it.

Training tokens at a step: the line's own tokens:N field (cumulative) if present, else the same step's
tokens:N from another line, else step x tokens_per_step from the hyperparameters -- unless a
batch_schedule is set (tokens per step vary), in which case it is unknown (None, shown as "?").
"""
import argparse
import json
import math
import re
import statistics
import sys
from collections import namedtuple
from pathlib import Path

TARGET = 3.28           # 124M on 8xH100 (modded-nanogpt track 1); also any multi-GPU / datacenter run
TARGET_CONSUMER = 3.29  # 124M on a single consumer GPU (GeForce / RTX, e.g. RTX 4090)
SOURCE_BEGIN, SOURCE_END = "==== source of train_gpt.py ====", "==== end of source ===="
MARK_BEGIN, MARK_END = "<!-- leaderboard -->", "<!-- /leaderboard -->"
HEADER_KEYS = ("run_id", "command", "world_size", "device", "versions", "hyperparameters")
STEP_RE = re.compile(r"^step:(\d+)/(\d+)(?=\s|$)(.*)$")
MEM_RE = re.compile(r"^peak memory (?:allocated|consumption): (\d+) MiB(?: reserved: (\d+) MiB)?")  # new, old
WARMUP_RE = re.compile(r"^warmup: .* took ([\d.]+)s$")  # torch.compile's untimed warmup steps

# The records the presets reproduce, modded-nanogpt track 1, each as one of its runs on 8xH100 (its log in
# ../shared/reference, MIT): (step, val loss, train_time ms, training tokens before the step).
RECORD_CURVES = {
    # 2025-08-23 (SparseAttnGate), log 020630eb, one of its 14 runs: 393,216 tokens a step
    "2025-08-23": [(step, loss, ms, step * 393_216) for step, loss, ms in [
        (0, 10.8258, 0), (125, 4.6029, 11781), (250, 4.0788, 23571), (375, 3.8792, 35392), (500, 3.7326, 47422),
        (625, 3.6468, 59523), (750, 3.5854, 72652), (875, 3.5355, 85664), (1000, 3.4893, 98396),
        (1125, 3.4387, 110911), (1250, 3.3926, 123554), (1375, 3.3538, 136200), (1500, 3.3189, 148955),
        (1625, 3.2901, 161726), (1695, 3.2772, 168938)]],
    # 2025-12-31 (GatesToCompiledAdam), log 96a77cab: 131,072 tokens a step, 262,144 from step 595, 393,216 from 1190
    "2025-12-31": [(step, loss, ms, 131_072 * min(step, 595) + 262_144 * min(max(step - 595, 0), 595)
                    + 393_216 * max(step - 1190, 0)) for step, loss, ms in [
        (0, 10.8296, 0), (250, 4.6253, 8652), (500, 4.2940, 17183), (750, 4.0172, 29977), (1000, 3.7649, 45396),
        (1250, 3.5258, 62396), (1500, 3.3965, 84411), (1750, 3.2991, 106367), (1825, 3.2780, 112971)]],
    # 2026-07-17 (FP8DownProjection), log 11cb620c: 131,072 tokens a step, 262,144 from step 460, 393,216 from 920
    "2026-07-17": [(step, loss, ms, 131_072 * min(step, 460) + 262_144 * min(max(step - 460, 0), 460)
                    + 393_216 * max(step - 920, 0)) for step, loss, ms in [
        (0, 10.8311, 0), (250, 4.4888, 7930), (500, 4.1451, 16801), (750, 3.7368, 31010), (1000, 3.4625, 47299),
        (1250, 3.3330, 67961), (1390, 3.2775, 79532)]],
}
PRESET_RECORDS = {"record": "2026-07-17", "2025-08-23": "2025-08-23", "2025-12-31": "2025-12-31",
                  "2026-07-17": "2026-07-17"}

ValPoint = namedtuple("ValPoint", "step train_time_ms tokens val_loss val_bpb")
TrainPoint = namedtuple("TrainPoint", "step train_time_ms tokens train_loss tok_s mfu epoch")


class LogError(Exception):
    """A log that cannot be used; the message names the file."""


def _num(text):
    """'1234ms' -> 1234.0, '41.2%' -> 41.2, 'n/a' / 'nanms' -> None."""
    try:
        value = float(re.sub(r"(ms|%|s)$", "", text))
    except ValueError:
        return None
    return None if value != value else value  # nan -> None


def parse_log(path):
    """Parse one log into a dict: header fields, val/train points, total steps, peak memory (MiB)."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        raise LogError(f"{path}: cannot read ({e.strerror or e})") from None
    run = dict(path=str(path), run_id=path.stem, command=None, world_size=None, device=None, versions=None,
               hyperparameters={}, total_steps=None, peak_mem_allocated=None, peak_mem_reserved=None, compile_s=None,
               source=[])
    rows, in_source, seen_step, header = [], False, False, set()
    for line in lines:
        if line.strip() == SOURCE_BEGIN:
            in_source = True
        elif line.strip() == SOURCE_END:
            in_source = False
        elif in_source:
            run["source"].append(line)
            continue
        elif m := STEP_RE.match(line):
            seen_step = True
            fields = dict(kv.split(":", 1) for kv in m[3].split() if ":" in kv)
            rows.append((int(m[1]), fields))
            run["total_steps"] = int(m[2])
        elif m := MEM_RE.match(line):
            run["peak_mem_allocated"] = int(m[1])
            run["peak_mem_reserved"] = int(m[2]) if m[2] else None
        elif m := WARMUP_RE.match(line):
            run["compile_s"] = float(m[1])
        elif not seen_step and (key := line.split(":", 1)[0]) in HEADER_KEYS and key not in header:
            header.add(key)
            value = line.split(":", 1)[1].strip()
            if key == "hyperparameters":
                try:
                    value = json.loads(value)
                    assert isinstance(value, dict)
                except (json.JSONDecodeError, AssertionError):
                    raise LogError(f"{path}: hyperparameters line is not a JSON object") from None
            run[key] = int(value) if key == "world_size" and value.isdigit() else value
    if not rows:
        raise LogError(f"{path}: no step lines (not a train_gpt.py log, or the run died before step 0)")

    hp = run["hyperparameters"]
    tps = None if hp.get("batch_schedule") else hp.get("tokens_per_step")
    known = {step: int(f["tokens"]) for step, f in rows if (f.get("tokens") or "").isdigit()}

    def tokens(step, f):
        if (f.get("tokens") or "").isdigit():
            return int(f["tokens"])
        if step in known:
            return known[step]
        return step * tps if tps else 0 if step == 0 and known else None

    kept = []
    for step, f in rows:  # a step logged again after a restart: the run went back there, drop what followed
        kind = "val_loss" in f
        if any(s >= step and ("val_loss" in g) == kind for s, g in kept):
            kept = [(s, g) for s, g in kept if s < step]
        kept.append((step, f))
    run["val"], run["train"] = [], []
    for step, f in kept:
        t, n = _num(f.get("train_time", "")), tokens(step, f)
        if "val_loss" in f:
            run["val"].append(ValPoint(step, t, n, _num(f["val_loss"]), _num(f.get("val_bpb", ""))))
        else:
            run["train"].append(TrainPoint(step, t, n, _num(f.get("train_loss", "")),
                                           _num(f.get("tok/s", "")), _num(f.get("mfu", "")), _num(f.get("epoch", ""))))
    return run


def record_loss_at(step, record="2025-08-23"):
    """The record's val loss at `step`, linear between its val points (None past its last step)."""
    curve = RECORD_CURVES[record]
    for (s0, l0, *_), (s1, l1, *_) in zip(curve, curve[1:]):
        if s0 <= step <= s1:
            return l0 + (l1 - l0) * (step - s0) / (s1 - s0)
    return None


def summarize(run, record=None):
    """The numbers of a run's table row (None where unknown); delta_record against `record`'s curve."""
    last_val = run["val"][-1] if run["val"] else None
    last = max(run["val"] + run["train"], key=lambda p: p.step)  # at the final step: its val line
    time_ms = last.train_time_ms
    tok_s = next((p.tok_s for p in reversed(run["train"]) if p.tok_s), None)
    if tok_s is None and last.tokens and time_ms:
        tok_s = last.tokens / (time_ms / 1000)
    mfu = next((p.mfu for p in reversed(run["train"]) if p.mfu is not None), None)
    epoch = next((p.epoch for p in reversed(run["train"]) if p.epoch is not None), None)  # > 1: data was repeated
    delta = record and last_val and last_val.val_loss is not None and record_loss_at(last_val.step, record)
    return dict(run=run["run_id"], last_step=last.step, total_steps=run["total_steps"], tokens=last.tokens,
                delta_record=last_val.val_loss - delta if delta else None,
                val_loss=last_val and last_val.val_loss, val_bpb=last_val and last_val.val_bpb,
                train_time_s=None if time_ms is None else time_ms / 1000,
                step_avg_ms=time_ms / last.step if time_ms is not None and last.step else None, tok_s=tok_s,
                mfu=mfu, epoch=epoch and int(epoch), compile_s=run["compile_s"], peak_mem=run["peak_mem_allocated"])


def human(n):
    """491000 -> '491K', 12300000 -> '12.3M', 670000000 -> '0.67B'."""
    if n is None:
        return "?"
    for scale, suffix, fmt in ((1e8, "B", "{:.2f}"), (1e6, "M", "{:.1f}"), (1e3, "K", "{:.0f}")):
        if n >= scale:
            return fmt.format(n / (1e9 if suffix == "B" else scale)) + suffix
    return str(int(n))


def fmt(value, spec):
    return "?" if value is None else format(value, spec)


def table(runs, reference=None):
    """tok/s, mfu and epoch are the last train line's (the latest interval; epoch > 1: the run repeated its data);
    step_avg covers the whole run. With a reference (a record's date): the last val loss minus the record's at the
    same step (negative = ahead of the record)."""
    head = ["run", "steps", "tokens", "epoch", "val_loss", "val_bpb", "train_time_s", "step_avg_ms", "tok/s", "mfu_%",
            "compile_s", "peak_mem_MiB"] + ["Δ_vs_record"] * bool(reference)
    body = []
    for s in (summarize(run, reference) for run in runs):
        body.append([s["run"], f"{s['last_step']}/{s['total_steps']}", human(s["tokens"]), fmt(s["epoch"], "d"),
                     fmt(s["val_loss"], ".4f"), fmt(s["val_bpb"], ".4f"), fmt(s["train_time_s"], ".1f"),
                     fmt(s["step_avg_ms"], ".1f"),
                     fmt(s["tok_s"], ",.0f"), fmt(s["mfu"], ".1f"), fmt(s["compile_s"], ".1f"),
                     fmt(s["peak_mem"], "d")] + [fmt(s["delta_record"], "+.4f")] * bool(reference))
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    just = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([just(head), "  ".join("-" * w for w in widths)] + [just(r) for r in body])


def build_figure(runs, reference=None):
    """Figure with val loss vs train time (s) and vs training tokens; the target line has gid 'target', the
    curve of the record `reference` (a date) gid 'reference'."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # headless, and no pyplot global state
    from matplotlib.figure import Figure
    fig = Figure(figsize=(13, 5))
    FigureCanvasAgg(fig)
    ax_t, ax_n = fig.subplots(1, 2)
    losses = []
    for run in runs:
        pts = [p for p in run["val"] if p.val_loss is not None]
        losses += [p.val_loss for p in pts]
        timed = [p for p in pts if p.train_time_ms is not None]
        ax_t.plot([p.train_time_ms / 1000 for p in timed], [p.val_loss for p in timed], marker=".", label=run["run_id"])
        counted = [p for p in pts if p.tokens is not None]
        if counted:  # no tokens known (old logs): no curve on the tokens panel
            ax_n.plot([p.tokens for p in counted], [p.val_loss for p in counted], marker=".", label=run["run_id"])
    if reference:
        curve = RECORD_CURVES[reference]
        for ax, xs in ((ax_t, [ms / 1000 for _, _, ms, _ in curve]), (ax_n, [tokens for *_, tokens in curve])):
            ax.plot(xs, [loss for _, loss, *_ in curve], color="black", linestyle=":", marker="x", gid="reference",
                    label=f"record {reference} (8xH100)")
        losses += [loss for _, loss, *_ in curve]
    for ax, xlabel in ((ax_t, "train time (s)"), (ax_n, "training tokens")):
        has_curves = bool(ax.lines)
        if losses:  # every point in view, step 0 (~10.8) too; a log scale keeps the end of the curves apart
            ax.set_yscale("log")
            ax.set_ylim(min(losses) * 0.98, max(losses) * 1.03)
            ax.yaxis.set_major_formatter(lambda y, _: f"{y:g}")
            ax.yaxis.set_minor_formatter(lambda y, _: f"{y:g}" if round(y * 10) % 5 == 0 else "")
            lo, hi = ax.get_ylim()
            if lo <= TARGET <= hi:
                ax.axhline(TARGET, color="gray", linestyle="--", linewidth=1, gid="target", label=f"target {TARGET}")
        ax.set_xlabel(xlabel)
        if ax is ax_n:
            ax.xaxis.set_major_formatter(lambda x, _: human(x) if x >= 0 else "")
        ax.set_ylabel("val loss")
        ax.grid(alpha=0.3)
        if has_curves:
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {xlabel} in these logs", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def betainc(a, b, x):
    """The regularized incomplete beta function I_x(a, b), from its continued fraction (the modified Lentz
    method, as in Numerical Recipes' betacf)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast on the other side
        return 1 - betainc(b, a, 1 - x)
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / (c if abs(c) > tiny else tiny)
            h *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)
    return math.exp(log_front) * h / a


def one_sided_p(values, target):
    """p value of the one-sample t-test that the mean of values is below target (as scipy's ttest_1samp with
    alternative='less'); None for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    mean, std = statistics.mean(values), statistics.stdev(values)
    if std == 0:
        return 0.0 if mean < target else 1.0
    t, df = (mean - target) / (std / math.sqrt(n)), n - 1
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t < 0 else 1 - tail


def groups(runs):
    """Runs of the same source and hyperparameters, seed and run names aside: -> [[run, ...], ...]."""
    ignored = {"run_id", "seed", "resume", "device", "export", "sample", "prompt"}
    found = {}
    for run in runs:
        hp = {k: v for k, v in run["hyperparameters"].items() if k not in ignored}
        key = json.dumps([hp, run["source"]], sort_keys=True)
        found.setdefault(key, []).append(run)
    return list(found.values())


def finished(run):
    return bool(run["val"]) and run["val"][-1].step == run["total_steps"]


def group_summary(members):
    """A line of a group's final val loss and train time (mean ± std over finished runs) and the t-test against
    target; unfinished runs (killed, still running) are named and left out."""
    done = [r for r in members if finished(r)]
    sums = [summarize(r) for r in done]
    vals = [s["val_loss"] for s in sums if s["val_loss"] is not None]
    times = [s["train_time_s"] for s in sums if s["train_time_s"] is not None]
    spread = lambda xs, spec: f"{statistics.mean(xs):{spec}} ± {statistics.stdev(xs) if len(xs) > 1 else 0:{spec}}"
    target = target_for(members[0])
    p = one_sided_p(vals, target)
    left_out = [r["run_id"] for r in members if not finished(r)]
    return (f"{', '.join(r['run_id'] for r in done)}: n={len(done)}"
            f" val_loss {spread(vals, '.4f') if vals else '?'} train_time_s {spread(times, '.1f') if times else '?'}"
            f" p(mean < {target})={'?' if p is None else format(p, '.4f')} (one-sided t-test, n={len(vals)})"
            + (f"; left out, unfinished: {', '.join(left_out)}" if left_out else ""))


def target_for(run):
    """3.29 for one consumer GPU (GeForce/RTX, no datacenter name), else 3.28; see records/README.md."""
    device = run["device"] or ""
    consumer = re.search(r"GeForce|RTX", device) and not re.search(r"H100|H200|A100|B200|RTX A|RTX PRO", device)
    return TARGET_CONSUMER if run["world_size"] == 1 and consumer else TARGET


def leaderboard(records_dir):
    """Markdown table of records/*/ (one row per folder, mean over its logs), sorted by train time."""
    rows = []
    for folder in sorted(p for p in Path(records_dir).iterdir() if p.is_dir()):
        logs = sorted(folder.glob("*.txt"))
        if not logs:
            continue
        runs = [parse_log(p) for p in logs]
        sums = [summarize(r) for r in runs]
        vals, times = [s["val_loss"] for s in sums], [s["train_time_s"] for s in sums]
        val = sum(vals) / len(vals) if None not in vals else None
        time = sum(times) / len(times) if None not in times else None
        device, ws = runs[0]["device"], runs[0]["world_size"]
        hardware = "?" if not device else device if re.search(r"\sx\d+$", device) else f"{ws or '?'}× {device}"
        date = folder.name[:10] if re.match(r"\d{4}-\d{2}-\d{2}", folder.name) else ""
        readme = folder / "README.md"
        declared = re.search(r"^target:\s*([\d.]+)\s*$", readme.read_text() if readme.exists() else "", re.M)
        target = float(declared[1]) if declared else target_for(runs[0])  # e.g. "target: 2.92" (medium track)
        met = "?" if val is None else f"{'yes' if val <= target else 'no'} (≤ {target})"
        rows.append((time if time is not None else float("inf"),
                     [f"[{folder.name}]({folder.name}/)", fmt(val, ".4f"), fmt(time, ".1f"), str(len(runs)),
                      f"{sums[0]['last_step']}", hardware, date, met]))
    lines = ["| record | val loss (mean) | train time (s) | logs | steps | hardware | date | target met |",
             "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for _, r in sorted(rows, key=lambda r: r[0])]
    if not rows:
        lines.append("\n_No records yet._")
    return "\n".join(lines)


def write_leaderboard(readme, text):
    """Put text between the markers of readme (markers appended if missing, file created if absent)."""
    readme = Path(readme)
    old = readme.read_text() if readme.exists() else "# Records\n"
    block = f"{MARK_BEGIN}\n{text}\n{MARK_END}"
    if MARK_BEGIN in old and MARK_END in old:
        head, rest = old.split(MARK_BEGIN, 1)
        new = head + block + rest.split(MARK_END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n## Leaderboard\n\n" + block + "\n"
    readme.write_text(new)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="*", help="log files (logs/<run_id>.txt)")
    ap.add_argument("--plot", metavar="OUT.png", help="save val loss vs time / vs tokens to this file")
    ap.add_argument("--reference", action=argparse.BooleanOptionalAction, default=None,
                    help="the record's curve and Δ column (default: on when every log is of one record's preset;"
                         " the 2025-08-23 record's when they are not)")
    ap.add_argument("--leaderboard", action="store_true", help="print and write the records leaderboard")
    ap.add_argument("--records", default=str(Path(__file__).resolve().parent / "records"), help="records folder")
    args = ap.parse_args(argv)
    if not args.logs and not args.leaderboard:
        ap.error("give log files and/or --leaderboard")
    try:
        runs = []
        for path in args.logs:  # a run that died before its first step line is noted, not fatal
            try:
                runs.append(parse_log(path))
            except LogError as e:
                print(f"compare.py: skipping {e}", file=sys.stderr)
        if args.logs and not runs:
            raise LogError("none of the logs has a step line")
        records = {PRESET_RECORDS.get(r["hyperparameters"].get("preset")) for r in runs}
        one = next(iter(records)) if len(records) == 1 else None
        reference = (one if args.reference is None else (one or "2025-08-23") if args.reference else None)
        if runs:
            print(table(runs, reference))
            for members in groups(runs):
                if len(members) > 1:
                    print("group " + group_summary(members))
        if runs and args.plot:
            build_figure(runs, reference).savefig(args.plot, dpi=120)
            print(f"plot: {args.plot}")
        if args.leaderboard:
            if not Path(args.records).is_dir():
                raise LogError(f"{args.records}: records folder does not exist")
            text = leaderboard(args.records)
            print(text)
            write_leaderboard(Path(args.records) / "README.md", text)
    except LogError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
