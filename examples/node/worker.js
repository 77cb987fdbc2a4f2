// A Conveyor worker in Node.js, on unary Lease/Ack or on StreamWork.
//
//   node worker.js --queue images [--queue more] [--stream] [--slots 8] [--lease-seconds 30]
//                  [--count N] [--no-extend]
//
// It follows the worker loop docs/protocol.md recommends: lease only for idle slots,
// extend leases well before they run out, send acks in batches, and on SIGTERM/SIGINT
// stop leasing, give back (Release) what has not started and let running tasks finish.
//
// The handler echoes its JSON payload. Two payload fields make it misbehave on purpose:
// `sleep_ms` (work that long) and `fail` (report a failed attempt with that message).
// Prints one JSON line per event: ready, leased, acked, failed, rejected (a stale lease:
// FAILED_PRECONDITION), released. --count N exits after N outcomes; --no-extend never
// extends leases (a worker that stalls).
"use strict";

const { parseArgs } = require("node:util");
const { grpc, connect, call, duration, decode, encodeJson } = require("./conveyor");

const { values: args } = parseArgs({
  options: {
    queue: { type: "string", multiple: true, default: [""] },
    stream: { type: "boolean", default: false },
    slots: { type: "string", default: "4" },
    "lease-seconds": { type: "string", default: "30" },
    count: { type: "string", default: "0" },
    "no-extend": { type: "boolean", default: false },
    "worker-id": { type: "string", default: `node-${process.pid}` },
  },
});

const SLOTS = Number(args.slots);
const LEASE_SECONDS = Number(args["lease-seconds"]);
const ACK_BATCH_MS = 5; // outcomes finished within this window share one Ack/Fail call
const FAILED_PRECONDITION = grpc.status.FAILED_PRECONDITION;

function emit(event, fields = {}) {
  console.log(JSON.stringify({ event, ...fields }));
}

/** The user's code: returns the result value, or throws to fail the attempt. */
async function handle(task) {
  const payload = decode(task.payload, task.content_type);
  if (payload && payload.sleep_ms) await new Promise((r) => setTimeout(r, payload.sleep_ms));
  if (payload && payload.fail) throw new Error(payload.fail);
  return { echo: payload, kind: task.kind, attempt: task.attempt, worker: "node" };
}

/** Book-keeping shared by both transports: slots, leases held, outcomes, --count. */
class Slots {
  constructor(onIdle, onStop = () => {}) {
    this.leases = new Map(); // task id -> lease_token, for extension and release
    this.done = 0;
    this.stopping = false;
    this.onIdle = onIdle; // stopping, and nothing held any more
    this.onStop = onStop;
  }

  /** Lease nothing more; running tasks finish and are acked. */
  stop() {
    if (this.stopping) return;
    this.stopping = true;
    emit("stopping", { running: this.leases.size });
    this.onStop();
    if (this.leases.size === 0) this.onIdle();
  }

  get free() {
    return this.stopping ? 0 : SLOTS - this.leases.size;
  }

  settled(id, event, fields) {
    this.leases.delete(id);
    emit(event, { id, ...fields });
    this.done += 1;
    const limit = Number(args.count);
    if (limit && this.done >= limit) this.stop();
    else if (this.stopping && this.leases.size === 0) this.onIdle();
  }
}

function outcomeOf(task, result, error) {
  const lease = { task_id: task.id, lease_token: task.lease_token };
  if (!error) return { ack: { lease, result: encodeJson(result) } };
  return { failure: { lease, error: { type: error.name, message: error.message, details: error.stack || "" } } };
}

// ---- unary: Lease, ExtendLease, Ack, Fail, Release ----------------------------------------

async function runUnary(client, metadata) {
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  let parked = null; // the Lease call in flight, cancelled when a stop begins
  // Cancelling a parked Lease is safe: tasks the broker picked for it are released at once.
  const slots = new Slots(finish, () => parked && parked.cancel());
  let pending = []; // outcomes not yet sent
  let flushTimer = null;

  async function flush() {
    flushTimer = null;
    const batch = pending;
    pending = [];
    const acks = batch.filter((o) => o.ack).map((o) => o.ack);
    const failures = batch.filter((o) => o.failure).map((o) => o.failure);
    await Promise.all([
      acks.length && send("Ack", { acks }, acks, "acked"),
      failures.length && send("Fail", { failures }, failures, "failed"),
    ]);
  }

  async function send(method, request, items, event) {
    let outcomes;
    try {
      outcomes = (await call(client, method, request, metadata)).outcomes;
    } catch (error) {
      // One item that fails fails the whole call with its status (docs/protocol.md).
      if (items.length !== 1) throw error;
      outcomes = [{ task_id: items[0].lease.task_id, code: error.code, message: error.details }];
    }
    for (const outcome of outcomes) {
      if (outcome.code === 0) slots.settled(outcome.task_id, event);
      else slots.settled(outcome.task_id, "rejected", { code: outcome.code, message: outcome.message });
    }
  }

  function report(outcome) {
    pending.push(outcome);
    if (!flushTimer) flushTimer = setTimeout(() => flush().catch(fatal), ACK_BATCH_MS);
  }

  const heartbeat = startHeartbeat(async (leases) => {
    const answer = await call(client, "ExtendLease", { leases }, metadata).catch((error) => {
      if (leases.length === 1 && error.code === FAILED_PRECONDITION) return { results: [] };
      throw error;
    });
    for (const result of answer.results) {
      if (result.cancel_requested) emit("cancel_requested", { id: result.outcome.task_id });
    }
  }, slots);

  process.once("SIGTERM", () => slots.stop());
  process.once("SIGINT", () => slots.stop());
  emit("ready", { transport: "unary" });
  while (!slots.stopping) {
    if (slots.free === 0) {
      await new Promise((r) => setTimeout(r, 10)); // every slot busy: lease nothing
      continue;
    }
    const request = {
      queues: args.queue,
      max_tasks: slots.free, // only as many as there are idle slots
      lease_duration: duration(LEASE_SECONDS),
      wait: duration(5), // long poll; an empty answer is normal
      worker_id: args["worker-id"],
    };
    parked = call(client, "Lease", request, metadata, 10);
    let tasks;
    try {
      tasks = (await parked).tasks;
    } catch (error) {
      if (error.code === grpc.status.CANCELLED && slots.stopping) break;
      throw error;
    } finally {
      parked = null;
    }
    if (slots.stopping) {
      // A stop began while the tasks were on their way: give them back, the attempt
      // is not used up.
      await release(client, metadata, tasks);
      break;
    }
    for (const task of tasks) start(task, slots, report);
  }
  if (slots.leases.size) await finished;
  clearInterval(heartbeat);
  if (pending.length) await flush();
}

