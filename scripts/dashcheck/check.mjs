// The steps of scripts/dashboards-check.sh around tsc. Runs from the work
// directory (.revpulse/dashcheck) where npm ci put typescript and yaml.
//
//   node check.mjs generate <repo>   # gen/**/*.ts: each file as a typed constant
//   node check.mjs explain <repo>    # tsc's output (stdin) pointed back at the files
//   node check.mjs semantic <repo>   # what types cannot say: references, env, routing
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import YAML from 'yaml';

const [cmd, repo] = process.argv.slice(2);
if (!repo) {
  console.error('usage: node check.mjs generate|explain|semantic <repo>');
  process.exit(2);
}
const rel = (p) => path.relative(repo, p);
const dashDir = path.join(repo, 'dashboards/json');
const alertDir = path.join(repo, 'dashboards/provisioning/alerting');
const gen = path.resolve('gen');

const listFiles = (dir, re) =>
  fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => re.test(f)).sort().map((f) => path.join(dir, f)) : [];
const dashboards = () => listFiles(dashDir, /\.json$/);
const alertingFiles = () => listFiles(alertDir, /\.ya?ml$/);

// What precedes a dashboard's JSON on line 1 of its generated file, and
// that file's name (gen/dashboards/leads.json.ts, gen/alerting/rules.yaml.ts).
const DASH_PREFIX = "import type { DashboardFile } from '../../types.js'; const dashboard: DashboardFile = ";
const genName = (src, kind) => path.join(gen, kind, `${path.basename(src)}.ts`);

function parseYaml(file) {
  const text = fs.readFileSync(file, 'utf8');
  const lineCounter = new YAML.LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  const problems = [...doc.errors, ...doc.warnings];
  if (problems.length) {
    for (const e of problems) console.error(`${rel(file)}: ${e.message}`);
    process.exit(1);
  }
  return { text, doc, lineCounter, data: doc.toJS() };
}

function generate() {
  fs.rmSync(gen, { recursive: true, force: true });
  fs.mkdirSync(path.join(gen, 'dashboards'), { recursive: true });
  fs.mkdirSync(path.join(gen, 'alerting'), { recursive: true });
  let failed = false;
  for (const file of dashboards()) {
    const text = fs.readFileSync(file, 'utf8');
    try {
      JSON.parse(text);
    } catch (e) {
      console.error(`${rel(file)}: not JSON: ${e.message}`);
      failed = true;
      continue;
    }
    // The JSON verbatim, starting on line 1: tsc's line numbers are the file's.
    fs.writeFileSync(genName(file, 'dashboards'), `${DASH_PREFIX}${text.trimEnd()};\nexport default dashboard;\n`);
  }
  for (const file of alertingFiles()) {
    const { data } = parseYaml(file);
    const json = JSON.stringify(data, null, 2);
    fs.writeFileSync(
      genName(file, 'alerting'),
      `import type { AlertingFile } from '../../types.js';\nconst file: AlertingFile = ${json};\nexport default file;\n`,
    );
  }
  if (failed) process.exit(1);
}

// The JSON path ("panels[3].gridPos.w") of the innermost literal at pos.
function pathAt(sf, pos) {
  let node = sf;
  for (;;) {
    const child = node.getChildren(sf).find((c) => c.getStart(sf) <= pos && pos < c.getEnd());
    if (!child) break;
    node = child;
  }
  const parts = [];
  for (let n = node; n && !ts.isVariableDeclaration(n); n = n.parent) {
    const p = n.parent;
    if (!p) break;
    // The path passes each property once, through its name or its value.
    if (ts.isPropertyAssignment(p)) {
      const name = ts.isStringLiteral(p.name) ? p.name.text : p.name.getText(sf);
      parts.unshift(/^[A-Za-z_$][\w$]*$/.test(name) ? name : JSON.stringify(name));
    } else if (ts.isArrayLiteralExpression(p)) {
      parts.unshift(p.elements.indexOf(n));
    }
  }
  return parts.reduce((s, x) => (typeof x === 'number' ? `${s}[${x}]` : s ? `${s}.${x}` : x), '');
}

