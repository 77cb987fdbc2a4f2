// A Conveyor producer in Node.js: enqueue tasks, optionally wait for their results.
//
//   node producer.js --queue images --kind thumbnails.make --payload '{"path": "a.png"}' [--count 3] [--result 10]
//
// Prints one JSON line per task: {"id", "state"} and, with --result SECONDS, the final
// state, the result decoded by its content type, and last_error.
"use strict";

const { parseArgs } = require("node:util");
const { connect, call, duration, decode, JSON_TYPE } = require("./conveyor");

const { values: args } = parseArgs({
  options: {
    queue: { type: "string", default: "" }, // empty: the "default" queue
    kind: { type: "string", default: "example.echo" },
    payload: { type: "string", default: "{}" },
    count: { type: "string", default: "1" },
    result: { type: "string" }, // seconds to wait for each result
    priority: { type: "string", default: "0" },
  },
});

async function main() {
  const { tasks, metadata } = connect();
  JSON.parse(args.payload); // refuse to send a payload that says JSON and is not
  const specs = Array.from({ length: Number(args.count) }, () => ({
    queue: args.queue,
    kind: args.kind,
    payload: Buffer.from(args.payload),
    content_type: JSON_TYPE, // tells workers in every language how to read the bytes
    priority: Number(args.priority),
  }));
  // One task: Enqueue. Several: EnqueueBatch, all committed in one transaction.
  const created =
    specs.length === 1
      ? [(await call(tasks, "Enqueue", { task: specs[0] }, metadata)).task]
      : (await call(tasks, "EnqueueBatch", { tasks: specs }, metadata)).results.map((r) => r.task);
  for (const task of created) {
    if (args.result === undefined) {
      console.log(JSON.stringify({ id: task.id, state: task.state }));
      continue;
    }
    console.log(JSON.stringify(await waitForResult(tasks, metadata, task.id, Number(args.result))));
  }
}

/** GetResult long-polls in pieces of at most 30 s (the broker cuts waits at 60 s). */
async function waitForResult(tasks, metadata, id, seconds) {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    const left = Math.max(0, (end - Date.now()) / 1000);
    const wait = Math.min(left, 30);
    // The deadline is a little longer than the wait, as docs/protocol.md advises.
    const answer = await call(tasks, "GetResult", { task_id: id, wait: duration(wait) }, metadata, wait + 5);
    const task = answer.task;
    if (answer.is_final || left === 0) {
      return {
        id,
        state: task.state,
        is_final: answer.is_final,
        content_type: task.result ? task.result.content_type : "",
        result: task.result ? decode(task.result.data, task.result.content_type) : null,
        last_error: task.last_error ? task.last_error.message : "",
      };
    }
  }
}

main().catch((error) => {
  console.error(`producer: ${error.message}`);
  process.exit(1);
});
