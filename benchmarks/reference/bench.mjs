// The TypeScript reference (@enclave-vm/stream), timed through its public API.
//
// Our script, not the reference's: it imports a bundle of the reference built
// as README.md (this folder) says, and times the paths issue 11 compares:
//
//   parse_lines        parseLines(text) on the whole corpus (zod-validated, kept)
//   stream_parser_64k  NdjsonStreamParser with onEvent/onError callbacks, fed
//                      the corpus bytes in 64 KiB chunks, each decoded with a
//                      streaming TextDecoder (what parseNdjsonStream does)
//   serialize_event    serializeEvent(event) one at a time, over parseLines' events
//   create_envelope    await ctx.createEnvelope(sessionId, seq, event)
//                      (SessionEncryptionContext.fromKeyBytes: counter nonces)
//   seal_line          serializeEvent(await ctx.createEnvelope(...)): a line
//   decrypt_json       await ctx.decryptJson(payload), payloads already parsed
//   open               parseLine(line), await ctx.decryptJson(payload), then
//                      parseStreamEventOrEncrypted(inner): the inner event
//                      validated, as our session.open returns it
//
// The crypto paths use stdout events with a 200-byte ASCII chunk (as
// benchmarks/bench_crypto.py). Every round runs every path once (interleaved),
// each after global.gc() when node runs with --expose-gc; a figure is the best
// of the rounds. With --warmup, one untimed round runs first (JIT).
//
// Usage:
//   node --expose-gc bench.mjs --bundle B.mjs --corpus C.ndjson [--rounds 5]
//        [--warmup] [--serve] [--crypto-events 20000] [--sealed OURS.ndjson]
//        [--write-sealed THEIRS.ndjson]
// --serve: instead of --rounds, run one timed round per line "round" read on
// stdin (answering a JSON line {"round": {path: seconds}}), until "end".
// --sealed: envelope lines sealed by another implementation (key C2S below,
// session SESSION) for the open and decrypt_json paths; without it the
// reference's own lines are used. --write-sealed: write the reference's
// sealed lines there, for the other side to open.
// Prints one JSON object: best seconds and events/s per path, and checks.

import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';

const SESSION = 's_0f8fad5b-d9cb-469f-a165-70867728950e';
const KEY_ID = 'k_9b2c0000-0000-4000-8000-000000000000';
const C2S = Uint8Array.from({ length: 32 }, (_, i) => i);
const CHUNK = 64 * 1024;

function parseArgs(argv) {
  const args = { rounds: 5, warmup: false, cryptoEvents: 20000 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === '--bundle') args.bundle = next();
    else if (flag === '--corpus') args.corpus = next();
    else if (flag === '--rounds') args.rounds = Number(next());
    else if (flag === '--warmup') args.warmup = true;
    else if (flag === '--serve') args.serve = true;
    else if (flag === '--crypto-events') args.cryptoEvents = Number(next());
    else if (flag === '--sealed') args.sealed = next();
    else if (flag === '--write-sealed') args.writeSealed = next();
    else throw new Error(`unknown argument ${flag}`);
  }
  if (!args.bundle || !args.corpus) throw new Error('--bundle and --corpus are required');
  return args;
}

function collect() {
  if (typeof globalThis.gc === 'function') globalThis.gc();
}