function pathSegments(p) {
  return [...p.matchAll(/([^.[\]]+)|\[(\d+)\]/g)].map((m) => (m[2] !== undefined ? Number(m[2]) : m[1].replace(/^"|"$/g, '')));
}

function explain() {
  const input = fs.readFileSync(0, 'utf8');
  const sources = new Map();
  for (const file of dashboards()) sources.set(genName(file, 'dashboards'), { file, kind: 'dashboards' });
  for (const file of alertingFiles()) sources.set(genName(file, 'alerting'), { file, kind: 'alerting' });
  const loaded = new Map();
  for (const line of input.split('\n')) {
    const m = /^(.+?)\((\d+),(\d+)\): (.*)$/.exec(line);
    const src = m && sources.get(path.resolve(m[1]));
    if (!src) {
      // types.ts and selftest.ts are copies of scripts/dashcheck's.
      const own = m && path.join(repo, 'scripts/dashcheck', m[1]);
      if (own && fs.existsSync(own)) console.log(`${rel(own)}(${m[2]},${m[3]}): ${m[4]}`);
      else if (line) console.log(line);
      continue;
    }
    const genFile = path.resolve(m[1]);
    if (!loaded.has(genFile)) {
      const text = fs.readFileSync(genFile, 'utf8');
      loaded.set(genFile, ts.createSourceFile(genFile, text, ts.ScriptTarget.ES2022, true));
    }
    const sf = loaded.get(genFile);
    const [l, c] = [Number(m[2]), Number(m[3])];
    const where = pathAt(sf, sf.getPositionOfLineAndCharacter(l - 1, c - 1));
    let loc;
    if (src.kind === 'dashboards') {
      loc = `${l}:${l === 1 ? Math.max(1, c - DASH_PREFIX.length) : c}`;
    } else {
      const { doc, lineCounter } = parseYaml(src.file);
      const segs = pathSegments(where);
      let node = null;
      for (let k = segs.length; k >= 0 && !node; k--) node = doc.getIn(segs.slice(0, k), true);
      const at = node && node.range ? lineCounter.linePos(node.range[0]) : { line: 1, col: 1 };
      loc = `${at.line}:${at.col}`;
    }
    console.log(`${rel(src.file)}:${loc}: ${where || '(file)'}: ${m[4]}`);
  }
}

// ---------------------------------------------------------------------------
// semantic

const errors = [];
const fail = (where, msg) => errors.push(`${where}: ${msg}`);

function datasources() {
  const file = path.join(repo, 'dashboards/provisioning/datasources/datasources.yml');
  const { data } = parseYaml(file);
  return new Map((data.datasources ?? []).map((d) => [d.uid, d.type]));
}

function walk(v, visit, p = []) {
  visit(v, p);
  if (Array.isArray(v)) v.forEach((x, i) => walk(x, visit, [...p, i]));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, visit, [...p, k]);
}
const fmt = (p) => p.reduce((s, x) => (typeof x === 'number' ? `${s}[${x}]` : s ? `${s}.${x}` : x), '');

const BUILTIN_DS = new Set(['grafana', '-- Grafana --', '-- Mixed --', '-- Dashboard --']);

