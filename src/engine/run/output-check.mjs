// A worker thread that checks one answer against one output schema (run/output.ts): ajv runs
// a schema's `pattern` keywords with JavaScript regular expressions, and a catastrophic one
// must stall this thread, which output.ts ends at its deadline, never Patchbay's event loop.
import { parentPort, workerData } from "node:worker_threads";
import { Ajv } from "ajv";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const { schema, value, draft2020, options } = workerData;
const ajv = draft2020 ? new Ajv2020(options) : new Ajv(options);
addFormats(ajv);
const validate = ajv.compile(schema);
const ok = validate(value);
parentPort.postMessage({ ok, errors: ok ? [] : validate.errors });