/** Release: the tasks are READY again at once and their attempt is given back. */
async function release(client, metadata, tasks) {
  if (!tasks.length) return;
  const leases = tasks.map((t) => ({ task_id: t.id, lease_token: t.lease_token }));
  await call(client, "Release", { leases }, metadata);
  for (const t of tasks) emit("released", { id: t.id });
}

function start(task, slots, report) {
  slots.leases.set(task.id, task.lease_token);
  emit("leased", { id: task.id, attempt: task.attempt });
  handle(task).then(
    (result) => report(outcomeOf(task, result)),
    (error) => report(outcomeOf(task, null, error)),
  );
}

// ---- StreamWork: credits out, tasks in, outcomes on the same stream -------------------------

async function runStream(client, metadata) {
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  const stream = client.StreamWork(metadata);
  let ended = false;
  // Half-close once nothing is held: the broker sends the outcomes it still has, then ends.
  const slots = new Slots(() => {
    if (!ended) stream.end();
    ended = true;
  });
  let next = { acks: [], failures: [], credits: 0 };
  let flushTimer = null;

  function flush() {
    flushTimer = null;
    if (ended) return;
    if (slots.stopping) next.credits = 0; // no new tasks for a worker that is leaving
    if (next.acks.length || next.failures.length || next.credits) stream.write(next);
    next = { acks: [], failures: [], credits: 0 };
  }

  function report(outcome) {
    if (outcome.ack) next.acks.push(outcome.ack);
    else next.failures.push(outcome.failure);
    next.credits += 1; // the slot this task held is free again: one more credit
    if (!flushTimer) flushTimer = setTimeout(flush, ACK_BATCH_MS);
  }

  function settle(outcomes, event) {
    for (const o of outcomes) {
      if (o.code === 0) slots.settled(o.task_id, event);
      else slots.settled(o.task_id, "rejected", { code: o.code, message: o.message });
    }
  }

  const late = []; // releases of tasks that arrived after a stop began
  stream.on("data", (response) => {
    if (slots.stopping) late.push(release(client, metadata, response.tasks));
    else for (const task of response.tasks) start(task, slots, report);
    settle(response.ack_outcomes, "acked");
    settle(response.fail_outcomes, "failed");
    for (const o of response.release_outcomes) emit("released", { id: o.task_id, code: o.code });
    for (const r of response.extension_results) {
      if (r.cancel_requested) emit("cancel_requested", { id: r.outcome.task_id });
    }
  });
  stream.on("error", fatal); // e.g. UNAVAILABLE: the broker stopped; a real worker reconnects
  stream.on("end", () => finish());

  const heartbeat = startHeartbeat(async (extensions) => stream.write({ extensions }), slots);
  const stopStream = () => {
    slots.stop();
    flush(); // the outcomes waiting to go, with no credits
  };
  process.once("SIGTERM", stopStream);
  process.once("SIGINT", stopStream);

  stream.write({
    open: { queues: args.queue, lease_duration: duration(LEASE_SECONDS), worker_id: args["worker-id"] },
    credits: SLOTS, // one credit per idle slot
  });
  emit("ready", { transport: "stream" });
  await finished;
  clearInterval(heartbeat);
  await Promise.all(late);
}

// ---- shared ---------------------------------------------------------------------------

/** Extend every held lease at a third of its length, so two heartbeats can fail first. */
function startHeartbeat(extend, slots) {
  if (args["no-extend"]) return null;
  return setInterval(
    () => {
      if (slots.leases.size === 0) return;
      const leases = [...slots.leases].map(([task_id, lease_token]) => ({
        lease: { task_id, lease_token },
        lease_duration: duration(LEASE_SECONDS),
      }));
      extend(leases).catch((error) => emit("extend_failed", { message: error.message }));
    },
    (LEASE_SECONDS * 1000) / 3,
  );
}

function fatal(error) {
  console.error(`worker: ${error.message}`);
  process.exit(1);
}

async function main() {
  const { workers, metadata } = connect();
  await (args.stream ? runStream(workers, metadata) : runUnary(workers, metadata));
  workers.close();
}

main().catch(fatal);
