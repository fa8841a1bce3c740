// Validate an AsyncAPI document with @asyncapi/parser (installed by `make asyncapi-parser` into .tools/node).
// Usage: node tests/contracts/asyncapi_validate.cjs FILE
// Prints one line per diagnostic ("error|warning|info|hint code path: message") and a summary line;
// exits 1 when the document does not parse or has errors, 2 when the parser is missing or FILE unreadable.
"use strict";
const fs = require("fs");
const path = require("path");

const prefix = process.env.ASYNCAPI_PARSER_PREFIX || path.join(__dirname, "..", "..", ".tools", "node");
let Parser;
try {
  ({ Parser } = require(path.join(prefix, "node_modules", "@asyncapi", "parser")));
} catch (err) {
  console.error(`@asyncapi/parser not found under ${prefix} (run: make asyncapi-parser): ${err.message}`);
  process.exit(2);
}

const SEVERITY = ["error", "warning", "info", "hint"];

async function main() {
  const file = process.argv[2];
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    console.error(`cannot read ${file}: ${err.message}`);
    process.exit(2);
  }
  const { document, diagnostics } = await new Parser().parse(text, { source: path.resolve(file) });
  const counts = { error: 0, warning: 0, info: 0, hint: 0 };
  for (const d of diagnostics) {
    const severity = SEVERITY[d.severity] || String(d.severity);
    counts[severity] = (counts[severity] || 0) + 1;
    console.log(`${severity} ${d.code} ${(d.path || []).join(".")}: ${d.message}`);
  }
  const ok = document !== undefined && counts.error === 0;
  const version = document ? document.version() : "?";
  console.log(
    `${ok ? "valid" : "INVALID"} AsyncAPI ${version}: ${counts.error} errors, ${counts.warning} warnings, ` +
      `${counts.info} infos, ${counts.hint} hints`,
  );
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