function checkDashboards(ds) {
  const uids = new Map();
  for (const file of dashboards()) {
    const where = rel(file);
    const d = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (d.uid) {
      if (uids.has(d.uid)) fail(where, `uid ${d.uid} is also ${uids.get(d.uid)}'s`);
      uids.set(d.uid, where);
    }
    const ids = new Map();
    const panels = (d.panels ?? []).flatMap((p) => [p, ...(p.type === 'row' ? p.panels ?? [] : [])]);
    for (const p of panels) {
      if (p.id === undefined) continue;
      if (ids.has(p.id)) fail(where, `panel id ${p.id} is used by "${ids.get(p.id)}" and "${p.title}"`);
      ids.set(p.id, p.title);
    }
    const vars = new Set((d.templating?.list ?? []).map((v) => v.name));
    walk(d, (v, p) => {
      const key = p[p.length - 1];
      if (key === 'datasource' && v && typeof v === 'object' && typeof v.uid === 'string') {
        if (v.uid.startsWith('$') || BUILTIN_DS.has(v.uid)) return;
        if (!ds.has(v.uid)) fail(`${where}: ${fmt(p)}`, `datasource uid ${v.uid} is not in datasources.yml`);
        else if (v.type && ds.get(v.uid) !== v.type) fail(`${where}: ${fmt(p)}`, `datasource ${v.uid} is of type ${ds.get(v.uid)}, not ${v.type}`);
      }
      if (typeof v === 'string' && ['rawSql', 'expr', 'query', 'title'].includes(key)) {
        for (const m of v.matchAll(/\$(?:\{(\w+)(?::\w+)?\}|(\w+))|\[\[(\w+)\]\]/g)) {
          const name = m[1] ?? m[2] ?? m[3];
          if (!name.startsWith('__') && !vars.has(name)) fail(`${where}: ${fmt(p)}`, `uses $${name}, which is no template variable`);
        }
      }
    });
  }
}

// Names of environment variables Grafana expands in a provisioning string:
// $NAME and ${NAME}; $$ is a literal $.
const envRefs = (s) =>
  [...s.replace(/\$\$/g, '').matchAll(/\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))/g)].map((m) => m[1] ?? m[2]);

// Prometheus durations (what Grafana parses them with): 90s, 1h30m, 0.
const DURATION = /^((\d+(ms|s|m|h|d|w|y))+|0)$/;
const DURATION_KEYS = new Set(['interval', 'for', 'keepFiringFor', 'group_wait', 'group_interval', 'repeat_interval']);
function checkDurations(v, where) {
  walk(v, (x, p) => {
    const key = p[p.length - 1];
    if (DURATION_KEYS.has(key) && !(typeof x === 'string' && DURATION.test(x)))
      fail(`${where}.${fmt(p)}`, `${JSON.stringify(x)} is no duration like 30s, 5m or 1h30m`);
  });
}
const seconds = (d) =>
  [...d.matchAll(/(\d+)(ms|s|m|h|d|w|y)/g)].reduce(
    (s, [, n, u]) => s + Number(n) * { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 }[u],
    0,
  );

function matches(labels, [name, op, value]) {
  const v = labels[name] ?? '';
  const re = () => new RegExp(`^(?:${value})$`);
  return op === '=' ? v === value : op === '!=' ? v !== value : op === '=~' ? re().test(v) : !re().test(v);
}

// A route's matchers: object_matchers, and matchers as `name op "value"`.
function matchersOf(route) {
  const parsed = (route.matchers ?? []).map((m) => {
    const x = /^\s*([^\s=!~]+)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$/.exec(m);
    return x ? [x[1], x[2], x[3]] : ['', '=', `unparsable matcher ${m}`];
  });
  return [...(route.object_matchers ?? []), ...parsed];
}

// Grafana's routing: the first matching child (unless `continue`), depth first.
function route(node, labels, inherited) {
  const receiver = node.receiver ?? inherited;
  const out = [];
  for (const child of node.routes ?? []) {
    if (matchersOf(child).every((m) => matches(labels, m))) {
      out.push(...route(child, labels, receiver));
      if (!child.continue) break;
    }
  }
  return out.length ? out : [receiver];
}

function composeGrafana() {
  const file = path.join(repo, 'docker-compose.yml');
  const { text, data } = parseYaml(file);
  const g = data.services?.grafana ?? {};
  const env = Array.isArray(g.environment)
    ? Object.fromEntries(g.environment.map((e) => [e.split('=')[0], e.split('=').slice(1).join('=')]))
    : g.environment ?? {};
  return { file, text, grafana: g, env };
}

