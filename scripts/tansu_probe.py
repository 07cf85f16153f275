#!/usr/bin/env python3
"""Probes the Kafka features revpulse relies on against a broker (Tansu by
default, as started by scripts/tansu.sh) with librdkafka 2.12.1 through
confluent-kafka==2.12.1 (the librdkafka revpulse's rdkafka-sys bundles):

  python3 -m venv .revpulse/tansu-probe-venv
  .revpulse/tansu-probe-venv/bin/pip install confluent-kafka==2.12.1
  .revpulse/tansu-probe-venv/bin/python scripts/tansu_probe.py [--brokers H:P] [--big N] [--write-only T | --check T]

Each step prints one line: OK/FAIL, what it checked, the numbers. `--write-only
T` produces a known data set to topic T and commits offsets with metadata;
`--check T` (after a broker restart) verifies that T, its records and the
commits are still there.
"""
import argparse, sys, time, uuid
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

PARTS = 4
results = []


def report(ok, what, detail=""):
    results.append(ok)
    print(f"{'OK  ' if ok else 'FAIL'} {what}: {detail}", flush=True)


def admin(b):
    return AdminClient({"bootstrap.servers": b})


def create(b, topic, parts=PARTS):
    a = admin(b)
    a.create_topics([NewTopic(topic, parts, 1)], operation_timeout=10)[topic].result(15)
    md = a.list_topics(topic, timeout=10).topics[topic]
    return len(md.partitions)


def produce(b, topic, n, batches, extra=None, tag="m"):
    """n keyed messages with headers, flushed in `batches` flushes; returns
    (seconds, delivered offsets per partition)."""
    conf = {"bootstrap.servers": b, "acks": "all", "linger.ms": 5, "queue.buffering.max.messages": 1_000_000}
    conf.update(extra or {})
    p, got, errs = Producer(conf), {}, []

    def dr(err, m):
        if err:
            errs.append(err)
        else:
            got.setdefault(m.partition(), []).append(m.offset())

    t, per = time.time(), -(-n // batches)
    for i in range(n):
        p.produce(topic, key=f"{tag}-{i}", value=f"value-{tag}-{i}", headers=[("seq", str(i).encode()), ("tag", tag.encode())], on_delivery=dr)
        if (i + 1) % per == 0:
            p.flush(60)
        p.poll(0)
    p.flush(120)
    assert not errs, errs[:3]
    return time.time() - t, got


def consumer(b, group=None, **extra):
    conf = {"bootstrap.servers": b, "group.id": group or f"probe-{uuid.uuid4()}", "enable.auto.commit": False,
            "enable.partition.eof": True, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10}
    conf.update(extra)
    return Consumer(conf)


def read(b, topic, starts, parts=PARTS, timeout=60, **extra):
    """Reads every partition from starts[p] to its end (partition EOF);
    returns ({partition: [(offset, key, value, headers)]}, seconds, cached high watermarks)."""
    c = consumer(b, **extra)
    c.assign([TopicPartition(topic, p, starts.get(p, 0)) for p in range(parts)])
    out, eof, t = {p: [] for p in range(parts)}, set(), time.time()
    while len(eof) < parts and time.time() - t < timeout:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
            else:
                print("  consumer error:", m.error())
            continue
        eof.discard(m.partition())
        out[m.partition()].append((m.offset(), m.key(), m.value(), m.headers()))
    secs = time.time() - t
    cached = {p: c.get_watermark_offsets(TopicPartition(topic, p), cached=True) for p in range(parts)}
    c.close()
    return out, secs, cached


def ends(b, topic, parts=PARTS):
    """High watermarks three ways: ListOffsets via get_watermark_offsets,
    AdminClient.list_offsets latest, and earliest."""
    c = consumer(b)
    wm = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(parts)}
    c.close()
    a = admin(b)
    spec = lambda s: {TopicPartition(topic, p): s for p in range(parts)}
    latest = {tp.partition: r.offset for tp, r in ((tp, f.result(10)) for tp, f in a.list_offsets(spec(OffsetSpec.latest())).items())}
    earliest = {tp.partition: r.offset for tp, r in ((tp, f.result(10)) for tp, f in a.list_offsets(spec(OffsetSpec.earliest())).items())}
    return wm, latest, earliest


def true_end(b, topic, p, latest):
    """The workaround for Tansu's ListOffsets: `latest - 1` is the base offset
    of the partition's last batch; reading from there to partition EOF
    yields the real end (the Fetch response's high watermark)."""
    c = consumer(b)
    c.assign([TopicPartition(topic, p, max(latest - 1, 0))])
    t = time.time()
    while time.time() - t < 10:
        m = c.poll(0.5)
        if m is not None and m.error() and m.error().code() == KafkaError._PARTITION_EOF:
            c.close()
            return m.offset()
    c.close()
    return None


def check_records(recs, tag, total):
    """Keys/values/headers match and offsets are contiguous from 0."""
    seen, bad = 0, []
    for p, rs in recs.items():
        for want, (off, k, v, h) in enumerate(rs):
            i = int(k.decode().rsplit("-", 1)[1])
            if off != want or v != f"value-{tag}-{i}".encode() or h != [("seq", str(i).encode()), ("tag", tag.encode())]:
                bad.append((p, want, off, k, v, h))
            seen += 1
    return seen == total and not bad, f"{seen}/{total} records, {len(bad)} wrong{' e.g. ' + str(bad[0]) if bad else ''}"


