#!/usr/bin/env node
// Runs a TF.js graph model export on the WebAssembly backend, to check a conversion.
//
// Usage: node run.js <model_dir> <input.npy> <output.npy> [latency_repeats]
//            [--backend=wasm|cpu] [--batch-size=N]
//
// The input runs through the model N rows at a time (default 256). With
// latency_repeats > 0 the first input row is also run that many times at
// batch 1 (after one warm-up run). One JSON line on stdout says how it ran:
// {"backend": "wasm", "batch_size": 256, "latency_seconds_median": ... or null,
//  "fallback": null or why wasm was not used}.
//
// Backend: `wasm` (default; @tensorflow/tfjs-backend-wasm, its .wasm binaries
// read from the package's dist folder in node_modules, never downloaded; the
// TFJS_RUNNER_WASM_DIR environment variable points elsewhere) falls back to
// the pure-JS `cpu` backend, with a line on stderr, when it fails to
// initialise; `cpu` uses the pure-JS backend only.
//
// <model_dir> holds model.json and its weight shards, as written by
// `tensorflowjs_converter --output_format=tfjs_graph_model`. The input must be
// a float32, little-endian, C-order .npy file; the (single) model output is
// written as a float32 .npy file. Any error prints one line on stderr and
// exits with code 1.
'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

const DEFAULT_BATCH_SIZE = 256;

const NPY_MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

// IOHandler that reads model.json and its weight shards from a local directory.
function fileSystemHandler(modelDir) {
  return {
    async load() {
      const modelJsonPath = path.join(modelDir, 'model.json');
      if (!fs.existsSync(modelJsonPath)) {
        throw new Error(`model.json not found in ${modelDir}`);
      }
      let modelJson;
      try {
        modelJson = JSON.parse(fs.readFileSync(modelJsonPath, 'utf8'));
      } catch (err) {
        throw new Error(`cannot parse ${modelJsonPath}: ${err.message}`);
      }
      const weightSpecs = [];
      const shards = [];
      for (const group of modelJson.weightsManifest || []) {
        weightSpecs.push(...group.weights);
        for (const shardPath of group.paths) {
          shards.push(fs.readFileSync(path.join(modelDir, shardPath)));
        }
      }
      const joined = Buffer.concat(shards);
      // Copy into a standalone ArrayBuffer (a Buffer may be a view on a pool).
      const weightData = joined.buffer.slice(
          joined.byteOffset, joined.byteOffset + joined.byteLength);
      return {
        modelTopology: modelJson.modelTopology,
        weightSpecs,
        weightData,
        format: modelJson.format,
        generatedBy: modelJson.generatedBy,
        convertedBy: modelJson.convertedBy,
        signature: modelJson.signature,
        userDefinedMetadata: modelJson.userDefinedMetadata,
        modelInitializer: modelJson.modelInitializer,
        initializerSignature: modelJson.initializerSignature,
      };
    },
  };
}

// Parses a float32 little-endian C-order .npy file (format v1, v2 or v3).
function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 10 || !buf.subarray(0, 6).equals(NPY_MAGIC)) {
    throw new Error(`${file} is not a .npy file`);
  }
  const major = buf[6];
  let headerLen;
  let headerStart;
  if (major === 1) {
    headerLen = buf.readUInt16LE(8);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    headerLen = buf.readUInt32LE(8);
    headerStart = 12;
  } else {
    throw new Error(`${file}: unsupported .npy format version ${major}`);
  }
  const header = buf.toString('latin1', headerStart, headerStart + headerLen);
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header);
  const shapeMatch = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeMatch) {
    throw new Error(`${file}: malformed .npy header: ${header.trim()}`);
  }
  if (descr[1] !== '<f4') {
    throw new Error(
        `${file}: dtype '${descr[1]}' is not supported, need float32 ('<f4')`);
  }
  if (fortran[1] === 'True') {
    throw new Error(`${file}: Fortran-order arrays are not supported`);
  }
  const shape = shapeMatch[1].split(',')
      .map((s) => s.trim()).filter((s) => s !== '').map(Number);
  const size = shape.reduce((a, b) => a * b, 1);
  const dataStart = headerStart + headerLen;
  if (buf.length - dataStart !== size * 4) {
    throw new Error(`${file}: expected ${size * 4} data bytes for shape ` +
        `[${shape}], found ${buf.length - dataStart}`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset + dataStart, size * 4);
  const values = new Float32Array(size);
  for (let i = 0; i < size; i++) values[i] = view.getFloat32(i * 4, true);
  return {shape, values};
}

// Writes a float32 array as a version 1.0 .npy file.
function writeNpy(file, shape, values) {
  const shapeStr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  // Pad with spaces so that magic + version + length + header is a multiple
  // of 64 bytes, ending in a newline, as numpy does.
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header + ' '.repeat(total - 10 - header.length - 1) + '\n';
  const prefix = Buffer.alloc(10);
  NPY_MAGIC.copy(prefix, 0);
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  const data = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) data.writeFloatLE(values[i], i * 4);
  fs.writeFileSync(file, Buffer.concat([prefix, Buffer.from(header, 'latin1'), data]));
}

// execute() refuses models with control-flow or dynamic-shape ops and asks
// for executeAsync(); executeAsync() on a plain model warns on stderr.
async function run(model, input) {
  try {
    return model.execute(input);
  } catch (err) {
    if (!/executeAsync/.test(err.message)) throw err;
    return model.executeAsync(input);
  }
}

