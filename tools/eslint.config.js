// ESLint's recommended rules for the browser modules (tests/test_lint.py copies this file next to the ESLint it
// installs, where its imports resolve, and runs it over kyutai_stt/web/, tests/web/harness/ and the Node scripts of
// benchmarks/).
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2023,
      sourceType: "module",
      // The page, its Worker, its AudioWorklet and its service worker.
      globals: {...globals.browser, ...globals.worker, ...globals.serviceworker, ...globals.audioWorklet},
    },
  },
  {
    // benchmarks/browser_host.mjs: runtime.js driven from Node.
    files: ["benchmarks/**/*.mjs"],
    languageOptions: {globals: globals.node},
  },
];