function makeEvents(n) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789 ';
  const chunk = alphabet.repeat(6).slice(0, 200);
  const events = [];
  for (let seq = 0; seq < n; seq++) {
    events.push({ protocolVersion: 2, sessionId: SESSION, seq, type: 'stdout', payload: { chunk } });
  }
  return events;
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const ref = await import(pathToFileURL(resolve(args.bundle)).href);
  const { parseLines, parseLine, NdjsonStreamParser, serializeEvent, SessionEncryptionContext } = ref;
  const { parseStreamEventOrEncrypted } = ref;

  const bytes = readFileSync(args.corpus);
  const text = bytes.toString('utf8');
  const corpusLines = text.split('\n');
  corpusLines.pop();
  const n = corpusLines.length;
  const chunks = [];
  for (let i = 0; i < bytes.length; i += CHUNK) chunks.push(bytes.subarray(i, i + CHUNK));

  // Correctness first: the reference must read the whole corpus.
  const parsed = parseLines(text);
  const checks = {
    lines: n,
    parse_lines_events: parsed.events.length,
    parse_lines_errors: parsed.errors.length,
    parse_lines_first_errors: parsed.errors.slice(0, 5),
  };
  const events = parsed.events;
  // Does the reference write back, byte for byte, the line it read?
  let rewritten = 0;
  const notRewritten = [];
  if (events.length === n) {
    for (let i = 0; i < n; i++) {
      if (serializeEvent(events[i]) === corpusLines[i]) rewritten++;
      else if (notRewritten.length < 5) notRewritten.push({ line: i + 1, written: serializeEvent(events[i]) });
    }
  }
  checks.serialize_event_same_line = rewritten;
  checks.serialize_event_first_different_lines = notRewritten;

  const cryptoEvents = makeEvents(args.cryptoEvents);
  const ctx = await SessionEncryptionContext.fromKeyBytes(C2S, KEY_ID);
  let sealedLines;
  if (args.sealed) {
    sealedLines = readFileSync(args.sealed, 'utf8').split('\n').filter((line) => line.length > 0);
  } else {
    sealedLines = [];
    for (const event of cryptoEvents) {
      sealedLines.push(serializeEvent(await ctx.createEnvelope(SESSION, event.seq, event)));
    }
  }
  const sealedPayloads = sealedLines.map((line) => {
    const result = parseLine(line);
    check(result.success, `sealed line refused: ${result.error}`);
    return result.data.payload;
  });
  if (args.writeSealed) {
    const writer = await SessionEncryptionContext.fromKeyBytes(C2S, KEY_ID);
    const out = [];
    for (const event of cryptoEvents) {
      out.push(serializeEvent(await writer.createEnvelope(SESSION, event.seq, event)));
    }
    writeFileSync(args.writeSealed, out.join('\n') + '\n');
  }

  const paths = {
    parse_lines() {
      const result = parseLines(text);
      check(result.events.length === n && result.errors.length === 0, 'parse_lines count');
      return n;
    },
    stream_parser_64k() {
      let count = 0;
      let errors = 0;
      const parser = new NdjsonStreamParser({
        onEvent: () => {
          count++;
        },
        onError: () => {
          errors++;
        },
      });
      const decoder = new TextDecoder();
      for (const chunk of chunks) parser.feed(decoder.decode(chunk, { stream: true }));
      parser.feed(decoder.decode());
      parser.flush();
      check(count === n && errors === 0, `stream_parser_64k count ${count}, errors ${errors}`);
      return n;
    },
    serialize_event() {
      let total = 0;
      for (const event of events) total += serializeEvent(event).length;
      check(total > 0, 'serialize_event wrote nothing');
      return events.length;
    },
    async create_envelope() {
      const sealer = await SessionEncryptionContext.fromKeyBytes(C2S, KEY_ID);
      const out = [];
      for (const event of cryptoEvents) out.push(await sealer.createEnvelope(SESSION, event.seq, event));
      check(out.length === cryptoEvents.length, 'create_envelope count');
      return out.length;
    },
    async seal_line() {
      const sealer = await SessionEncryptionContext.fromKeyBytes(C2S, KEY_ID);
      const out = [];
      for (const event of cryptoEvents) {
        out.push(serializeEvent(await sealer.createEnvelope(SESSION, event.seq, event)));
      }
      check(out.length === cryptoEvents.length, 'seal_line count');
      return out.length;
    },
    async decrypt_json() {
      const out = [];
      for (const payload of sealedPayloads) out.push(await ctx.decryptJson(payload));
      check(out.length === sealedPayloads.length, 'decrypt_json count');
      return out.length;
    },
    async open() {
      const out = [];
      for (const line of sealedLines) {
        const envelope = parseLine(line);
        check(envelope.success && envelope.data.type === 'enc', 'open: not an envelope');
        const inner = parseStreamEventOrEncrypted(await ctx.decryptJson(envelope.data.payload));
        check(inner.success, 'open: inner event refused');
        out.push(inner.data);
      }
      check(out.length === sealedLines.length, 'open count');
      return out.length;
    },
  };

  const best = Object.fromEntries(Object.keys(paths).map((name) => [name, Infinity]));
  const counts = {};
  let rounds = 0;
  const runRound = async (timed) => {
    const taken = {};
    for (const [name, fn] of Object.entries(paths)) {
      collect();
      const start = performance.now();
      const count = await fn();
      const seconds = (performance.now() - start) / 1000;
      counts[name] = count;
      taken[name] = seconds;
      if (timed) best[name] = Math.min(best[name], seconds);
    }
    if (timed) rounds++;
    return taken;
  };
  if (args.warmup) await runRound(false);
  if (args.serve) {
    // One timed round per "round" line on stdin, answered with a JSON line of
    // its seconds per path, so that the caller can alternate its own rounds
    // with these in a warm process; "end" (or end of input) prints the summary.
    console.log(JSON.stringify({ ready: true }));
    const input = createInterface({ input: process.stdin });
    for await (const line of input) {
      if (line.trim() === 'round') console.log(JSON.stringify({ round: await runRound(true) }));
      else break;
    }
    input.close();
  } else {
    for (let round = 0; round < args.rounds; round++) await runRound(true);
  }

  const results = {};
  for (const [name, seconds] of Object.entries(best)) {
    results[name] = { seconds, events: counts[name], events_per_s: Math.round(counts[name] / seconds) };
  }
  // opening a sealed line must give back the inner event in full
  const sample = parseStreamEventOrEncrypted(await ctx.decryptJson(sealedPayloads[sealedPayloads.length - 1]));
  const expected = args.sealed ? null : cryptoEvents[cryptoEvents.length - 1];
  checks.open_last_inner_event_seq = sample.success ? sample.data.seq : sample.error.message;
  checks.open_last_inner_event_chunk_bytes = sample.success ? sample.data.payload.chunk.length : null;
  if (expected) checks.open_last_inner_event_same = JSON.stringify(sample.data) === JSON.stringify(expected);
  checks.sealed_lines_opened = sealedLines.length;
  console.log(
    JSON.stringify({
      node: process.version,
      gc_between_runs: typeof globalThis.gc === 'function',
      rounds,
      warmup: args.warmup,
      paths: results,
      checks,
    }),
  );
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
