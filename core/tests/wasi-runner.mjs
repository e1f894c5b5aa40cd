// Cargo's runner for wasm32-wasip1 (see .cargo/config.toml): runs a test binary in Node's
// WASI preview1 runtime, with the package directory preopened at its own path so tests can
// read the repository's files. proxy-wasm host functions are stubbed to throw: the unit tests
// exercise the host-free core, and a call into the host from them is a bug worth a loud stop.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [wasmPath, ...args] = process.argv.slice(2);
const root = process.cwd();
const wasi = new WASI({
  version: 'preview1',
  args: [wasmPath, ...args],
  env: process.env,
  preopens: { [root]: root },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(wasmPath));
const imports = { wasi_snapshot_preview1: wasi.wasiImport };
for (const { module: name, name: field, kind } of WebAssembly.Module.imports(module)) {
  if (name === 'wasi_snapshot_preview1' || kind !== 'function') continue;
  imports[name] ??= {};
  imports[name][field] = () => {
    throw new Error(`host function ${name}.${field} is not available to unit tests`);
  };
}
const instance = await WebAssembly.instantiate(module, imports);
process.exitCode = wasi.start(instance);
