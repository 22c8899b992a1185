// Runs fqm-execution over a measure bundle and an NDJSON file of patient Bundles; prints one JSON object:
// {"results": {patientId: {populationCode: bool}}, "calc_s": seconds inside Calculator.calculate, "patients": n}.
// usage: node fqm_runner.js MEASURE_BUNDLE.json PATIENTS.ndjson [chunk=250]
'use strict';
const fs = require('fs');
const readline = require('readline');
const { Calculator } = require('fqm-execution');

async function main() {
  const [measurePath, patientsPath, chunkArg] = process.argv.slice(2);
  const chunk = Number(chunkArg || 250);
  const measureBundle = JSON.parse(fs.readFileSync(measurePath, 'utf8'));
  const bundles = [];
  const rl = readline.createInterface({ input: fs.createReadStream(patientsPath), crlfDelay: Infinity });
  for await (const line of rl) if (line.trim()) bundles.push(JSON.parse(line));
  const options = {
    measurementPeriodStart: '2025-01-01',
    measurementPeriodEnd: '2025-12-31',
    calculateSDEs: false,
    calculateHTML: false,
    verboseCalculationResults: false,
    trustMetaProfile: false, // the exported resources carry no QI-Core meta.profile
    useElmJsonsCaching: true,
  };
  const results = {};
  let calcNs = 0n;
  for (let i = 0; i < bundles.length; i += chunk) {
    const part = bundles.slice(i, i + chunk);
    const t0 = process.hrtime.bigint();
    const out = await Calculator.calculate(measureBundle, part, options);
    calcNs += process.hrtime.bigint() - t0;
    for (const r of out.results) {
      const pops = {};
      for (const pr of r.detailedResults[0].populationResults) pops[pr.populationType] = pr.result === true;
      results[r.patientId] = pops;
    }
  }
  process.stdout.write(JSON.stringify({ results, calc_s: Number(calcNs) / 1e9, patients: bundles.length }));
}

main().catch((e) => { console.error(e); process.exit(1); });