function checkAlerting(ds) {
  const compose = composeGrafana();
  const docsFile = path.join(repo, 'docs/observability.md');
  const docs = fs.readFileSync(docsFile, 'utf8');
  const entrypoint = path.join(repo, 'deploy/grafana/entrypoint.sh');
  const files = alertingFiles().map((file) => ({ file, ...parseYaml(file) }));
  const ruleUids = new Map();
  const contactPoints = new Map();
  const receiverUids = new Set();
  const rules = [];
  const policies = [];
  const env = new Map(); // name → where it is used
  const rendered = new Map(); // name → literal default in the file

  for (const { file, text, data } of files) {
    const where = rel(file);
    for (const [i, g] of (data.groups ?? []).entries()) {
      const gw = `${where}: groups[${i}]`;
      checkDurations({ ...g, rules: (g.rules ?? []).map(({ data: _d, ...r }) => r) }, gw);
      if (!DURATION.test(g.interval) || seconds(g.interval) <= 0 || seconds(g.interval) % 10 !== 0)
        fail(gw, `interval ${g.interval} must be a positive multiple of Grafana's 10s scheduler tick`);
      for (const [j, r] of (g.rules ?? []).entries()) {
        const rw = `${gw}.rules[${j}] (${r.uid})`;
        if (!/^[a-zA-Z0-9_-]{1,40}$/.test(r.uid)) fail(rw, 'uid must be 1–40 characters of [a-zA-Z0-9_-]');
        if (ruleUids.has(r.uid)) fail(rw, `uid ${r.uid} is also ${ruleUids.get(r.uid)}`);
        ruleUids.set(r.uid, rw);
        const refIds = (r.data ?? []).map((q) => q.refId);
        const dup = refIds.filter((x, k) => refIds.indexOf(x) !== k);
        if (dup.length) fail(rw, `refId ${dup[0]} appears twice in data`);
        if (!refIds.includes(r.condition)) fail(rw, `condition ${r.condition} is none of the refIds ${refIds.join(', ')}`);
        for (const [k, q] of (r.data ?? []).entries()) {
          const qw = `${rw}.data[${k}] (${q.refId})`;
          const m = q.model ?? {};
          if (m.refId !== q.refId) fail(qw, `model.refId ${m.refId} differs from refId ${q.refId}`);
          if (m.datasource?.uid !== q.datasourceUid) fail(qw, `model.datasource.uid ${m.datasource?.uid} differs from datasourceUid ${q.datasourceUid}`);
          if (q.datasourceUid === '__expr__') {
            const refs =
              m.type === 'math' ? [...m.expression.matchAll(/\$\{?(\w+)\}?/g)].map((x) => x[1]) : [m.expression];
            for (const ref of refs) {
              if (ref === q.refId) fail(qw, 'an expression cannot refer to itself');
              else if (!refIds.includes(ref)) fail(qw, `expression refers to ${ref}, which is none of the refIds`);
            }
          } else if (!ds.has(q.datasourceUid)) {
            fail(qw, `datasourceUid ${q.datasourceUid} is not in dashboards/provisioning/datasources/datasources.yml`);
          } else if (m.datasource?.type !== ds.get(q.datasourceUid)) {
            fail(qw, `model.datasource.type ${m.datasource?.type} is not ${ds.get(q.datasourceUid)}, the datasource's type`);
          } else if (typeof m.rawSql === 'string' && !m.rawSql.trim()) {
            fail(qw, 'rawSql is empty');
          }
          // Grafana provisions a query's model raw: no $VAR is expanded
          // there, and an alert query has no dashboard variables either (only
          // the datasource's $__macros). Math expressions' $A are refIds.
          if (q.datasourceUid !== '__expr__')
            walk(m, (v, p) => {
              if (typeof v !== 'string') return;
              for (const x of v.matchAll(/\$\{?(\w+)/g))
                if (!x[1].startsWith('__'))
                  fail(`${qw}.model.${fmt(p)}`, `$${x[1]} stays literal: Grafana expands no variable inside a query model`);
            });
        }
        rules.push({ rule: r, where: rw, labels: { ...r.labels, alertname: r.title, grafana_folder: g.folder } });
        // Fields Grafana expands (everything but the models and annotations).
        const { data: _d, annotations: _a, ...rest } = r;
        walk(rest, (v, p) => typeof v === 'string' && envRefs(v).forEach((n) => env.set(n, `${rw}.${fmt(p)}`)));
      }
    }
    for (const [i, cp] of (data.contactPoints ?? []).entries()) {
      const cw = `${where}: contactPoints[${i}] (${cp.name})`;
      if (contactPoints.has(cp.name)) fail(cw, `contact point ${cp.name} is defined twice`);
      contactPoints.set(cp.name, cw);
      for (const rcv of cp.receivers ?? []) {
        if (receiverUids.has(rcv.uid)) fail(cw, `receiver uid ${rcv.uid} is used twice`);
        receiverUids.add(rcv.uid);
        if (rcv.type === 'slack' && !rcv.settings?.url && !(rcv.settings?.token && rcv.settings?.recipient))
          fail(cw, 'a Slack receiver needs settings.url, or settings.token and settings.recipient');
      }
      walk(cp, (v, p) => typeof v === 'string' && envRefs(v).forEach((n) => env.set(n, `${cw}.${fmt(p)}`)));
    }
    for (const [i, p] of (data.policies ?? []).entries()) {
      const pw = `${where}: policies[${i}]`;
      policies.push({ policy: p, where: pw });
      checkDurations(p, pw);
      walk(p, (v, q) => typeof v === 'string' && envRefs(v).forEach((n) => env.set(n, `${pw}.${fmt(q)}`)));
    }
    // Values the entrypoint writes in: `- <number> # env NAME`.
    for (const [n, line] of text.split('\n').entries()) {
      const m = /#\s*env\s+([A-Za-z_]\w*)\s*$/.exec(line);
      if (!m) continue;
      const v = /^\s*-\s+([0-9]+(?:\.[0-9]+)?)\s+#/.exec(line);
      if (!v) fail(`${where}:${n + 1}`, `an '# env ${m[1]}' line must be '- <number> # env ${m[1]}' (deploy/grafana/entrypoint.sh rewrites it)`);
      else rendered.set(m[1], { value: v[1], where: `${where}:${n + 1}` });
      env.set(m[1], `${where}:${n + 1}`);
    }
  }

  // Policies: one tree per organisation, every receiver provisioned (or
  // Grafana's default), and every rule routed to a provisioned contact point.
  const orgs = policies.map(({ policy }) => policy.orgId ?? 1);
  if (new Set(orgs).size !== orgs.length) fail('policies', 'more than one policy tree for an organisation');
  for (const { policy, where } of policies) {
    walk(policy, (v, p) => {
      if (p[p.length - 1] === 'receiver' && v !== 'grafana-default-email' && !contactPoints.has(v))
        fail(`${where}.${fmt(p)}`, `receiver ${v} is no provisioned contact point`);
    });
  }
  for (const { labels, where } of rules) {
    for (const { policy, where: pw } of policies) {
      const to = route(policy, labels, policy.receiver);
      if (!to.some((r) => contactPoints.has(r))) fail(where, `${pw} routes it to ${to.join(', ')}, no contact point of these files`);
    }
  }

  // Every variable: documented, passed by docker-compose.yml's grafana
  // service; rendered ones with the same default in the file and compose.
  for (const [name, where] of env) {
    if (!docs.includes(name)) fail(where, `${name} is not documented in ${rel(docsFile)}`);
    if (!(name in compose.env)) fail(where, `${name} is not passed to the grafana service in ${rel(compose.file)}`);
    const def = new RegExp(`${name}:\\s*\\$\\{${name}:-([^}]*)\\}`).exec(compose.text);
    if (!def) fail(rel(compose.file), `grafana: ${name} should be \${${name}:-<default>}`);
    if (rendered.has(name)) {
      const { value, where: w } = rendered.get(name);
      if (def && def[1] !== value) fail(w, `default ${value} differs from docker-compose.yml's ${def[1]}`);
      if (!new RegExp(`\\$\\{${name}:-${value.replace('.', '\\.')}\\}`).test(fs.readFileSync(entrypoint, 'utf8')))
        fail(w, `deploy/grafana/entrypoint.sh does not default ${name} to ${value}`);
    }
  }
  const g = compose.grafana;
  const vols = (g.volumes ?? []).map(String);
  if (!vols.some((v) => /^\.\/dashboards\/provisioning:\/etc\/grafana\/provisioning(:ro)?$/.test(v)))
    fail(rel(compose.file), 'grafana does not mount ./dashboards/provisioning at /etc/grafana/provisioning');
  if (rendered.size || contactPoints.size) {
    const ep = vols.find((v) => v.startsWith('./deploy/grafana/entrypoint.sh:'));
    const target = ep?.split(':')[1];
    if (!target || !JSON.stringify(g.entrypoint ?? '').includes(target))
      fail(rel(compose.file), 'grafana must mount deploy/grafana/entrypoint.sh and use it as its entrypoint');
    checkEntrypoint(entrypoint, rendered, files);
  }
  return { files: files.length, rules: rules.length, contactPoints: contactPoints.size };
}

// Runs the entrypoint's rendering on a copy and reads the result back.
function checkEntrypoint(entrypoint, rendered, files) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'revpulse-render-'));
  const run = (env) =>
    spawnSync('sh', [entrypoint, '--render-only'], {
      encoding: 'utf8',
      env: {
        PATH: process.env.PATH,
        GF_PATHS_PROVISIONING: path.join(repo, 'dashboards/provisioning'),
        REVPULSE_PROVISIONING_DST: path.join(tmp, 'p'),
        ...env,
      },
    });
  try {
    const sample = Object.fromEntries([...rendered.keys()].map((n, i) => [n, `0.${417 + i}`]));
    for (const slack of ['', 'https://hooks.slack.com/services/T000/B000/XXXX']) {
      const r = run({ ...sample, REVPULSE_ALERT_SLACK_URL: slack });
      if (r.status !== 0) {
        fail(rel(entrypoint), `--render-only failed: ${r.stderr.trim()}`);
        return;
      }
      for (const { file, text } of files) {
        const out = path.join(tmp, 'p/alerting', path.basename(file));
        const hasSlack = /type:\s*slack/.test(text);
        if (!fs.existsSync(out)) {
          if (!(hasSlack && !slack)) fail(rel(entrypoint), `left out ${path.basename(file)}`);
          continue;
        }
        if (hasSlack && !slack) fail(rel(entrypoint), `kept ${path.basename(file)} although REVPULSE_ALERT_SLACK_URL is empty`);
        const got = fs.readFileSync(out, 'utf8');
        for (const [n, v] of Object.entries(sample)) {
          if (text.includes(`# env ${n}`) && !new RegExp(`- ${v.replace('.', '\\.')} +# env ${n}`).test(got))
            fail(rel(entrypoint), `did not write ${n}=${v} into ${path.basename(file)}`);
        }
        try {
          YAML.parse(got);
        } catch (e) {
          fail(rel(entrypoint), `rendered ${path.basename(file)} is no YAML: ${e.message}`);
        }
      }
    }
    for (const n of rendered.keys()) {
      const bad = run({ [n]: 'high' });
      if (bad.status === 0) fail(rel(entrypoint), `accepted ${n}=high, which is no number`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function semantic() {
  const ds = datasources();
  checkDashboards(ds);
  const counts = checkAlerting(ds);
  if (errors.length) {
    for (const e of errors) console.error(e);
    process.exit(1);
  }
  const n = (k, word) => `${k} ${word}${k === 1 ? '' : 's'}`;
  console.log(
    `alerting: ${n(counts.files, 'file')}, ${n(counts.rules, 'rule')}, ${n(counts.contactPoints, 'contact point')} checked` +
      ' (types, refIds, datasources.yml, environment, routing, docker-compose.yml, entrypoint)',
  );
}

const steps = { generate, explain, semantic };
if (!Object.hasOwn(steps, cmd)) {
  console.error(`unknown step ${cmd}`);
  process.exit(2);
}
steps[cmd]();
