// Shared by producer.js and worker.js: load proto/ at run time and make the two clients.
//
// Everything here follows docs/protocol.md; nothing is generated. Settings come from the
// environment, as for `conveyor serve`:
//   CONVEYOR_ADDRESS  broker address (default 127.0.0.1:7470)
//   CONVEYOR_TOKEN    sends `authorization: Bearer <token>` on every call
//   CONVEYOR_TLS_CA   a PEM file: connect with TLS and trust this CA (else plaintext)
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_DIR = process.env.CONVEYOR_PROTO_DIR || path.join(__dirname, "..", "..", "proto");

// keepCase: field names as in the .proto (lease_token, not leaseToken).
// longs: int64 fields (sequence) as strings, so no precision is lost.
// enums: names (TASK_STATE_SUCCEEDED), which read better than numbers in logs.
// defaults: unset scalars are present with their zero value, as in proto3.
const definition = protoLoader.loadSync(
  ["conveyor/v1/task_service.proto", "conveyor/v1/worker_service.proto"],
  { includeDirs: [PROTO_DIR], keepCase: true, longs: String, enums: String, defaults: true },
);
const v1 = grpc.loadPackageDefinition(definition).conveyor.v1;

const JSON_TYPE = "application/json";

function channelCredentials() {
  const ca = process.env.CONVEYOR_TLS_CA;
  return ca ? grpc.credentials.createSsl(fs.readFileSync(ca)) : grpc.credentials.createInsecure();
}

// The token rides as plain call metadata, not as grpc-js call credentials: those are
// sent only over TLS, and a broker on loopback may well run plaintext with a token.
function callMetadata() {
  const metadata = new grpc.Metadata();
  const token = process.env.CONVEYOR_TOKEN;
  if (token) metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

/** The two clients, and the `metadata` to pass on every call (it carries the token). */
function connect(address = process.env.CONVEYOR_ADDRESS || "127.0.0.1:7470") {
  const channel = channelCredentials();
  const metadata = callMetadata();
  const options = { "grpc.max_receive_message_length": 64 << 20 };
  return {
    tasks: new v1.TaskService(address, channel, options),
    workers: new v1.WorkerService(address, channel, options),
    metadata,
  };
}

/**
 * A unary call as a promise, with a deadline: every wait in a client should be bounded.
 * The promise has `cancel()`, e.g. to end a parked Lease when the worker stops.
 */
function call(client, method, request, metadata, timeoutSeconds = 10) {
  const deadline = new Date(Date.now() + timeoutSeconds * 1000);
  let pending;
  const promise = new Promise((resolve, reject) => {
    pending = client[method](request, metadata, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
  promise.cancel = () => pending.cancel();
  return promise;
}

/** google.protobuf.Duration from seconds. */
function duration(seconds) {
  const whole = Math.floor(seconds);
  return { seconds: String(whole), nanos: Math.round((seconds - whole) * 1e9) };
}

/** Seconds since the epoch of a google.protobuf.Timestamp, or null when unset. */
function timestampSeconds(ts) {
  return ts ? Number(ts.seconds) + ts.nanos / 1e9 : null;
}

/** A media type without parameters and case, as the Python SDK compares them. */
function isJson(contentType) {
  const type = (contentType || "").split(";")[0].trim().toLowerCase();
  return type === JSON_TYPE || type.endsWith("+json");
}

/** Payload or result bytes decoded the way docs/protocol.md says: JSON, text, or raw. */
function decode(data, contentType) {
  const bytes = Buffer.from(data || []);
  if (isJson(contentType)) return bytes.length ? JSON.parse(bytes.toString("utf8")) : null;
  if ((contentType || "").toLowerCase().startsWith("text/")) return bytes.toString("utf8");
  return bytes;
}

function encodeJson(value) {
  return { data: Buffer.from(JSON.stringify(value)), content_type: JSON_TYPE };
}

module.exports = { v1, grpc, connect, call, duration, timestampSeconds, decode, encodeJson, isJson, JSON_TYPE };