// Median seconds of `repeats` batch-1 runs on the first row, after a warm-up.
async function medianLatency(model, input, repeats) {
  const one = input.slice([0], [1]);
  const times = [];
  for (let i = 0; i <= repeats; i++) {
    const started = process.hrtime.bigint();
    const output = await run(model, one);
    await output.data();
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (i > 0) times.push(seconds);  // run 0 is the warm-up
    output.dispose();
  }
  one.dispose();
  times.sort((a, b) => a - b);
  const middle = Math.floor(times.length / 2);
  return times.length % 2 ? times[middle] : (times[middle - 1] + times[middle]) / 2;
}

// Selects `requested`; a wasm backend that fails to initialise falls back to
// cpu. Returns {backend, fallback}: the backend in use, and why wasm is not.
async function selectBackend(requested) {
  if (requested === 'wasm') {
    let reason = null;
    try {
      const wasmBackend = require('@tensorflow/tfjs-backend-wasm');  // registers 'wasm'
      // The package's main file lies in dist/, next to its .wasm binaries.
      const wasmDir = process.env.TFJS_RUNNER_WASM_DIR ||
          path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm'));
      wasmBackend.setWasmPaths(wasmDir.endsWith(path.sep) ? wasmDir : wasmDir + path.sep);
      if (await tf.setBackend('wasm')) return {backend: 'wasm', fallback: null};
      reason = `initialisation failed (.wasm binaries from ${wasmDir})`;
    } catch (err) {
      reason = (err && err.message) ? err.message : String(err);
    }
    reason = reason.replace(/\s*\n\s*/g, ' ');
    process.stderr.write(`tfjs_runner: the wasm backend failed to initialise: ${reason}; ` +
        'using the pure-JS cpu backend\n');
    await tf.setBackend('cpu');
    return {backend: 'cpu', fallback: reason};
  }
  await tf.setBackend('cpu');
  return {backend: 'cpu', fallback: null};
}

// The model's output on every row of `values` (shape `shape`), `batchSize` rows
// per call: one Float32Array and the output shape.
async function predictInBatches(model, values, shape, batchSize) {
  const rows = shape[0];
  const rowSize = shape.slice(1).reduce((a, b) => a * b, 1);
  const starts = [];
  for (let start = 0; start < rows; start += batchSize) starts.push(start);
  if (rows === 0) starts.push(0);  // an empty input still gives the output's shape
  const parts = [];
  let outputShape = null;
  for (const start of starts) {
    const count = Math.min(batchSize, rows - start);
    const input = tf.tensor(values.subarray(start * rowSize, (start + count) * rowSize),
        [count, ...shape.slice(1)], 'float32');
    const output = await run(model, input);
    parts.push(await output.data());
    outputShape = outputShape || output.shape.slice(1);
    tf.dispose([input, output]);
  }
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const result = new Float32Array(total);
  let offset = 0;
  for (const part of parts) {
    result.set(part, offset);
    offset += part.length;
  }
  return {values: result, shape: [rows, ...outputShape]};
}

// Positional arguments and --backend / --batch-size options.
function parseArguments(argv) {
  const positional = [];
  const options = {backend: 'wasm', batchSize: DEFAULT_BATCH_SIZE};
  for (const argument of argv) {
    const match = /^--(backend|batch-size)=(.*)$/.exec(argument);
    if (!match) {
      positional.push(argument);
    } else if (match[1] === 'backend') {
      if (!['wasm', 'cpu'].includes(match[2])) {
        throw new Error(`--backend must be wasm or cpu, got ${match[2]}`);
      }
      options.backend = match[2];
    } else {
      options.batchSize = Number(match[2]);
      if (!Number.isInteger(options.batchSize) || options.batchSize < 1) {
        throw new Error(`--batch-size must be an integer >= 1, got ${match[2]}`);
      }
    }
  }
  if (positional.length !== 3 && positional.length !== 4) {
    throw new Error('usage: node run.js <model_dir> <input.npy> <output.npy> ' +
        '[latency_repeats] [--backend=wasm|cpu] [--batch-size=N]');
  }
  const latencyRepeats = positional.length === 4 ? Number(positional[3]) : 0;
  if (!Number.isInteger(latencyRepeats) || latencyRepeats < 0) {
    throw new Error(`latency_repeats must be an integer >= 0, got ${positional[3]}`);
  }
  const [modelDir, inputPath, outputPath] = positional;
  return {modelDir, inputPath, outputPath, latencyRepeats, ...options};
}

async function main(argv) {
  const args = parseArguments(argv);
  if (!fs.existsSync(args.modelDir) || !fs.statSync(args.modelDir).isDirectory()) {
    throw new Error(`model directory not found: ${args.modelDir}`);
  }
  tf.enableProdMode(); // silences the "install tfjs-node" notice on stderr
  const {backend, fallback} = await selectBackend(args.backend);
  const model = await tf.loadGraphModel(fileSystemHandler(args.modelDir));
  if (model.inputs.length !== 1 || model.outputs.length !== 1) {
    throw new Error(`model has ${model.inputs.length} inputs and ` +
        `${model.outputs.length} outputs; only 1 input and 1 output supported`);
  }
  const {shape, values} = readNpy(args.inputPath);
  const output = await predictInBatches(model, values, shape, args.batchSize);
  writeNpy(args.outputPath, output.shape, output.values);
  let latency = null;
  if (args.latencyRepeats > 0 && shape[0] > 0) {
    const first = tf.tensor(values.subarray(0, values.length / shape[0]),
        [1, ...shape.slice(1)], 'float32');
    latency = await medianLatency(model, first, args.latencyRepeats);
    first.dispose();
  }
  process.stdout.write(JSON.stringify({
    backend, batch_size: args.batchSize, latency_seconds_median: latency, fallback,
  }) + '\n');
  model.dispose();
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err) => {
    const message = (err && err.message) ? err.message : String(err);
    process.stderr.write(`tfjs_runner: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
    process.exit(1);
  });
}

module.exports = {readNpy, writeNpy, fileSystemHandler};