def produce_case(b, n, batches, label, extra=None):
    topic = f"probe-{label}-{n}-{batches}-{uuid.uuid4().hex[:6]}"
    create(b, topic)
    secs, got = produce(b, topic, n, batches, extra, tag=label)
    counts = {p: len(o) for p, o in sorted(got.items())}
    contiguous = all(sorted(o) == list(range(len(o))) for o in got.values())
    report(contiguous, f"produce {n} ({batches} flushes, {label})", f"{n / secs:,.0f} msg/s; per-partition counts {counts}; delivery offsets contiguous from 0: {contiguous}")
    wm, latest, earliest = ends(b, topic)
    recs, rsecs, cached = read(b, topic, {})
    ok, detail = check_records(recs, label, n)
    report(ok, f"  consume all from 0", f"{detail}; {n / rsecs:,.0f} msg/s")
    real = {p: len(recs[p]) for p in range(PARTS)}
    report(all(wm[p][1] == real[p] for p in range(PARTS)), "  get_watermark_offsets (ListOffsets) high == records",
           f"queried {[wm[p] for p in range(PARTS)]}, real ends {[real[p] for p in range(PARTS)]}")
    report(all(latest[p] == real[p] for p in range(PARTS)), "  list_offsets latest", f"{[latest[p] for p in range(PARTS)]}")
    report(all(earliest[p] == 0 for p in range(PARTS)), "  list_offsets earliest", f"{[earliest[p] for p in range(PARTS)]}")
    report(all(cached[p][1] == real[p] for p in range(PARTS)), "  cached watermark (Fetch response) high == records",
           f"{[cached[p] for p in range(PARTS)]}")
    te = [true_end(b, topic, p, latest[p]) for p in range(PARTS)]
    report(te == [real[p] for p in range(PARTS)], "  workaround: EOF offset reading from (latest - 1)", f"{te}")
    mid = {p: real[p] // 2 for p in range(PARTS)}
    recs2, _, _ = read(b, topic, mid)
    ok = all([r[0] for r in recs2[p]] == list(range(mid[p], real[p])) for p in range(PARTS))
    report(ok, "  consume from the middle", f"starts {mid}, got {[len(recs2[p]) for p in range(PARTS)]} contiguous to the end: {ok}")
    return topic, real


def commit_case(b, topic, real, group):
    c = consumer(b, group)
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTS)])
    tpl = [TopicPartition(topic, p, real[p], f"revpulse.watermark={1000 + p}") for p in range(PARTS)]
    done = []
    c.commit(offsets=tpl, asynchronous=True)  # what revpulse does (CommitMode::Async)
    res = c.commit(offsets=tpl, asynchronous=False)
    report(all(r.error is None for r in res), "commit(tpl with metadata) via assign()-only group consumer", f"{[(r.partition, r.offset, r.error) for r in res]}")
    c.close()
    return check_committed(b, topic, real, group)


def check_committed(b, topic, real, group):
    f = consumer(b, group)
    got = f.committed([TopicPartition(topic, p) for p in range(PARTS)], timeout=10)
    f.close()
    offs = [(r.partition, r.offset) for r in got]
    metas = [r.metadata for r in got]
    report(all(r.offset == real[r.partition] for r in got), "committed() offsets from a fresh consumer", f"{offs}, expected {[real[p] for p in range(PARTS)]}")
    report(all(r.metadata == f"revpulse.watermark={1000 + r.partition}" for r in got), "committed() metadata preserved", f"{metas}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--big", type=int, default=50_000)
    ap.add_argument("--write-only")
    ap.add_argument("--check")
    a = ap.parse_args()
    b = a.brokers
    if a.write_only:
        n = create(b, a.write_only)
        report(n == PARTS, f"create {a.write_only}", f"{n} partitions")
        _, got = produce(b, a.write_only, 10_000, 10, tag="persist")
        real = {p: len(got.get(p, [])) for p in range(PARTS)}
        print("  real ends", real)
        commit_case(b, a.write_only, real, "probe-persist")
    elif a.check:
        md = admin(b).list_topics(timeout=10).topics
        report(a.check in md, f"topic {a.check} survived", f"{len(md[a.check].partitions) if a.check in md else 0} partitions")
        recs, _, cached = read(b, a.check, {})
        ok, detail = check_records(recs, "persist", 10_000)
        report(ok, "records survived", detail)
        real = {p: len(recs[p]) for p in range(PARTS)}
        wm, latest, _ = ends(b, a.check)
        print(f"  after restart: queried watermarks {wm}, cached {cached}")
        check_committed(b, a.check, real, "probe-persist")
    else:
        t = f"probe-create-{uuid.uuid4().hex[:6]}"
        n = create(b, t, 8)
        report(n == 8, "AdminClient.create_topics(8 partitions)", f"{n} partitions")
        try:
            create(b, t, 8)
            report(False, "create an existing topic fails", "no error")
        except Exception as e:
            report("TOPIC_ALREADY_EXISTS" in str(e), "create an existing topic fails", str(e)[:80])
        for n in (10, 1000, a.big):
            for batches in (1, 10):
                produce_case(b, n, batches, "acks")
        topic, real = produce_case(b, 1000, 10, "idem", {"enable.idempotence": True})
        commit_case(b, topic, real, f"probe-commit-{uuid.uuid4().hex[:6]}")
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")


if __name__ == "__main__":
    main()
